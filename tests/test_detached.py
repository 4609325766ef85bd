"""Detached runs as real processes: hangups, kill -9, slot hand-over, kill + resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from srat_engine.config.prepare import create_run, prepare
from srat_engine.jobs.supervisor import kill_run, launch_detached, resume_run
from srat_engine.paths import runs_dir
from srat_engine.runs.rundir import RunDir
from srat_engine.runs.sync import refreshed_records
from srat_engine.training.trainer import execute

TINY = (
    "data.n_max=40",
    "attack.steps=2",
    "eval.steps=2",
    "eval.robust_per_class=5",
    "eval.batch_size=500",
    "device=cpu",
)


def tiny(epochs: int, method: str = "CE") -> RunDir:
    prepared = prepare(
        preset="digits-ce", overrides=(*TINY, f"train.epochs={epochs}", f"method={method}")
    )
    return create_run(prepared, root=runs_dir())


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll until `condition` holds; return the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if condition():
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def status_of(run: RunDir) -> str:
    return {r["id"]: r["status"] for r in refreshed_records()}.get(run.id, "missing")


def epochs_done(run: RunDir) -> int:
    return max((r["epoch"] for r in run.metrics() if r.get("event") == "epoch"), default=0)


def final_metrics(run: RunDir) -> dict[str, Any]:
    final = [r for r in run.metrics() if r.get("event") == "final"][-1]
    return {k: v for k, v in final.items() if k != "time"}


def test_detached_run_survives_sighup_to_its_launching_session(srat_home: Path) -> None:
    launcher_code = (
        "import subprocess, sys, time\n"
        "out = subprocess.run([sys.executable, '-m', 'srat_tui.cli', 'run', '-p', 'digits-ce',"
        f" {', '.join(repr(a) for s in TINY for a in ('--set', s))},"
        " '--set', 'train.epochs=3', '--detach', '--json'],"
        " capture_output=True, text=True, check=True)\n"
        "print(out.stdout, flush=True)\n"
        "time.sleep(120)\n"
    )
    # the launcher plays the SSH session: its own session and process group
    launcher = subprocess.Popen(
        [sys.executable, "-c", launcher_code],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "SRAT_HOME": str(srat_home)},
    )
    assert launcher.stdout is not None
    run_id = json.loads(launcher.stdout.readline())[0]["run_id"]
    os.killpg(launcher.pid, signal.SIGHUP)  # the terminal goes away
    assert launcher.wait(timeout=10) == -signal.SIGHUP
    run = RunDir.open(runs_dir(), run_id)
    wait_for(lambda: status_of(run) == "finished", 120, "the detached run to finish")
    assert epochs_done(run) == 3
    assert run.exit_record()["status"] == "finished"


def test_kill9_shows_dead_within_5s_and_frees_the_slot(srat_home: Path) -> None:
    first, second = tiny(epochs=200), tiny(epochs=1)
    launch_detached(first, ["cpu"], 1)
    wait_for(lambda: first.state().get("status") == "running", 60, "the first run to start")
    launch_detached(second, ["cpu"], 1)
    wait_for(lambda: second.state().get("pid") is not None, 30, "the second worker to queue")
    assert status_of(second) == "queued"

    os.kill(first.state()["pid"], signal.SIGKILL)
    seconds_to_dead = wait_for(lambda: status_of(first) == "dead", 5, "`dead` status")
    assert first.exit_record() is None  # died without an exit record: that is what dead means
    seconds_to_slot = wait_for(
        lambda: second.state().get("status") in ("running", "finished"), 30, "slot hand-over"
    )
    wait_for(lambda: status_of(second) == "finished", 60, "the second run to finish")
    print(f"dead after {seconds_to_dead:.2f}s, slot taken after {seconds_to_slot:.2f}s")


def test_kill_then_resume_equals_an_uninterrupted_run(srat_home: Path) -> None:
    reference = tiny(epochs=5, method="SRAT-LDAM")
    execute(reference)

    run = tiny(epochs=5, method="SRAT-LDAM")
    launch_detached(run, ["cpu"], 1)
    wait_for(lambda: epochs_done(run) >= 2, 90, "two epochs")
    assert kill_run(run) == "killed"
    assert run.exit_record()["status"] == "killed"
    assert status_of(run) == "killed"

    resume_run(run, ["cpu"], 1)
    wait_for(lambda: status_of(run) == "finished", 120, "the resumed run to finish")
    assert final_metrics(run) == final_metrics(reference)
    assert any(r.get("event") == "resume" for r in run.metrics())


def test_killing_a_queued_run_records_killed(srat_home: Path) -> None:
    blocker, queued = tiny(epochs=200), tiny(epochs=1)
    launch_detached(blocker, ["cpu"], 1)
    wait_for(lambda: blocker.state().get("status") == "running", 60, "the blocker to start")
    launch_detached(queued, ["cpu"], 1)
    wait_for(lambda: queued.state().get("pid") is not None, 30, "the queued worker")
    assert kill_run(queued) == "killed"
    assert queued.exit_record()["status"] == "killed"
    assert epochs_done(queued) == 0
    kill_run(blocker)
    assert status_of(blocker) == "killed"


@pytest.mark.parametrize("field", ["git_commit", "host"])
def test_runs_record_provenance(srat_home: Path, field: str) -> None:
    run = tiny(epochs=1)
    provenance = run.config()["provenance"]
    assert field in provenance
    if field == "git_commit" and provenance["git_commit"] is not None:
        assert len(provenance["git_commit"]) == 40
        assert isinstance(provenance["git_dirty"], bool)
