"""Is a run's process still alive? pid + process start time + host, never a pid alone.

Pids are reused: a pid that exists may belong to an unrelated process started later, so a
process counts as the run's only if its start time matches the one the run recorded.
"""

from __future__ import annotations

import socket
from typing import Any

import psutil

from srat_engine.fsutil import WriteFailed
from srat_engine.runs.rundir import RunDir

ACTIVE = ("queued", "running")
# How a run ends; any other status (created, unknown, ...) may still change without the index
# hearing of it (a foreground run is indexed as created before it starts), so listings re-read it.
ENDED = ("finished", "failed", "killed", "dead")
# psutil reports start times with clock-tick resolution; allow a little slack
_START_TOLERANCE_S = 0.05


def process_alive(pid: int | None, pid_start: float | None) -> bool:
    if not pid or pid_start is None:
        return False
    try:
        process = psutil.Process(pid)
        started = process.create_time()
        # a killed worker whose parent (e.g. a long-lived TUI) has not reaped it yet
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return abs(started - pid_start) < _START_TOLERANCE_S


def _process_record(run: RunDir, state: dict[str, Any]) -> tuple[int | None, float | None]:
    """The worker's own pid record, else the launcher's (a worker that died before writing)."""
    if state.get("pid") and state.get("pid_start") is not None:
        return state["pid"], state["pid_start"]
    launch = run.launch_record()
    return launch.get("pid"), launch.get("pid_start")


def _still_running(run: RunDir, state: dict[str, Any]) -> bool:
    """Whether an active run's recorded process is alive, or on another host (unknowable)."""
    host = state.get("host") or run.launch_record().get("host")
    if host and host != socket.gethostname():
        return True
    return process_alive(*_process_record(run, state))


def reconcile(run: RunDir) -> str:
    """The run's true status; a queued/running run whose process is gone becomes `dead` (or
    the status its exit record gives, if it ended but died before updating state.json).

    Runs on another host cannot be checked from here and keep their recorded status. A run that
    looks dead is decided again under the run's lock, so a process that has just restarted it
    (a resume) is never marked dead on an older reading.
    """
    state = run.state()
    status = state.get("status", "unknown")
    if status not in ACTIVE or _still_running(run, state):
        return status  # the common case: no lock taken, nothing written
    decided: dict[str, Any] = {}

    def change(current: dict[str, Any]) -> dict[str, Any] | None:
        status = current.get("status", "unknown")
        decided.update(status=status, pid=_process_record(run, current)[0], marked=False)
        if status not in ACTIVE or _still_running(run, current):
            return None
        exit_record = run.exit_record()
        ended = exit_record.get("status", "failed") if exit_record is not None else "dead"
        decided.update(status=ended, marked=exit_record is None)
        return {"status": ended}

    try:
        run.update_state(change)
        if decided["marked"]:
            run.log(f"process {decided['pid']} is gone without an exit record: marked dead")
    except WriteFailed:
        # a full or read-only disk: the status is still true for this reading, and a later
        # reading records it
        if not decided:
            change(state)
    return str(decided["status"])
