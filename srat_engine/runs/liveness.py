"""Is a run's process still alive? pid + process start time + host, never a pid alone; for a run
on another host, its heartbeat.

Pids are reused: a pid that exists may belong to an unrelated process started later, so a
process counts as the run's only if its start time matches the one the run recorded, as
seconds since boot (`process_start`): psutil's start time in seconds since the epoch adds the
kernel's boot time, which Linux recomputes from the wall clock on every read, so an NTP
adjustment moves it (by a second at a rounding edge, more over days of slewing) and a live run
would read dead (psutil issues #2526, #1724). A pid on
another host cannot be checked from here, so an active run writes a heartbeat into state.json
(`runs.heartbeat`) and a reader on any other host judges it by that: silent for MISSED_BEATS
intervals, it is `lost`.
"""

from __future__ import annotations

import math
import socket
from datetime import datetime, timezone
from typing import Any

import psutil

from srat_engine.fsutil import WriteFailed
from srat_engine.runs.rundir import RunDir
from srat_engine.runs.slurm_queue import QueuedJob, queue_snapshot

# What Slurm's queue says of the jobs a reader asks about (`slurm_queue.queue_snapshot`):
# None where it cannot be asked (no squeue on this host).
QueueSnapshot = dict[str, QueuedJob] | None

ACTIVE = ("queued", "running")
# How a run ends; any other status (created, unknown, ...) may still change without the index
# hearing of it (a foreground run is indexed as created before it starts), so listings re-read it.
ENDED = ("finished", "failed", "killed", "dead")
# What `srat runs resume` continues from its last checkpoint: ended short, or lost track of
RESUMABLE = ("failed", "killed", "dead", "lost")
# An active run on another host whose heartbeat stopped: not ended (a host cut off from the shared
# filesystem may come back, and its run's next beat makes it active again), so listings re-read it.
LOST = "lost"
# How often an active run beats, and how many beats may be missed before a reader calls it lost:
# 90 s is far beyond a busy shared filesystem's stalls and small clocks' skew between hosts.
HEARTBEAT_S = 30.0
MISSED_BEATS = 3
# psutil reports start times with clock-tick resolution; allow a little slack
_START_TOLERANCE_S = 0.05


def process_start(pid: int) -> dict[str, float]:
    """What a run records of the process `pid` to know it again: ``pid_start``, its start in
    seconds since the epoch (for people), and ``pid_boot_start``, in seconds since boot, which
    no clock adjustment moves (what `process_alive` compares). NoSuchProcess if it is gone."""
    started = psutil.Process(pid).create_time()
    # the same wall clock in both reads: their difference is the start's ticks since boot
    return {"pid_start": started, "pid_boot_start": started - psutil.boot_time()}


def process_alive(
    pid: int | None, pid_start: float | None, pid_boot_start: float | None = None
) -> bool:
    """Whether `pid` is alive and is the process recorded: started `pid_boot_start` seconds
    after boot, or for a record from before srat kept that, at `pid_start`."""
    if not pid or (pid_start is None and pid_boot_start is None):
        return False
    try:
        process = psutil.Process(pid)
        started = process.create_time()
        booted = psutil.boot_time()
        # a killed worker whose parent (e.g. a long-lived TUI) has not reaped it yet
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    if pid_boot_start is not None:
        return abs(started - booted - pid_boot_start) < _START_TOLERANCE_S
    assert pid_start is not None
    return abs(started - pid_start) < _START_TOLERANCE_S


ProcessRecord = tuple[int | None, float | None, float | None]


def process_record(record: dict[str, Any]) -> ProcessRecord:
    """(pid, pid_start, pid_boot_start) of a state or launch record, for `process_alive`."""
    return record.get("pid"), record.get("pid_start"), record.get("pid_boot_start")


def _process_record(run: RunDir, state: dict[str, Any]) -> ProcessRecord:
    """The worker's own pid record, else the launcher's (a worker that died before writing)."""
    if state.get("pid") and state.get("pid_start") is not None:
        return process_record(state)
    return process_record(run.launch_record())


def heartbeat_stale(state: dict[str, Any], now: datetime | None = None) -> bool | None:
    """Whether the run's heartbeat is older than MISSED_BEATS times its interval (the one it
    recorded, `heartbeat_s`, else HEARTBEAT_S); None when it has none (a run from before
    heartbeats, or a job its scheduler has not started) or an unreadable one."""
    try:
        beat = datetime.fromisoformat(str(state["heartbeat"]))
    except (KeyError, ValueError):
        return None
    if beat.tzinfo is None:
        return None
    interval = state.get("heartbeat_s")
    valid = (
        isinstance(interval, (int, float))
        and not isinstance(interval, bool)
        and math.isfinite(interval)
        and interval > 0
    )
    age = ((now or datetime.now(timezone.utc)) - beat).total_seconds()
    return age > MISSED_BEATS * (interval if valid else HEARTBEAT_S)


