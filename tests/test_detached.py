"""Detached runs as real processes: hangups, kill -9, slot hand-over, kill + resume, and a
home given explicitly (never read from $SRAT_HOME)."""

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
from fake_runs import TINY_RUN, prepare_from_env

from srat_engine.config.prepare import create_run
from srat_engine.jobs.slots import hold_slot, slots_for
from srat_engine.jobs.supervisor import kill_run, launch_detached, remove_run, resume_run
from srat_engine.runs.home import Home
from srat_engine.runs.index import reindex
from srat_engine.runs.rundir import RunDir
from srat_engine.runs.sync import refreshed_records, set_tag
from srat_engine.training.trainer import execute

TINY = TINY_RUN


def tiny(home: Home, epochs: int, method: str = "CE") -> RunDir:
    prepared = prepare_from_env("digits-ce", (*TINY, f"train.epochs={epochs}", f"method={method}"))
    return create_run(prepared, home.runs)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll until `condition` holds; return the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if condition():
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def status_of(run: RunDir, home: Home) -> str:
    records = refreshed_records(home.index, home.runs)
    return {r["id"]: r["status"] for r in records}.get(run.id, "missing")


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
    home = Home(srat_home)
    run = RunDir.open(home.runs, run_id)
    wait_for(lambda: status_of(run, home) == "finished", 120, "the detached run to finish")
    assert epochs_done(run) == 3
    assert run.exit_record()["status"] == "finished"


def test_kill9_shows_dead_within_5s_and_frees_the_slot(srat_home: Path) -> None:
    home = Home(srat_home)
    first, second = tiny(home, epochs=200), tiny(home, epochs=1)
    launch_detached(first, ["cpu"], 1, home=home)
    wait_for(lambda: first.state().get("status") == "running", 60, "the first run to start")
    launch_detached(second, ["cpu"], 1, home=home)
    wait_for(lambda: second.state().get("pid") is not None, 30, "the second worker to queue")
    assert status_of(second, home) == "queued"

    os.kill(first.state()["pid"], signal.SIGKILL)
    seconds_to_dead = wait_for(lambda: status_of(first, home) == "dead", 5, "`dead` status")
    assert first.exit_record() is None  # died without an exit record: that is what dead means
    seconds_to_slot = wait_for(
        lambda: second.state().get("status") in ("running", "finished"), 30, "slot hand-over"
    )
    wait_for(lambda: status_of(second, home) == "finished", 60, "the second run to finish")
    print(f"dead after {seconds_to_dead:.2f}s, slot taken after {seconds_to_slot:.2f}s")


def test_kill_then_resume_equals_an_uninterrupted_run(srat_home: Path) -> None:
    home = Home(srat_home)
    reference = tiny(home, epochs=5, method="SRAT-LDAM")
    execute(reference)

    run = tiny(home, epochs=5, method="SRAT-LDAM")
    launch_detached(run, ["cpu"], 1, home=home)
    wait_for(lambda: epochs_done(run) >= 2, 90, "two epochs")
    assert kill_run(run, home=home) == "killed"
    assert run.exit_record()["status"] == "killed"
    assert status_of(run, home) == "killed"

    resume_run(run, ["cpu"], 1, home=home)
    wait_for(lambda: status_of(run, home) == "finished", 120, "the resumed run to finish")
    assert final_metrics(run) == final_metrics(reference)
    assert any(r.get("event") == "resume" for r in run.metrics())


def test_killing_a_queued_run_records_killed(srat_home: Path) -> None:
    home = Home(srat_home)
    blocker, queued = tiny(home, epochs=200), tiny(home, epochs=1)
    launch_detached(blocker, ["cpu"], 1, home=home)
    wait_for(lambda: blocker.state().get("status") == "running", 60, "the blocker to start")
    launch_detached(queued, ["cpu"], 1, home=home)
    wait_for(lambda: queued.state().get("pid") is not None, 30, "the queued worker")
    assert kill_run(queued, home=home) == "killed"
    assert queued.exit_record()["status"] == "killed"
    assert epochs_done(queued) == 0
    kill_run(blocker, home=home)
    assert status_of(blocker, home) == "killed"


@pytest.mark.parametrize("field", ["git_commit", "host"])
def test_runs_record_provenance(srat_home: Path, field: str) -> None:
    run = tiny(Home(srat_home), epochs=1)
    provenance = run.config()["provenance"]
    assert field in provenance
    if field == "git_commit" and provenance["git_commit"] is not None:
        assert len(provenance["git_commit"]) == 40
        assert isinstance(provenance["git_dirty"], bool)


def test_the_home_passed_in_is_the_only_one_touched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Launch, queue, kill, resume, tag, reindex and remove in home `a` while $SRAT_HOME names
    `b` (the worker inherits that environment too): nothing may appear under `b`."""
    home, elsewhere = Home(tmp_path / "a"), tmp_path / "b"
    monkeypatch.setenv("SRAT_HOME", str(elsewhere))
    monkeypatch.setenv("SRAT_DATA", str(tmp_path / "data"))  # the dataset default, not a home
    run = tiny(home, epochs=1)
    with hold_slot("0-test", slots_for(["cpu"], 1), root=home.slots, poll_seconds=0.05):
        launch_detached(run, ["cpu"], 1, home=home)
        ticket = home.slots / "queue" / run.id
        wait_for(ticket.exists, 60, "the worker to queue in home a's slots")
        assert status_of(run, home) == "queued"
        assert kill_run(run, home=home) == "killed"
    assert "while queued" in run.exit_record()["error"]

    resume_run(run, ["cpu"], 1, home=home)
    wait_for(lambda: status_of(run, home) == "finished", 120, "the resumed run to finish")
    assert set_tag(run, "explicit", index=home.index).tags == ["explicit"]
    assert reindex(home.runs, home.index) == 1
    assert home.index.get(run.id)["tags"] == ["explicit"]
    destination = remove_run(run, home=home)
    assert destination == home.trash / run.id and home.index.get(run.id) is None
    assert not elsewhere.exists()


def test_a_worker_that_fails_before_training_records_failed(tmp_path: Path) -> None:
    """A device that is gone by the time the worker starts: `failed` with the reason (exit
    code 1), where the run used to stay `queued` until it read as `dead`."""
    import torch

    from srat_engine.jobs import worker

    if torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    home = Home(tmp_path)
    run = tiny(home, epochs=1)
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        argv = [str(run.path), "--home", str(home.root), "--devices", "cuda:7"]
        assert worker.main(argv) == 1
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    record = run.exit_record()
    assert record is not None and set(record) == {"status", "error", "time"}
    assert record["status"] == "failed" and "CUDA" in record["error"]
    assert run.state()["status"] == "failed"
    assert home.index.get(run.id)["status"] == "failed"
