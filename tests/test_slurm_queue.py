"""What srat reads of Slurm without a Slurm: squeue's lines (`runs.slurm_queue`), a job's ids
and whether it may train (`jobs.slurm_job`), a queued Slurm run's liveness (`runs.liveness`)
and its runs-table cell. A real Slurm: tests/test_slurm_cluster.py and its kind."""

from __future__ import annotations

import os
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from fake_runs import make_fake_run

import srat_engine.runs.liveness as liveness
import srat_engine.runs.slurm_queue as slurm_queue
from srat_engine.fsutil import atomic_write_json
from srat_engine.jobs.slurm_job import _skip_reason, slurm_ids
from srat_engine.runs.home import Home
from srat_engine.runs.liveness import reconcile, waiting_in_slurm
from srat_engine.runs.rundir import RunDir
from srat_engine.runs.slurm_queue import QueuedJob, parse_squeue, queue_snapshot, with_queue_states
from srat_tui.render.format import runs_cell

NOW = datetime(2026, 11, 21, 12, 0, 0, tzinfo=timezone.utc)


@pytest.fixture
def no_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PATH is one empty folder: no squeue, sbatch or scontrol can be found."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


# --- squeue -----------------------------------------------------------------------------------


def test_parse_squeue() -> None:
    text = (
        "1234_5|PENDING|Priority|\n"
        "\n"
        "  1235|RUNNING|None|node3  \n"
        "1236|PENDING\n"  # short: not squeue's format
        "|RUNNING|None|node1\n"  # no job id
        "1237|RUNNING|None|node1|extra\n"
        "   \n"
        "1238|COMPLETING|None|node[1-2]\n"
    )
    assert parse_squeue(text) == {
        "1234_5": QueuedJob("1234_5", "PENDING", "Priority", ""),
        "1235": QueuedJob("1235", "RUNNING", "None", "node3"),
        "1238": QueuedJob("1238", "COMPLETING", "None", "node[1-2]"),
    }
    assert parse_squeue("") == {}


@pytest.mark.parametrize(
    ("job", "waiting", "described"),
    [
        (QueuedJob("7", "PENDING", "Priority", ""), True, "PENDING (Priority)"),
        (QueuedJob("7", "PENDING", "None", ""), True, "PENDING"),
        (QueuedJob("7", "PENDING", "", ""), True, "PENDING"),
        (QueuedJob("7", "REQUEUED", "BeginTime", ""), True, "REQUEUED (BeginTime)"),
        (QueuedJob("7", "CONFIGURING", "None", "node3"), True, "CONFIGURING"),
        (QueuedJob("7", "RUNNING", "None", "node3"), False, "RUNNING on node3"),
        (QueuedJob("7", "COMPLETING", "None", ""), False, "COMPLETING"),
    ],
)
def test_queued_job_describe_and_waiting(job: QueuedJob, waiting: bool, described: str) -> None:
    assert (job.waiting, job.describe()) == (waiting, described)


@pytest.mark.usefixtures("no_slurm")
def test_without_squeue_the_queue_is_unknown() -> None:
    assert queue_snapshot(["7", "8_1"]) is None
    assert queue_snapshot([]) == {}  # nothing asked: nothing to run squeue for
    records = [
        {"id": "a", "status": "queued", "backend": "slurm", "slurm_job_id": "7"},
        {"id": "b", "status": "running", "backend": "local"},
    ]
    unchanged = [dict(record) for record in records]
    assert with_queue_states(records) == unchanged


def test_with_queue_states_describes_active_slurm_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[list[str]] = []

    def snapshot(job_ids: list[str]) -> dict[str, QueuedJob]:
        asked.append(list(job_ids))
        return {"7": QueuedJob("7", "PENDING", "Priority", "")}

    monkeypatch.setattr(slurm_queue, "queue_snapshot", snapshot)
    records = [
        {"id": "a", "status": "queued", "backend": "slurm", "slurm_job_id": "7"},
        {"id": "b", "status": "running", "backend": "slurm", "slurm_job_id": "8_1"},
        {"id": "c", "status": "finished", "backend": "slurm", "slurm_job_id": "9"},
        {"id": "d", "status": "running", "backend": "local"},
    ]
    described = with_queue_states(records)
    assert asked == [["7", "8_1"]]  # one squeue call, for the active Slurm runs only
    assert [record.get("slurm_state") for record in described] == [
        "PENDING (Priority)", "not in queue", None, None,
    ]  # fmt: skip
    assert described[2:] == records[2:]


# --- jobs.slurm_job ---------------------------------------------------------------------------


def test_slurm_ids_of_a_plain_job() -> None:
    environ = {"SLURM_JOB_ID": "1234", "SLURMD_NODENAME": "node3"}
    assert slurm_ids(environ) == {
        "slurm_job_id": "1234",
        "slurm_array_job_id": None,
        "slurm_array_index": None,
        "node": "node3",
        "restarts": 0,
    }


