"""Which code produced a run or a result: srat's, Python's and the packages' version strings,
read without importing the packages (validating a config must not load torch)."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from srat_engine import __version__

_ABSENT = object()


def _literal(path: Path, name: str) -> Any:
    """The constant assigned to `name` at the top of the Python file `path` (a string, a
    number, None), or `_ABSENT` where the file or a constant assignment is missing."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return _ABSENT
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        named = any(isinstance(t, ast.Name) and t.id == name for t in targets)
        if named and isinstance(value, ast.Constant):
            return value.value
    return _ABSENT


def _installed_folders(package: str) -> list[Path] | None:
    """The folders of top-level `package` if it is installed (found without importing it)."""
    if "." in package:
        raise ValueError(f"a top-level package name, got {package!r}")  # find_spec would import
    spec = importlib.util.find_spec(package)
    if spec is None:
        return None
    return [Path(folder) for folder in spec.submodule_search_locations or ()]


def version_file_constant(package: str, name: str) -> tuple[bool, Any]:
    """(found, value) of the constant `name` in installed `package`'s ``version.py``, read
    without importing it: torch writes ``__version__ = '2.13.0+cu130'`` and ``cuda = '13.0'``
    there (``cuda = None`` in a CPU-only build). (False, None) where there is none."""
    for folder in _installed_folders(package) or ():
        value = _literal(folder / "version.py", name)
        if value is not _ABSENT:
            return True, value
    return False, None


def package_version(name: str) -> str | None:
    """The version top-level package `name` says it has, ``__version__``, without importing
    it: the module's own when it is imported already, else the literal in the package's
    ``version.py`` (torch and torchvision write one, build included: ``2.13.0+cu130``), else
    the installed distribution's (importlib.metadata, which drops that build: ``2.13.0``),
    else "unknown". None when `name` is not installed."""
    module = sys.modules.get(name)
    if module is not None and "." not in name:
        return str(getattr(module, "__version__", "unknown"))
    if _installed_folders(name) is None:
        return None
    found, version = version_file_constant(name, "__version__")
    if found and isinstance(version, str):
        return version
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def versions(*, if_loaded: Sequence[str] = (), if_installed: Sequence[str] = ()) -> dict[str, str]:
    """The srat, Python and torch versions, then each package of `if_loaded` this process has
    already imported and each of `if_installed` that is installed (`package_version`): what a
    run or a result records to say which code produced it."""
    recorded = {
        "srat": __version__,
        "python": platform.python_version(),
        "torch": package_version("torch") or "not installed",
    }
    for name in (*(n for n in if_loaded if n in sys.modules), *if_installed):
        version = package_version(name)
        if version is not None:
            recorded[name] = version
    return recorded
