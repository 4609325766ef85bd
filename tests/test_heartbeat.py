"""Heartbeats: a real detached run beats while queued and while running and stops at its end; a
run on another host is judged by its heartbeat (`lost` once silent, resumable); a beat that
cannot be written never disturbs the run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from fake_runs import TINY_RUN, make_fake_run, prepare_from_env
from typer.testing import CliRunner

from srat_engine.config.prepare import create_run
from srat_engine.fsutil import WriteFailed, atomic_write_json
from srat_engine.jobs.slots import hold_slot, slots_for
from srat_engine.jobs.supervisor import kill_run, launch_detached
from srat_engine.runs.heartbeat import Heartbeat, interval_from_env
from srat_engine.runs.home import Home
from srat_engine.runs.liveness import HEARTBEAT_S, heartbeat_stale, reconcile
from srat_engine.runs.rundir import RunDir
from srat_tui.cli.app import app

BEAT_S = 0.2
TINY = TINY_RUN
OTHER_HOST = "some-other-host.invalid"
NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)


def tiny(home: Home, epochs: int) -> RunDir:
    return create_run(prepare_from_env("digits-ce", (*TINY, f"train.epochs={epochs}")), home.runs)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.02)


def beats_while(run: RunDir, status: str, count: int = 3) -> list[str]:
    """`count` distinct heartbeats read from state.json while the run's status is `status`."""
    seen: list[str] = []

    def another() -> bool:
        state = run.state()
        assert state.get("status") == status, state
        if state.get("heartbeat") and state["heartbeat"] not in seen:
            seen.append(state["heartbeat"])
        return len(seen) >= count

    wait_for(another, f"{count} heartbeats while {status}", timeout=10 * count * BEAT_S)
    return seen


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


# --- a real detached run ----------------------------------------------------------------------


def test_a_detached_run_beats_while_queued_and_running_and_stops_at_its_end(
    srat_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SRAT_HEARTBEAT_S", str(BEAT_S))  # the worker reads it at its edge
    home = Home(srat_home)
    run = tiny(home, epochs=200)
    with hold_slot("test", slots_for(["cpu"], 1), root=home.slots):  # the run must wait
        launch_detached(run, ["cpu"], 1, home=home)
        queued = beats_while(run, "queued")
        assert run.state()["heartbeat_s"] == BEAT_S
    wait_for(lambda: run.state().get("status") == "running", "the run to start")
    running = beats_while(run, "running")
    assert queued == sorted(queued) and running == sorted(running) and queued[-1] < running[0]
    assert reconcile(run) == "running"

    kill_run(run, home=home)
    ended = run.state()
    assert ended["status"] == "killed" and run.exit_record() is not None
    time.sleep(4 * BEAT_S)  # a beat that still came would land here
    assert run.state() == ended
    assert_no_beat_after_exit(run)


def assert_no_beat_after_exit(run: RunDir) -> None:
    """The last heartbeat is no later than exit.json (its mtime: ms, not now_iso's seconds)."""
    exit_written = datetime.fromtimestamp((run.path / "exit.json").stat().st_mtime, timezone.utc)
    last_beat = datetime.fromisoformat(run.state()["heartbeat"])
    assert last_beat <= exit_written + timedelta(milliseconds=50)  # the kernel's coarse clock


def test_a_foreground_run_beats_while_it_trains_and_stops_before_its_end(
    srat_home: Path,
) -> None:
    from srat_engine.training.trainer import execute

    run = tiny(Home(srat_home), epochs=3)
    seen: list[dict[str, Any]] = []
    execute(run, on_event=lambda _event: seen.append(run.state()), heartbeat_s=BEAT_S)
    assert any(s.get("heartbeat") and s["status"] == "running" for s in seen)
    assert not [t for t in threading.enumerate() if t.name == f"heartbeat-{run.id}"]
    assert run.state()["status"] == "finished"
    assert_no_beat_after_exit(run)


# --- a run on another host, judged by its heartbeat -------------------------------------------


def remote_run(home: Home, heartbeat: str | None, **fields: Any) -> RunDir:
    """A running run whose state.json names another host (its pid cannot be checked here)."""
    run = make_fake_run(home.runs, f"remote-{len(list(home.runs.glob('*')))}", index=home.index)
    state = {**run.state(), "pid": 4242, "pid_start": 1.0, "host": OTHER_HOST, **fields}
    if heartbeat is not None:
        state["heartbeat"] = heartbeat
    atomic_write_json(run.path / "state.json", state)
    return run


def cli_json(*args: str) -> Any:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)


@pytest.mark.parametrize(
    ("age_s", "expected"),
    [(HEARTBEAT_S, "running"), (10 * HEARTBEAT_S, "lost"), (3600.0, "lost")],
)
def test_another_hosts_run_is_lost_once_its_heartbeat_is_stale(
    srat_home: Path, age_s: float, expected: str
) -> None:
    home = Home(srat_home)
    beat = datetime.now(timezone.utc) - timedelta(seconds=age_s)
    run = remote_run(home, iso(beat), heartbeat_s=HEARTBEAT_S)
    listed = {r["id"]: r["status"] for r in cli_json("runs", "ls", "--json")}
    assert listed[run.id] == expected
    assert cli_json("runs", "show", run.id, "--json")["summary"]["status"] == expected
    assert run.state()["status"] == expected
    assert home.index.get(run.id)["status"] == expected
    if expected == "lost":
        assert run.state()["lost_from"] == "running"
        assert "marked lost" in run.log_path.read_text()


