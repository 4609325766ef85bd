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

from srat_engine import __version__


def _literal_version(path: Path) -> str | None:
    """The string assigned to ``__version__`` in the Python file `path`, or None."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return None
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        named = any(isinstance(t, ast.Name) and t.id == "__version__" for t in targets)
        if named and isinstance(value, ast.Constant) and isinstance(value.value, str):
            return value.value
    return None


def package_version(name: str) -> str | None:
    """The version top-level package `name` says it has, ``__version__``, without importing
    it: the module's own when it is imported already, else the literal in the package's
    ``version.py`` (torch and torchvision write one, build included: ``2.13.0+cu130``), else
    the installed distribution's (importlib.metadata, which drops that build: ``2.13.0``),
    else "unknown". None when `name` is not installed."""
    if "." in name:
        raise ValueError(f"a top-level package name, got {name!r}")  # find_spec would import
    module = sys.modules.get(name)
    if module is not None:
        return str(getattr(module, "__version__", "unknown"))
    spec = importlib.util.find_spec(name)
    if spec is None:
        return None
    for folder in spec.submodule_search_locations or ():
        version = _literal_version(Path(folder) / "version.py")
        if version is not None:
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
    for name in if_loaded:
        if name in sys.modules:
            recorded[name] = str(getattr(sys.modules[name], "__version__", "unknown"))
    for name in if_installed:
        version = package_version(name)
        if version is not None:
            recorded[name] = version
    return recorded
