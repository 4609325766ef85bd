"""`srat run` checks that the device is here before it creates anything, in real processes:
`--device cuda:7` on a machine without that GPU is one line, exit 2, and no run directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.skipif(
    torch.cuda.is_available() and torch.cuda.device_count() > 7, reason="this machine has cuda:7"
)


@pytest.mark.parametrize(
    "extra",
    [
        (),
        ("--detach",),
        ("--detach", "--gpus", "7"),
        ("--set", 'device="cuda:7"'),
        ("--detach", "--set", 'device="cuda:7"'),  # was queued on the CPU slot instead
    ],
    ids=["foreground", "detach", "detach-gpus", "config-device", "detach-config-device"],
)
def test_a_missing_gpu_fails_before_the_run_directory_exists(
    srat_home: Path, extra: tuple[str, ...]
) -> None:
    device = () if "--gpus" in extra or "--set" in extra else ("--device", "cuda:7")
    proc = subprocess.run(
        [sys.executable, "-m", "srat_tui.cli", "run", "-p", "digits-ce", *device, *extra],
        capture_output=True,
        text=True,
        env={**os.environ, "SRAT_HOME": str(srat_home)},
        timeout=120,
        check=False,
    )
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert proc.returncode == 2, proc
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "cuda" in lines[0].lower() or "gpu" in lines[0].lower()
    runs = srat_home / "runs"
    assert not runs.exists() or not any(runs.iterdir()), list(runs.iterdir())


@pytest.mark.parametrize("where", [("--device", "cuda:7"), ("--set", 'device="cuda:7"')])
def test_a_sweep_on_a_missing_gpu_creates_nothing(srat_home: Path, where: tuple[str, ...]) -> None:
    # a sweep queues on the device its config names, as `srat run --detach` does
    proc = subprocess.run(
        [sys.executable, "-m", "srat_tui.cli", "sweep", "lambda", "-p", "digits-srat-ldam",
         "--lambdas", "0,1", *where],
        capture_output=True,
        text=True,
        env={**os.environ, "SRAT_HOME": str(srat_home)},
        timeout=120,
        check=False,
    )  # fmt: skip
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert proc.returncode == 2, proc
    assert len(lines) == 1 and "cuda:7" in lines[0], lines
    runs = srat_home / "runs"
    assert not runs.exists() or not any(runs.iterdir()), list(runs.iterdir())