def test_a_run_without_a_heartbeat_keeps_its_status(srat_home: Path) -> None:
    """A run of an older srat, or one its scheduler has not started: nothing to judge by."""
    home = Home(srat_home)
    run = remote_run(home, None)
    assert reconcile(run) == "running"
    assert run.state()["status"] == "running"


@pytest.mark.parametrize(
    ("age_s", "interval", "stale"),
    [
        (89.0, None, False),  # 3 x 30 s
        (91.0, None, True),
        (0.5, 0.2, False),  # 3 x its own recorded 0.2 s
        (0.7, 0.2, True),
        (91.0, "bad", True),  # an unusable interval: the default's
        (-5.0, None, False),  # a clock ahead of ours
    ],
)
def test_heartbeat_stale_is_three_missed_beats(age_s: float, interval: Any, stale: bool) -> None:
    state: dict[str, Any] = {"heartbeat": iso(NOW - timedelta(seconds=age_s))}
    if interval is not None:
        state["heartbeat_s"] = interval
    assert heartbeat_stale(state, NOW) is stale


@pytest.mark.parametrize("beat", [None, "yesterday", "2026-01-01T11:00:00"])
def test_no_readable_heartbeat_is_no_verdict(beat: str | None) -> None:
    assert heartbeat_stale({} if beat is None else {"heartbeat": beat}, NOW) is None


def test_a_lost_run_resumes_here(srat_home: Path) -> None:
    home = Home(srat_home)
    run = tiny(home, epochs=1)
    state = {"status": "running", "pid": 4242, "pid_start": 1.0, "host": OTHER_HOST,
             "heartbeat": iso(datetime.now(timezone.utc) - timedelta(hours=1))}  # fmt: skip
    atomic_write_json(run.path / "state.json", {**run.state(), **state})
    assert reconcile(run) == "lost"
    result = CliRunner().invoke(app, ["runs", "resume", run.id, "--device", "cpu"])
    assert result.exit_code == 0, (result.output, result.exception)
    wait_for(lambda: run.state().get("status") == "finished", "the resumed run to finish")
    assert run.state()["host"] == socket.gethostname()


# --- the heartbeat thread itself --------------------------------------------------------------


def own_run(home: Home, made: str, **fields: Any) -> RunDir:
    """A fake run made `made` (a running one's state.json names this test process), then
    `fields` set in its state.json."""
    run = make_fake_run(home.runs, f"own-{made}", status=made)
    atomic_write_json(run.path / "state.json", {**run.state(), **fields})
    return run


def test_a_beat_restores_a_run_called_lost_and_leaves_others_alone(srat_home: Path) -> None:
    home = Home(srat_home)
    lost = own_run(home, "running", status="lost", lost_from="running")
    Heartbeat(lost, BEAT_S).beat()
    assert lost.state()["status"] == "running" and "heartbeat" in lost.state()

    ended = own_run(home, "finished", pid=os.getpid(), host=socket.gethostname())
    replaced = own_run(home, "queued", pid=os.getpid() + 1)  # resumed by another process
    for run in (ended, replaced):
        before = run.state()
        Heartbeat(run, BEAT_S).beat()
        assert run.state() == before


def test_a_failing_beat_is_logged_once_and_retried(
    srat_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = Home(srat_home)
    run = own_run(home, "running")
    real_update = RunDir.update_state
    failures = {"left": 5}

    def full_disk(self: RunDir, change: Any) -> dict[str, Any]:
        if failures["left"]:
            failures["left"] -= 1
            raise WriteFailed(self.path / "state.json", OSError(28, "No space left on device"))
        return real_update(self, change)

    monkeypatch.setattr(RunDir, "update_state", full_disk)
    with Heartbeat(run, 0.02):
        wait_for(lambda: "heartbeat" in run.state(), "a beat after the disk has room again")
    log = run.log_path.read_text()
    assert log.count("heartbeat not written") == 1 and "No space left on device" in log


@pytest.mark.parametrize(
    ("value", "interval"), [(None, HEARTBEAT_S), ("0.5", 0.5), ("0", HEARTBEAT_S), ("x", 30.0)]
)
def test_interval_from_env(value: str | None, interval: float) -> None:
    assert interval_from_env({} if value is None else {"SRAT_HEARTBEAT_S": value}) == interval


def test_the_heartbeat_does_not_import_torch() -> None:
    code = "import sys, srat_engine.runs.heartbeat; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_lost_has_its_colour() -> None:
    from rich.style import Style

    from srat_tui.render.format import status_style

    assert status_style("lost") == "dark_orange"
    Style.parse(status_style("lost"))  # a colour Rich knows
