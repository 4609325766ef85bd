"""Dependencies go one way: checked in the import graph and in real processes.

`lint-imports` checks the contracts in pyproject.toml over every import statement (function-level
ones included). The subprocess tests check what actually gets loaded: the commands that only
read runs or presets, and checking a config (`srat run --dry-run`, as the new-run form and a
launch do), must start without torch (~0.3-1.7 s and ~300 MB saved per call), and importing
the whole engine must load no interface library.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fake_runs import make_fake_run
from fresh_process import python_json

from srat_engine.runs.home import Home

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "torchvision", "torchattacks", "sklearn", "scipy", "matplotlib")
INTERFACES = ("textual", "textual_plotext", "typer", "rich", "plotext", "srat_tui")

# Runs a `srat` command in this process, then reports which of the given top-level packages
# were imported (written to a file: stdout belongs to the command).
DRIVER = """
import json, runpy, sys
report, wanted, argv = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3:]
sys.argv = ["srat", *argv]
code = 0
try:
    runpy.run_module("srat_tui.cli", run_name="__main__")
except SystemExit as stop:
    code = stop.code or 0
loaded = sorted({name.split(".")[0] for name in sys.modules} & set(wanted))
with open(report, "w") as handle:
    json.dump({"code": code, "loaded": loaded}, handle)
"""


def loaded_by(command: list[str], wanted: tuple[str, ...], tmp_path: Path) -> list[str]:
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, str(report), json.dumps(wanted), *command],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    result = json.loads(report.read_text())
    assert result["code"] == 0, proc.stderr
    return result["loaded"]


@pytest.fixture
def two_runs(srat_home: Path) -> tuple[str, str]:
    root, index = srat_home / "runs", Home(srat_home).index  # indexed: export has rows
    make_fake_run(root, "hygiene-a", status="finished", epochs_done=4, epochs=4, index=index)
    make_fake_run(root, "hygiene-b", status="finished", epochs_done=4, epochs=4, index=index)
    return "hygiene-a", "hygiene-b"


@pytest.mark.parametrize(
    "command",
    [
        ["runs", "ls"],
        ["runs", "show", "hygiene-a"],
        ["runs", "compare", "hygiene-a", "hygiene-b"],
        ["runs", "export", "--format", "csv"],
        ["presets", "ls"],
        ["run", "--preset", "demo", "--dry-run"],
        ["run", "--preset", "demo", "--set", "attack.class_budget=true", "--dry-run"],
    ],
    ids=[
        "runs-ls",
        "runs-show",
        "runs-compare",
        "runs-export",
        "presets-ls",
        "dry-run",
        "dry-run-budgets",
    ],
)
def test_read_only_commands_never_import_torch(
    command: list[str], two_runs: tuple[str, str], tmp_path: Path
) -> None:
    assert loaded_by(command, HEAVY, tmp_path) == []


def test_the_driver_sees_torch_where_a_command_needs_it(tmp_path: Path) -> None:
    # the check above can fail: a command that trains (here Section 3's simulation) loads torch
    command = ["theory", "--d", "1", "--rhos", "1", "--S", "1", "--n-train", "200", "--no-plot"]
    assert "torch" in loaded_by(command, HEAVY, tmp_path)


def test_engine_imports_no_interface_library(tmp_path: Path) -> None:
    """Every module of srat_engine imported in one fresh process: no Textual, Typer, Rich."""
    modules = sorted(
        ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        for path in (REPO / "srat_engine").rglob("*.py")
        if path.name != "__main__.py"
    )
    script = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps(sorted({{n.split('.')[0] for n in sys.modules}} & {set(INTERFACES)!r})))"
    )
    loaded = python_json(script, timeout=300)
    assert len(modules) > 40  # the walk found the engine
    assert loaded == []


def test_import_contracts_hold() -> None:
    """The layering contracts of pyproject.toml (import-linter), as `make lint` checks them."""
    lint_imports = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    proc = subprocess.run(
        [lint_imports, "--no-cache"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout
