"""What a stacked Slurm job does with its runs (`jobs.slurm_job.run_stack_job`), in this
process, training replaced: which runs it trains, which it requeues. The real jobs on the test
cluster are tests/test_slurm_backend.py's."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_runs import make_fake_run

import srat_engine.training.stacked_trainer as stacked_trainer
from srat_engine.errors import STOP_SIGNALS, RunPreempted
from srat_engine.jobs import slurm_job
from srat_engine.runs.rundir import RunDir


@pytest.fixture(autouse=True)
def _signals_back() -> Iterator[None]:
    """run_stack_job installs a job's signal handlers: pytest's own come back after."""
    signals = (slurm_job.CHECKPOINT_SIGNAL, *STOP_SIGNALS, signal.SIGHUP)
    previous = {sig: signal.getsignal(sig) for sig in signals}
    yield
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def launched(root: Path, *ids: str) -> list[tuple[RunDir, str]]:
    """Queued runs, each with the launch record a stacked submission writes."""
    runs = []
    for run_id in ids:
        run = make_fake_run(root, run_id, epochs_done=0, status="queued")
        launch_id = f"launch-{run_id}"
        run.write_launch_record({"backend": "slurm", "launch_id": launch_id, "device": "cpu",
                                 "stack": list(ids)})  # fmt: skip
        runs.append((run, launch_id))
    return runs


def fake_scontrol(bin_dir: Path, monkeypatch: pytest.MonkeyPatch, log: Path) -> None:
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    scontrol.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path('/usr/bin')}:{Path('/bin')}")


def test_a_preempted_stack_requeues_its_unfinished_runs_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One run of three was launched again since (skipped), one fails in the stack, then
    Slurm's warning: the job requeues once, and only the run still training goes back to
    `queued`."""
    (a, la), (b, lb), (c, lc) = launched(tmp_path / "runs", "a", "b", "c")
    a.write_launch_record({**a.launch_record(), "launch_id": "a-later-resume"})
    trained: list[list[str]] = []

    def execute_stacked(runs: list[RunDir], **options: Any) -> None:
        trained.append([run.id for run in runs])
        assert options["checkpoint_request"] is not None and options["resume"] is False
        runs[0].record_end("failed", error="training loss became nan/inf")
        raise RunPreempted(3, 1)

    monkeypatch.setattr(stacked_trainer, "execute_stacked", execute_stacked)
    calls = tmp_path / "scontrol.log"
    fake_scontrol(tmp_path / "bin", monkeypatch, calls)
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    dirs = [str(run.path) for run in (a, b, c)]
    assert slurm_job.run_stack_job(dirs, str(tmp_path), [la, lb, lc]) == "requeued"
    assert trained == [["b", "c"]]
    assert calls.read_text().split() == ["requeue", "77"]
    assert b.exit_record()["status"] == "failed" and b.state().get("requeues") is None
    assert c.exit_record() is None
    assert (c.state()["status"], c.state()["requeues"]) == ("queued", 1)
    assert "requeued (requeue 1)" in c.log_path.read_text()
    assert "did not train: the run has been launched again since" in a.log_path.read_text()
    assert a.state()["status"] == "queued" and a.state().get("requeues") is None


def test_a_stack_whose_runs_all_left_trains_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (a, la), (b, lb) = launched(tmp_path / "runs", "a", "b")
    b.write_state(status="killed")  # killed while its job waited
    a.write_launch_record({**a.launch_record(), "launch_id": "a-later-resume"})
    monkeypatch.setattr(stacked_trainer, "execute_stacked", None)  # never reached
    result = slurm_job.run_stack_job([str(a.path), str(b.path)], str(tmp_path), [la, lb])
    assert result == (
        "skipped: a: the run has been launched again since (a later resume); b: the run is killed"
    )