def test_slurm_ids_of_an_array_task() -> None:
    # an array task's own SLURM_JOB_ID is another number: squeue and scancel name it 1234_5
    environ = {"SLURM_JOB_ID": "1240", "SLURM_ARRAY_JOB_ID": "1234", "SLURM_ARRAY_TASK_ID": "5",
               "SLURMD_NODENAME": "gpu12", "SLURM_RESTART_COUNT": "2"}  # fmt: skip
    assert slurm_ids(environ) == {
        "slurm_job_id": "1234_5",
        "slurm_array_job_id": "1234",
        "slurm_array_index": 5,
        "node": "gpu12",
        "restarts": 2,
    }


def test_slurm_ids_without_a_node_name_use_this_host() -> None:
    ids = slurm_ids({"SLURM_JOB_ID": "9", "SLURM_RESTART_COUNT": ""})
    assert (ids["node"], ids["restarts"]) == (socket.gethostname(), 0)


LAUNCH = "launch-1"


def slurm_run(home: Home, status: str, *, launch: dict[str, Any], **state: Any) -> RunDir:
    """A fake run whose launch.json is `launch` and whose state.json has `status` and `state`."""
    run = make_fake_run(home.runs, f"run-{status}", status=status)
    run.write_launch_record({"backend": "slurm", **launch})
    atomic_write_json(run.path / "state.json", {**run.state(), "status": status, **state})
    return run


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        ("queued", None),
        ("created", None),
        ("dead", None),  # its job may be a requeue after the node died
        ("lost", None),
        ("running", None),  # Slurm requeued the job after a node failure
        ("finished", "the run is finished"),
        ("failed", "the run is failed"),
        ("killed", "the run is killed"),  # killed before its job started
    ],
)
def test_skip_reason_by_status(srat_home: Path, status: str, reason: str | None) -> None:
    run = slurm_run(Home(srat_home), status, launch={"launch_id": LAUNCH})
    assert _skip_reason(run, LAUNCH) == reason


def test_a_job_of_an_earlier_launch_is_skipped(srat_home: Path) -> None:
    run = slurm_run(Home(srat_home), "queued", launch={"launch_id": "launch-2"})
    assert _skip_reason(run, LAUNCH) == "the run has been launched again since (a later resume)"


@pytest.mark.parametrize("status", ["killed", "failed"])
def test_a_resume_job_may_start_before_its_run_reads_queued(srat_home: Path, status: str) -> None:
    home = Home(srat_home)
    # the launcher has written launch.json but not yet marked the run queued for it
    run = slurm_run(home, status, launch={"launch_id": LAUNCH, "resume": True},
                    launch_id="launch-0")  # fmt: skip
    assert _skip_reason(run, LAUNCH) is None
    # this launch's own job ended the run (it wrote its launch id): a requeue of it stays out
    atomic_write_json(run.path / "state.json", {**run.state(), "launch_id": LAUNCH})
    assert _skip_reason(run, LAUNCH) == f"the run is {status}"
    # and a first launch's job never trains a killed run, whoever killed it
    run.write_launch_record({"backend": "slurm", "launch_id": LAUNCH, "resume": False})
    atomic_write_json(run.path / "state.json", {**run.state(), "launch_id": "launch-0"})
    assert _skip_reason(run, LAUNCH) == f"the run is {status}"


# --- runs.liveness ----------------------------------------------------------------------------


WAITING: dict[str, Any] = {"status": "queued", "backend": "slurm", "slurm_job_id": "7",
                           "pid": None, "pid_start": None, "host": None}  # fmt: skip


@pytest.mark.parametrize(
    ("state", "waiting"),
    [
        (WAITING, True),
        ({**WAITING, "status": "running"}, True),  # requeued: running no more until it restarts
        ({**WAITING, "pid": 4321}, False),  # its job has started the run
        ({**WAITING, "status": "dead"}, False),
        ({**WAITING, "backend": "local"}, False),
        ({"status": "queued"}, False),  # a run from before backends: local
    ],
)
def test_waiting_in_slurm(state: dict[str, Any], waiting: bool) -> None:
    assert waiting_in_slurm(state) is waiting


def queued_in_slurm(home: Home) -> RunDir:
    run = make_fake_run(home.runs, "in-slurm", status="queued")
    atomic_write_json(run.path / "state.json", {**run.state(), **WAITING})
    return run


@pytest.mark.usefixtures("no_slurm")
def test_a_queued_slurm_run_stays_queued_while_the_queue_lists_it_or_cannot_be_asked(
    srat_home: Path,
) -> None:
    run = queued_in_slurm(Home(srat_home))
    before = run.state()
    assert reconcile(run, None) == "queued"  # a listing could not ask squeue
    assert reconcile(run, {"7": QueuedJob("7", "PENDING", "Priority", "")}) == "queued"
    # the listing's queue lacks job 7, but that look may predate the submission: it is looked
    # at again under the run's lock, and here (no squeue on PATH) that look cannot be taken, so
    # the recorded status stands
    assert reconcile(run, {}) == "queued"
    assert reconcile(run) == "queued"  # asked here: no squeue either
    assert run.state() == before


