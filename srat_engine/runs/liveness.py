"""Is a run's process still alive? pid + process start time + host, never a pid alone.

Pids are reused: a pid that exists may belong to an unrelated process started later, so a
process counts as the run's only if its start time matches the one the run recorded.
"""

from __future__ import annotations

import socket
from typing import Any

import psutil

from srat_engine.runs.rundir import RunDir

ACTIVE = ("queued", "running")
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


def reconcile(run: RunDir) -> str:
    """The run's true status; a queued/running run whose process is gone becomes `dead`.

    Runs on another host cannot be checked from here and keep their recorded status.
    """
    state = run.state()
    status = state.get("status", "unknown")
    if status not in ACTIVE:
        return status
    host = state.get("host") or run.launch_record().get("host")
    if host and host != socket.gethostname():
        return status
    pid, pid_start = _process_record(run, state)
    if process_alive(pid, pid_start):
        return status
    exit_record = run.exit_record()
    if exit_record is not None:  # it ended but died before updating state.json
        status = exit_record.get("status", "failed")
        run.write_state(status=status)
        return status
    run.write_state(status="dead")
    run.log(f"process {pid} is gone without an exit record: marked dead")
    return "dead"
