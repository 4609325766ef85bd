"""What runs and results record as the code that produced them, read without importing it."""

from __future__ import annotations

import platform
import sys
import types
from pathlib import Path

import pytest
from fresh_process import python_json

import srat_engine
from srat_engine.versions import package_version, version_file_constant, versions


def test_torchs_version_with_its_build_is_read_without_importing_torch() -> None:
    script = (
        "import json, sys\n"
        "from srat_engine.versions import versions\n"
        "before = versions()['torch']\n"
        "loaded = 'torch' in sys.modules\n"
        "import torch\n"
        "print(json.dumps([before, loaded, torch.__version__]))\n"
    )
    before, loaded, imported = python_json(script)
    assert not loaded
    assert before == imported  # the build too, e.g. 2.13.0+cu130, which the metadata drops


def _package(root: Path, name: str, version_py: str | None) -> None:
    (root / name).mkdir()
    (root / name / "__init__.py").write_text("raise ImportError('must not be imported')\n")
    if version_py is not None:
        (root / name / "version.py").write_text(version_py)


def test_package_version_reads_version_py_else_says_unknown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _package(tmp_path, "srat_pkg_a", "from typing import Optional\n__version__ = '1.2.3+cpu'\n")
    _package(tmp_path, "srat_pkg_b", "__version__: str = '4.5'\n")
    _package(tmp_path, "srat_pkg_c", "__version__ = compute()\n")  # not a literal
    _package(tmp_path, "srat_pkg_d", None)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert package_version("srat_pkg_a") == "1.2.3+cpu"
    assert package_version("srat_pkg_b") == "4.5"
    assert package_version("srat_pkg_c") == "unknown"  # no distribution metadata either
    assert package_version("srat_pkg_d") == "unknown"
    assert package_version("srat_absent_pkg") is None
    assert not {"srat_pkg_a", "srat_pkg_b"} & set(sys.modules)
    with pytest.raises(ValueError):
        package_version("torch.cuda")


@pytest.fixture
def fake_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    """An imported package `srat_fake_pkg`, version 1.2.3, that is installed nowhere."""
    fake = types.ModuleType("srat_fake_pkg")
    fake.__version__ = "1.2.3"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "srat_fake_pkg", fake)


@pytest.mark.usefixtures("fake_loaded")
def test_package_version_prefers_the_loaded_module_then_the_metadata() -> None:
    assert package_version("srat_fake_pkg") == "1.2.3"
    import importlib.metadata

    assert package_version("tinydb") == importlib.metadata.version("tinydb")  # no version.py


@pytest.mark.usefixtures("fake_loaded")
def test_versions_record_srat_python_torch_and_the_optional_packages_present() -> None:
    import torch

    base = {"srat": srat_engine.__version__, "python": platform.python_version()}
    base["torch"] = torch.__version__  # with its build tag, e.g. 2.13.0+cu130
    assert versions() == base
    absent = "srat_absent_pkg"
    assert versions(if_loaded=("srat_fake_pkg", absent)) == {**base, "srat_fake_pkg": "1.2.3"}
    assert versions(if_installed=(absent, "srat_fake_pkg")) == {**base, "srat_fake_pkg": "1.2.3"}


def test_version_file_constants_are_read_without_importing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _package(tmp_path, "srat_pkg_cpu", "__version__ = '2.0+cpu'\ncuda: Optional[str] = None\n")
    _package(tmp_path, "srat_pkg_gpu", "__version__ = '2.0+cu130'\ncuda = '13.0'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert version_file_constant("srat_pkg_cpu", "cuda") == (True, None)  # a CPU-only build
    assert version_file_constant("srat_pkg_gpu", "cuda") == (True, "13.0")
    assert version_file_constant("srat_pkg_gpu", "hip") == (False, None)
    assert version_file_constant("srat_absent_pkg", "cuda") == (False, None)
    assert not {"srat_pkg_cpu", "srat_pkg_gpu"} & set(sys.modules)
