"""A corrupt or malicious checkpoint under `srat eval` and `srat tsne`: one line saying the file
is corrupt or not a srat checkpoint, a non-zero exit, no progress line first, no code from the
file run, and nothing that suggests loading it unsafely. In-process for every command and file,
and in real processes for what only they show (anything torch itself prints or warns).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_harness import Srat, make_invoker
from fake_runs import make_fake_run

from srat_engine.errors import SratError
from srat_engine.runs.home import Home
from srat_engine.training.checkpoint import load_checkpoint

# torch's own advice for a file weights_only=True refuses: never to be passed on
REFUSED = "checkpoint {path} is corrupt or unsafe (not a srat checkpoint); it was not loaded"
UNSAFE_ADVICE = ("weights_only=False", "will likely succeed", "weights_only` set to `False")


class _WritesMarker:
    """Unpickling this calls open(marker, "w"): code from the file, creating the marker."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def _malicious(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": _WritesMarker(marker), "epoch": 3}, path)


def test_the_malicious_checkpoint_runs_code_when_loaded_unsafely(tmp_path: Path) -> None:
    """The fixture is what it claims: an unsafe load writes the marker."""
    path, marker = tmp_path / "evil.pt", tmp_path / "marker"
    _malicious(path, marker)
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("kind", ["garbage", "truncated", "malicious", "foreign"])
def test_load_checkpoint_refuses_in_one_line(tmp_path: Path, kind: str) -> None:
    path, marker = tmp_path / "last.pt", tmp_path / "marker"
    if kind == "garbage":
        path.write_bytes(b"not a checkpoint\x00\x01")
    elif kind == "truncated":
        torch.save({"model": {"w": torch.ones(64)}}, path)
        path.write_bytes(path.read_bytes()[:200])
    elif kind == "malicious":
        _malicious(path, marker)
    else:
        torch.save({"weights": [1, 2, 3]}, path)  # loads safely, but is no srat checkpoint
    with pytest.raises(SratError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert (
        message
        == f"checkpoint {path} is corrupt or unsafe (not a srat checkpoint); it was not loaded"
    )
    assert not marker.exists()


@pytest.fixture
def srat(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Srat:
    return make_invoker(capsys, monkeypatch)


@pytest.fixture
def home(srat_home: Path) -> Home:
    """Two finished runs: `garbage` (its checkpoint random bytes), `evil` (a pickle whose
    loading would create <home>/MARKER)."""
    home = Home(srat_home)
    garbage = make_fake_run(home.runs, "garbage", status="finished", index=home.index)
    garbage.checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
    garbage.checkpoint_path.write_bytes(os.urandom(4096))
    evil = make_fake_run(home.runs, "evil", status="finished", index=home.index)
    _malicious(evil.checkpoint_path, srat_home / "MARKER")
    return home


def assert_refused(home: Home, run_id: str, code: int, output: str) -> None:
    lines = [line for line in output.splitlines() if line.strip()]
    path = home.runs / run_id / "checkpoints" / "last.pt"
    assert code != 0
    assert lines == [f"error: {REFUSED.format(path=path)}"], output
    assert not any(advice in output for advice in UNSAFE_ADVICE)
    assert not (home.root / "MARKER").exists()
    assert not (home.runs / run_id / "eval.json").exists()


COMMANDS = [("eval",), ("eval", "--attack", "cw", "--n", "1"), ("tsne",)]


@pytest.mark.parametrize("run_id", ["garbage", "evil"])
@pytest.mark.parametrize("command", COMMANDS)
def test_commands_refuse_the_checkpoint_in_one_line(
    home: Home, run_id: str, command: tuple[str, ...], srat: Srat
) -> None:
    result = srat(command[0], run_id, *command[1:], "--device", "cpu")
    assert_refused(home, run_id, result.code, result.out + result.err)


@pytest.mark.parametrize("command", [COMMANDS[0], COMMANDS[2]])
def test_a_real_process_prints_only_that_line(home: Home, command: tuple[str, ...]) -> None:
    """What the in-process check cannot see: anything torch itself prints or warns."""
    proc = subprocess.run(
        [sys.executable, "-m", "srat_tui.cli", command[0], "evil", *command[1:], "--device", "cpu"],
        capture_output=True,
        text=True,
        env={**os.environ, "SRAT_HOME": str(home.root)},
        timeout=120,
        check=False,
    )
    assert_refused(home, "evil", proc.returncode, proc.stdout + proc.stderr)
