"""Packed runs (`--per-gpu K`, or `--slots K` on a CPU): several worker processes train on one
device at once, each exactly as it would alone (#15's packed-vs-alone check, on the CPU where
training is deterministic; on a GPU `benchmarks/gpu_check.py` compares within seed noise)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from fake_runs import TINY_RUN, prepare_from_env

from srat_engine.config.prepare import create_run
from srat_engine.jobs.slots import threads_per_slot
from srat_engine.jobs.supervisor import launch_detached
from srat_engine.runs.home import Home
from srat_engine.runs.rundir import RunDir
from srat_engine.training.trainer import execute


def tiny(home: Home, seed: int) -> RunDir:
    overrides = (*TINY_RUN, "train.epochs=3", "method=SRAT-LDAM", f"seed={seed}")
    return create_run(prepare_from_env("digits-ce", overrides), home.runs)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def final(run: RunDir) -> dict[str, Any]:
    record = [r for r in run.metrics() if r.get("event") == "final"][-1]
    return {k: v for k, v in record.items() if k != "time"}


def test_threads_per_slot_shares_the_cores() -> None:
    assert [threads_per_slot(16, k) for k in (1, 2, 3, 4, 16, 32)] == [16, 8, 5, 4, 1, 1]


def test_packed_runs_train_at_once_and_each_as_it_would_alone(
    srat_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Alone with the threads a packed run gets (a CPU slot's share of the cores: the float
    rounding of a reduction depends on how many threads split it), bit for bit."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    home = Home(srat_home)
    share = threads_per_slot(len(os.sched_getaffinity(0)), 2)
    alone = [tiny(home, seed) for seed in (0, 1)]
    threads = torch.get_num_threads()
    try:
        for run in alone:
            execute(run, threads=share)
    finally:
        torch.set_num_threads(threads)
    packed = [tiny(home, seed) for seed in (0, 1)]
    for run in packed:
        launch_detached(run, ["cpu"], 2, home=home)  # two slots on one device
    wait_for(lambda: all(r.state().get("status") == "finished" for r in packed), 180, "both")
    # the second took the other slot: the first still held cpu-0 (slots go first free first)
    assert {run.state().get("slot") for run in packed} == {"cpu-0", "cpu-1"}
    for run, reference in zip(packed, alone, strict=True):
        assert f"{share} CPU thread(s): one of 2 CPU slots" in run.log_path.read_text()
        assert final(run) == final(reference)