def test_a_slurm_job_that_left_the_queue_before_its_run_started_makes_it_dead(
    srat_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = queued_in_slurm(Home(srat_home))
    looks: list[list[str]] = []

    def empty_queue(job_ids: list[str]) -> dict[str, QueuedJob]:
        looks.append(list(job_ids))
        return {}

    monkeypatch.setattr(liveness, "queue_snapshot", empty_queue)
    assert reconcile(run, {}) == "dead"
    assert looks == [["7"]]  # the fresh look under the lock, for this run's job only
    assert run.state()["status"] == "dead"
    last_line = run.log_path.read_text().splitlines()[-1]
    assert last_line.endswith("Slurm job 7 left the queue before the run started: dead")
    assert reconcile(run, {}) == "dead"  # ended: nothing asked or written again
    assert len(looks) == 1


# --- the runs table ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "cell"),
    [
        ({}, "local"),
        ({"backend": None}, "local"),
        ({"backend": "local", "slurm_state": "PENDING (Priority)"}, "local"),
        ({"backend": "slurm"}, "slurm"),
        ({"backend": "slurm", "slurm_state": "PENDING (Priority)"}, "slurm PENDING (Priority)"),
        ({"backend": "slurm", "slurm_state": "RUNNING on node3"}, "slurm RUNNING on node3"),
        ({"backend": "slurm", "slurm_state": "not in queue"}, "slurm not in queue"),
        ({"backend": "slurm", "slurm_state": "RUNNING on node\x1b[2J"},
         "slurm RUNNING on node\\x1b[2J"),  # a node name is shown as text
    ],
)  # fmt: skip
def test_backend_cell(record: dict[str, Any], cell: str) -> None:
    assert runs_cell({"id": "a", "status": "queued", **record}, "backend", NOW) == cell


# --- the TUI's cached queue -------------------------------------------------------------------


def test_queue_cache_asks_squeue_once_per_max_age(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One squeue call serves every listing within max_age_s (squeue lists all of the user's
    jobs, so any job ids are answered from it); older, or invalidated, it asks again."""
    bin_dir, queue = tmp_path / "bin", tmp_path / "queue.txt"
    bin_dir.mkdir()
    calls = tmp_path / "calls.txt"
    script = bin_dir / "squeue"
    script.write_text(f"#!/bin/sh\necho x >> '{calls}'\ncat '{queue}'\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    queue.write_text("7|PENDING|Priority|\n8|RUNNING|None|node1\n")
    now = [100.0]
    cache = slurm_queue.QueueCache(10.0, clock=lambda: now[0])

    def squeue_calls() -> int:
        return len(calls.read_text().splitlines()) if calls.exists() else 0

    assert set(cache.snapshot(["7"]) or {}) == {"7"}
    queue.write_text("7|RUNNING|None|node2\n")  # the job starts
    now[0] = 109.9
    assert cache.snapshot(["7", "8"]) == {  # still the first answer, for other ids too
        "7": QueuedJob("7", "PENDING", "Priority", ""),
        "8": QueuedJob("8", "RUNNING", "None", "node1"),
    }
    assert cache.snapshot([]) == {} and squeue_calls() == cache.calls == 1
    now[0] = 110.0
    assert cache.snapshot(["7", "8"]) == {"7": QueuedJob("7", "RUNNING", "None", "node2")}
    cache.invalidate()
    queue.write_text("")
    assert cache.snapshot(["7"]) == {} and squeue_calls() == cache.calls == 3
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))  # squeue gone: the queue is unknown
    cache.invalidate()
    assert cache.snapshot(["7"]) is None


def test_runs_show_asks_the_queue_once(
    tmp_path: Path,
    srat_home: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`srat runs show` of a run waiting in Slurm uses the listing the command group has just
    reconciled: one squeue call, not one for the listing and one for the run."""
    from cli_harness import make_invoker

    from srat_engine.runs.sync import record_in_index

    home = Home(srat_home)
    waiting = make_fake_run(home.runs, "run-waiting", status="queued", index=home.index)
    state = {**waiting.state(), "backend": "slurm", "slurm_job_id": "4242", "pid": None,
             "pid_start": None, "host": None}  # fmt: skip
    atomic_write_json(waiting.path / "state.json", state)
    record_in_index(waiting, home.index)
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls.txt"
    bin_dir.mkdir()
    script = bin_dir / "squeue"
    script.write_text(f"#!/bin/sh\necho x >> '{calls}'\necho '4242|PENDING|Priority|'\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    shown = make_invoker(capsys, monkeypatch)("runs", "show", "run-waiting")
    assert shown.code == 0, shown.err
    assert "queued" in shown.out and "PENDING (Priority)" in shown.out
    assert len(calls.read_text().splitlines()) == 1
