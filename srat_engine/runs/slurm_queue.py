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
from collections.abc import Iterable
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
    wanted = {str(job_id) for job_id in job_ids if job_id}
    if not wanted:
        return {}
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
    return {job_id: job for job_id, job in parse_squeue(done.stdout).items() if job_id in wanted}


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
