"""What Slurm's queue says of a run's job: a hint for runs that wait in it, never the truth.

A run submitted to Slurm is `queued` with no process until its job starts; while it waits only
the scheduler knows of it, so `squeue` (one call for every job a listing asks about) tells a
reader whether it still waits, and why (Priority, Resources, BeginTime ...). Once the job runs,
the run's own files (its process and heartbeat in state.json) are the truth, as for any run.
Clusters without accounting have no `sacct`, and a job's record leaves `squeue` once it ends,
so nothing here relies on either. Torch-free, like everything that reads runs.
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

# squeue answers in milliseconds; a controller that does not answer must not hang a listing
SQUEUE_TIMEOUT_S = 10.0
# Run statuses under which a run may have a job in the queue (liveness.ACTIVE, which imports
# this module).
ACTIVE = ("queued", "running")
# The job states squeue shows while a job has not ended (and so may still start or run).
WAITING = frozenset({"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "RESIZING"})


@dataclass(frozen=True)
class QueuedJob:
    """One squeue line: a job (or one array task, "1234_5"), its state, Slurm's reason for it
    (Priority, Resources, None, ...) and its nodes ("" while pending)."""

    job_id: str
    state: str
    reason: str
    nodes: str

    @property
    def waiting(self) -> bool:
        return self.state in WAITING

    def describe(self) -> str:
        """ "PENDING (Priority)", "RUNNING on node3": what a listing shows beside the status."""
        if self.waiting:
            return (
                f"{self.state} ({self.reason})" if self.reason not in ("", "None") else self.state
            )
        return f"{self.state} on {self.nodes}" if self.nodes else self.state


def parse_squeue(text: str) -> dict[str, QueuedJob]:
    """`squeue --noheader --array --format=%i|%T|%r|%N` output, by job id."""
    jobs = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 4 and parts[0]:
            jobs[parts[0]] = QueuedJob(*parts)
    return jobs


def queue_snapshot(job_ids: Iterable[str]) -> dict[str, QueuedJob] | None:
    """The queue's entries for `job_ids` (absent: not in the queue any more, or never), from one
    `squeue` call over this user's jobs; None when there is no squeue here or it fails (the
    caller then keeps what the run's files say). Other users' jobs are never asked about."""
    return QueueCache(max_age_s=0.0).snapshot(job_ids)  # one squeue call, kept nowhere


def _all_jobs() -> dict[str, QueuedJob] | None:
    """Every job of this user in the queue, from one squeue call; None without squeue or when
    it fails."""
    squeue = shutil.which("squeue")
    if squeue is None:
        return None
    command = [squeue, "--noheader", "--array", "--format=%i|%T|%r|%N", f"--user={_user()}"]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=SQUEUE_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return parse_squeue(done.stdout)


# How a listing asks the queue about job ids: `queue_snapshot`, or a `QueueCache`'s snapshot.
QueueSource = Callable[[Iterable[str]], "dict[str, QueuedJob] | None"]


class QueueCache:
    """`queue_snapshot` that asks squeue at most once every `max_age_s` seconds: a screen that
    lists runs every second would otherwise call squeue every second (each call costs
    slurmctld an RPC). squeue lists all of this user's jobs at once, so one answer serves any
    job ids asked for until it is `max_age_s` old. A stale answer is a hint for up to that
    long: a job that started shows its run's own state at once (its process and heartbeat),
    one that left the queue unstarted reads dead at most `max_age_s` later."""

    def __init__(
        self, max_age_s: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_age_s, self.clock = max_age_s, clock
        self._taken: float | None = None
        self._jobs: dict[str, QueuedJob] | None = None
        self.calls = 0  # squeue calls made (what the cache saves is visible)

    def snapshot(self, job_ids: Iterable[str]) -> dict[str, QueuedJob] | None:
        wanted = {str(job_id) for job_id in job_ids if job_id}
        if not wanted:
            return {}
        now = self.clock()
        if self._taken is None or now - self._taken >= self.max_age_s:
            self._jobs = _all_jobs()
            self._taken = now
            self.calls += 1
        if self._jobs is None:
            return None
        return {job_id: job for job_id, job in self._jobs.items() if job_id in wanted}

    def invalidate(self) -> None:
        """The next snapshot asks squeue (after an action that changes the queue: kill,
        resume, a submission)."""
        self._taken = None


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a uid without a passwd entry (some containers)
        return str(os.getuid())


def with_queue_states(
    records: list[dict[str, Any]], queue: dict[str, QueuedJob] | bool | None = False
) -> list[dict[str, Any]]:
    """The records, each active Slurm run's with `slurm_state` added: what the queue says of its
    job ("PENDING (Priority)", "RUNNING on node3"; "not in queue"). `queue`: a snapshot already
    taken (`queue_snapshot`; `sync.current_records` takes one per listing), None where the
    queue cannot be asked, False to ask it here with one squeue call. Where the queue cannot be
    asked, or for any other run, the records are returned as they are."""
    active = [r for r in records if r.get("backend") == "slurm" and r.get("status") in ACTIVE]
    if queue is False:
        jobs = [str(r["slurm_job_id"]) for r in active if r.get("slurm_job_id")]
        queue = queue_snapshot(jobs) if jobs else None
    if not isinstance(queue, dict):
        return records
    described = {}
    for record in active:
        job = queue.get(str(record.get("slurm_job_id")))
        described[record.get("id")] = job.describe() if job is not None else "not in queue"
    return [
        {**r, "slurm_state": described[r.get("id")]} if r.get("id") in described else r
        for r in records
    ]
