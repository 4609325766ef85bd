"""`srat run` checks that the device is here before it creates anything: `--device cuda:7` on a
machine without that GPU is one line, exit 2, and no run directory. Each case runs the entry
point in-process (the same `main()`, as a shell would call it); one also in a real process, so
nothing printed outside the CLI's own output (a warning from torch) goes unseen."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_harness import Srat, make_invoker

pytestmark = pytest.mark.skipif(
    torch.cuda.is_available() and torch.cuda.device_count() > 7, reason="this machine has cuda:7"
)


@pytest.fixture
def srat(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Srat:
    return make_invoker(capsys, monkeypatch)


def assert_refused_and_nothing_created(code: int, output: str, home: Path, names: str) -> None:
    lines = [line for line in output.splitlines() if line.strip()]
    assert code == 2, output
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert names in lines[0].lower(), lines[0]
    runs = home / "runs"
    assert not runs.exists() or not any(runs.iterdir()), list(runs.iterdir())


CASES = {
    "foreground": ("--device", "cuda:7"),
    "detach": ("--device", "cuda:7", "--detach"),
    "detach-gpus": ("--detach", "--gpus", "7"),
    "config-device": ("--set", 'device="cuda:7"'),
    "detach-config-device": ("--detach", "--set", 'device="cuda:7"'),  # was queued on the CPU
}


@pytest.mark.parametrize("extra", CASES.values(), ids=CASES.keys())
def test_a_missing_gpu_fails_before_the_run_directory_exists(
    srat: Srat, srat_home: Path, extra: tuple[str, ...]
) -> None:
    result = srat("run", "-p", "digits-ce", *extra)
    names = "gpu" if "--gpus" in extra else "cuda"
    assert_refused_and_nothing_created(result.code, result.out + result.err, srat_home, names)


def test_a_missing_gpu_is_one_line_from_a_real_process(srat_home: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "srat_tui.cli", "run", "-p", "digits-ce", *CASES["detach"]],
        capture_output=True,
        text=True,
        env={**os.environ, "SRAT_HOME": str(srat_home)},
        timeout=120,
        check=False,
    )
    assert_refused_and_nothing_created(
        proc.returncode, proc.stdout + proc.stderr, srat_home, "cuda"
    )


@pytest.mark.parametrize("where", [("--device", "cuda:7"), ("--set", 'device="cuda:7"')])
def test_a_sweep_on_a_missing_gpu_creates_nothing(
    srat: Srat, srat_home: Path, where: tuple[str, ...]
) -> None:
    # a sweep queues on the device its config names, as `srat run --detach` does
    result = srat("sweep", "lambda", "-p", "digits-srat-ldam", "--lambdas", "0,1", *where)
    assert_refused_and_nothing_created(result.code, result.out + result.err, srat_home, "cuda:7")
