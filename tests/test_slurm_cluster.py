"""Slurm itself, through the one-node cluster of slurm_cluster.py: what srat's Slurm backend
relies on (sbatch, job arrays with a parallel limit, scancel, submitit) behaves as expected on
a cluster without accounting."""

from __future__ import annotations

import itertools
import logging
import os
import time
from pathlib import Path

import pytest
import submitit
from slurm_cluster import SlurmCluster, pid_alive, slurm_cluster

__all__ = ["slurm_cluster"]  # the fixture, imported for pytest


def test_sbatch_job_runs_to_completion(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    out = tmp_path / "job.out"
    job = slurm_cluster.sbatch(f"--output={out}", "--wrap", "echo hello from $SLURM_JOB_ID")
    (queued,) = slurm_cluster.squeue(job) or [None]
    # Fast jobs may already be done by the first squeue; otherwise pending or running.
    assert queued is None or queued.state in {"PENDING", "RUNNING", "COMPLETING"}
    slurm_cluster.wait_gone(job)
    assert out.read_text() == f"hello from {job}\n"
    # Without accounting, scontrol is the only record of how a job ended.
    assert slurm_cluster.job_state(job) == "COMPLETED"


def test_submitit_returns_the_function_value(
    slurm_cluster: SlurmCluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # submitit runs sbatch (and sacct) in this process's environment.
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm")
    executor.update_parameters(timeout_min=5, slurm_partition="debug", cpus_per_task=1)
    # A stdlib function: the job's interpreter cannot import this test module to unpickle one.
    job = executor.submit(os.getenv, "SLURM_JOB_ID")
    with caplog.at_level(logging.WARNING, logger="submitit"):
        assert job.result() == job.job_id  # it ran inside the Slurm job
        # No sacct: submitit never learns the state; result() works from the result pickle.
        assert job.state == "UNKNOWN"
    assert any("status may be inaccurate" in r.getMessage() for r in caplog.records)


def test_submitit_never_learns_that_a_cancelled_job_ended(
    slurm_cluster: SlurmCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm")
    executor.update_parameters(timeout_min=5, slurm_partition="debug", cpus_per_task=1)
    started = tmp_path / "started"
    # A lambda is pickled by value, so the job can load it without this test module.
    job = executor.submit(lambda: (started.touch(), time.sleep(300)))
    slurm_cluster.wait_for("the job's function to start", started.exists)
    job.cancel(check=True)
    # submitit's job ignores SIGTERM: Slurm kills it only KillWait (5 s here) later.
    assert slurm_cluster.wait_gone(job.job_id) > 3
    assert slurm_cluster.job_state(job.job_id) == "CANCELLED"
    # No result pickle and no sacct: done() stays False for ever, so job.result() would hang.
    assert not job.done(force_check=True)
    assert job.state == "UNKNOWN"


def test_array_with_limit_one_runs_tasks_one_at_a_time(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    out = tmp_path / "task_%a.out"
    stamp = "date +%s.%N"
    job = slurm_cluster.sbatch(
        "--array=0-2%1", f"--output={out}", "--wrap", f"{stamp}; sleep 1; {stamp}"
    )
    slurm_cluster.wait_gone(job, timeout=30)
    spans = []
    for task in range(3):
        start, end = (tmp_path / f"task_{task}.out").read_text().split()
        spans.append((float(start), float(end)))
    spans.sort()
    for (_, end), (next_start, _) in itertools.pairwise(spans):
        assert next_start >= end


def test_scancel_pending_and_running_jobs(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    pid_file = tmp_path / "running.pid"
    # --exclusive takes the whole node, so the second job must wait (reason Resources).
    running = slurm_cluster.sbatch(
        "--exclusive",
        f"--output={tmp_path / 'running.out'}",
        "--wrap",
        f"echo $$ > {pid_file}; exec sleep 300",
    )
    slurm_cluster.wait_for("the first job's process", lambda: pid_file.exists())
    pending = slurm_cluster.sbatch(
        "--exclusive", f"--output={tmp_path / 'p.out'}", "--wrap", "true"
    )
    (queued,) = slurm_cluster.squeue(pending)
    assert queued.state == "PENDING"
    assert queued.reason in {"Resources", "Priority"}

    slurm_cluster.scancel(pending)
    slurm_cluster.wait_gone(pending)
    assert slurm_cluster.job_state(pending) == "CANCELLED"
    assert not (tmp_path / "p.out").exists()
    assert [j.state for j in slurm_cluster.squeue(running)] == ["RUNNING"]

    pid = int(pid_file.read_text())
    assert pid_alive(pid)
    slurm_cluster.scancel(running)
    slurm_cluster.wait_gone(running)
    assert slurm_cluster.job_state(running) == "CANCELLED"
    slurm_cluster.wait_for("the job's process to end", lambda: not pid_alive(pid), timeout=10)
