"""`srat runs ls` in a terminal too narrow for every column: which ones it leaves out."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_harness import Srat, make_invoker
from fake_runs import make_fake_run
from tui_harness import pinned_context

from srat_tui.cli.runs import LS_COLUMNS, narrow_columns


@pytest.fixture
def srat(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Srat:
    return make_invoker(capsys, monkeypatch)


def test_narrow_columns_leaves_out_uniform_columns_first_and_only_as_many_as_it_must() -> None:
    cells = {
        "id": ["id", "run-a", "run-b"],  # 5
        "device": ["device", "cpu", "cuda:0"],  # 6, differs
        "backend": ["backend", "local", "local"],  # 7, the same for both
        "age": ["age", "3m", "1h"],  # 3
    }
    # all four: 5 + 6 + 7 + 3 + 3 gaps of 2 = 27
    assert narrow_columns(cells, 27) == ["id", "device", "backend", "age"]
    # one column too many: backend goes first (every run reads "local"), though device is
    # earlier in the order
    assert narrow_columns(cells, 26) == ["id", "device", "age"]
    # 5 + 6 + 3 + 2 gaps = 18; then device, then age
    assert narrow_columns(cells, 17) == ["id", "age"]
    assert narrow_columns(cells, 4) == ["id"]  # what must stay stays, even if it overflows


def test_runs_ls_fits_the_terminal_and_says_what_it_left_out(
    srat: Srat, srat_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    context = pinned_context(srat_home)
    for run_id in ("261203-090512-ab12", "261203-090513-0f3c"):
        make_fake_run(context.runs_root, run_id, status="finished", epochs_done=10,
                      index=context.index)  # fmt: skip
    piped = srat("runs", "ls")
    assert piped.code == 0, piped.err
    assert piped.out.splitlines()[0].split() == [
        "id", "status", "method", "dataset", "imb", "epoch", "std", "std:u", "rob", "rob:u",
        "aa", "device", "backend", "age",
    ]  # fmt: skip
    assert len(piped.out.splitlines()[1]) > 80

    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # Rich: stdout is a terminal
    monkeypatch.setenv("COLUMNS", "80")
    narrow = srat("runs", "ls")
    lines = narrow.out.splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    assert lines[0].split() == ["id", "status", "method", "epoch", "std", "std:u", "rob", "rob:u"]
    assert {line.split()[0] for line in lines[1:3]} == {"261203-090512-ab12", "261203-090513-0f3c"}
    assert lines[3] == "(--wide also shows dataset, imb, aa, device, backend, age)"
    wide = srat("runs", "ls", "--wide")
    assert wide.out == piped.out  # every column, as piped
    assert len(LS_COLUMNS) == len(piped.out.splitlines()[0].split())