def _on_another_host(run: RunDir, state: dict[str, Any]) -> bool:
    host = state.get("host") or run.launch_record().get("host")
    return bool(host) and host != socket.gethostname()


# What a local launch sets in state.json, over what an earlier launch on Slurm left there.
LOCAL_BACKEND = {"backend": "local", "slurm_job_id": None, "node": None}


def waiting_in_slurm(state: dict[str, Any]) -> bool:
    """Whether the run is in Slurm's queue with no process yet (submitted, or requeued)."""
    return (
        state.get("backend") == "slurm" and state.get("status") in ACTIVE and not state.get("pid")
    )


def _still_running(run: RunDir, state: dict[str, Any], queue: QueueSnapshot | bool) -> bool:
    """Whether an active run's recorded process is alive: on this host by its pid (a process
    stopped in a debugger beats no more but is alive), on another by its heartbeat (one never
    written is unknowable: the recorded status stands). A run waiting in Slurm's queue waits
    while the queue lists its job, or while the queue cannot be asked (`queue` None; False:
    ask it now)."""
    if waiting_in_slurm(state):
        job = state.get("slurm_job_id")
        if queue is False:
            queue = queue_snapshot([str(job)]) if job else None
        return queue is None or not job or str(job) in queue
    if _on_another_host(run, state):
        return not heartbeat_stale(state)
    return process_alive(*_process_record(run, state))


def reconcile(run: RunDir, queue: QueueSnapshot | bool = False) -> str:
    """The run's true status; a queued/running run whose process is gone becomes `dead`, one on
    another host whose heartbeat is stale `lost` (or either the status its exit record gives,
    if it ended but died before updating state.json).

    A run on another host that never wrote a heartbeat keeps its recorded status. A Slurm
    job that left the queue without starting its run makes it `dead`; `queue` is what the
    queue said (a listing asks once for all its runs), False to ask here if needed. A run that
    looks dead or lost is decided again under the run's lock, so a process that has just
    restarted it (a resume) or beaten is never marked on an older reading.
    """
    state = run.state()
    if not isinstance(state.get("status"), str):
        # state.json missing or damaged: a run that ended says how in its exit record (what
        # `srat runs show` already read, where resume said "unknown" and refused)
        exit_record = run.exit_record() or {}
        ended = exit_record.get("status")
        return ended if isinstance(ended, str) else "unknown"
    status = state["status"]
    if status not in ACTIVE or _still_running(run, state, queue):
        return status  # the common case: no lock taken, nothing written
    decided: dict[str, Any] = {}

    def change(current: dict[str, Any]) -> dict[str, Any] | None:
        status = current.get("status", "unknown")
        decided.update(status=status, pid=_process_record(run, current)[0], marked=False)
        # a fresh look at the queue, taken after this reading of the state: the listing's may
        # predate the job (a submission or resume since)
        if status not in ACTIVE or _still_running(run, current, False):
            return None
        exit_record = run.exit_record()
        if exit_record is not None:
            decided.update(status=exit_record.get("status", "failed"))
            return {"status": decided["status"]}
        if waiting_in_slurm(current):
            decided.update(status="dead", marked=True, job=current.get("slurm_job_id"))
            return {"status": "dead"}
        if _on_another_host(run, current):
            # what the run was, so its own heartbeat can restore it should it come back
            decided.update(status=LOST, marked=True, beat=current.get("heartbeat"))
            return {"status": LOST, "lost_from": status}
        decided.update(status="dead", marked=True)
        return {"status": "dead"}

    try:
        run.update_state(change)
        if decided["marked"] and decided.get("job"):
            run.log(f"Slurm job {decided['job']} left the queue before the run started: dead")
        elif decided["marked"] and decided["status"] == LOST:
            run.log(f"no heartbeat since {decided['beat']} from another host: marked lost")
        elif decided["marked"]:
            run.log(f"process {decided['pid']} is gone without an exit record: marked dead")
    except WriteFailed:
        # a full or read-only disk: the status is still true for this reading, and a later
        # reading records it
        if not decided:
            change(state)
    return str(decided["status"])
