"""What runs inside a Slurm job: one run, or the runs of one stack (`srat run --stack`), trained
in their directories on the shared filesystem.

submitit starts `run_job(run_dir, home, launch_id)` in the job, or `run_stack_job(run_dirs,
home, launch_ids)` for a stack (and again after every requeue, with the same arguments). The
job (for a stack, for each of its runs; they train as one stacked model, `execute_stacked`):
- trains only the launch it was submitted for (launch.json's `launch_id`): a job left over
  from an earlier submission of the run (resumed since) stops at once, as does a job whose run
  was killed before it started;
- records its Slurm ids and node in state.json, beats a heartbeat there (readers on any host
  judge it by that: `runs.liveness`), and resumes from the last checkpoint when there is one;
- on Slurm's warning signal (USR2, `--signal-s` before the time limit, or on preemption)
  checkpoints at the next batch, asks Slurm to requeue it (`scontrol requeue`) and leaves the
  run `queued`; the requeued job resumes from that batch, so the run ends with the metrics an
  uninterrupted run has;
- on SIGTERM (`scancel`, `srat runs kill`) records `killed`, resumable like a local run;
- never writes the run index (`jobs.slurm`).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
from contextlib import suppress
from pathlib import Path
from types import FrameType
from typing import Any

from srat_engine.errors import (
    STOP_SIGNALS,
    RunInterrupted,
    RunPreempted,
    SratError,
    raise_interrupted,
)
from srat_engine.runs.heartbeat import interval_from_env
from srat_engine.runs.liveness import ACTIVE
from srat_engine.runs.rundir import RunDir, now_iso

# The signal Slurm sends before the time limit (`--signal=USR2@S`, as submitit writes it).
CHECKPOINT_SIGNAL = signal.SIGUSR2
# How a run may be found when its job starts: anything but an end a person or the run made.
_STARTABLE = (*ACTIVE, "created", "dead", "lost")


def slurm_ids(environ: dict[str, str] | os._Environ[str]) -> dict[str, Any]:
    """The job's Slurm ids and node, from the environment Slurm gives every job."""
    array_job = environ.get("SLURM_ARRAY_JOB_ID")
    task = environ.get("SLURM_ARRAY_TASK_ID")
    job = environ.get("SLURM_JOB_ID", "")
    return {
        "slurm_job_id": f"{array_job}_{task}" if array_job and task else job,
        "slurm_array_job_id": array_job,
        "slurm_array_index": int(task) if task and task.isdigit() else None,
        "node": environ.get("SLURMD_NODENAME") or socket.gethostname(),
        "restarts": int(environ.get("SLURM_RESTART_COUNT", "0") or 0),
    }


def run_job(run_dir: str, home: str, launch_id: str) -> str:
    """Train the run of `run_dir` in this Slurm job; returns how it left the job (finished,
    killed, requeued or skipped: why the job did not train). `home` is the run's srat home
    (unused by training: jobs never write its index; kept for the record)."""
    return run_stack_job([run_dir], home, [launch_id])


def run_stack_job(run_dirs: list[str], home: str, launch_ids: list[str]) -> str:
    """Train the runs of `run_dirs` (one configuration, seeds apart) in this Slurm job as one
    stack, each for its launch in `launch_ids`; returns how they left the job, as `run_job`.
    A run launched again since, or ended, is left out (and logs why); the others train, one
    alone as `run_job` would."""
    checkpoint_request = threading.Event()

    def request_checkpoint(_signum: int, _frame: FrameType | None) -> None:
        checkpoint_request.set()

    # submitit's own handlers would requeue (USR2) from inside a training step, or ignore a
    # cancel (TERM): ours checkpoint at the next batch, or record the kill
    signal.signal(CHECKPOINT_SIGNAL, request_checkpoint)
    for sig in STOP_SIGNALS:
        signal.signal(sig, raise_interrupted)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

    ids = slurm_ids(os.environ)
    launches: list[tuple[RunDir, str]] = []
    skipped: list[str] = []
    for run_dir, launch_id in zip(run_dirs, launch_ids, strict=True):
        run = RunDir(Path(run_dir))
        reason = _skip_reason(run, launch_id)
        if reason is None:
            launches.append((run, launch_id))
            continue
        skipped.append(reason if len(run_dirs) == 1 else f"{run.id}: {reason}")
        with suppress(SratError):
            run.log(f"Slurm job {ids['slurm_job_id']} did not train: {reason}")
    if not launches:
        return f"skipped: {'; '.join(skipped)}"
    runs = [run for run, _ in launches]
    device = str(runs[0].launch_record().get("device") or "") or None
    try:
        resume = any(run.checkpoint_path.exists() or run.metrics_path.exists() for run in runs)
        stacked = f", stacked with {len(runs) - 1} other run(s)" if len(runs) > 1 else ""
        for run, launch_id in launches:
            run.write_state(backend="slurm", launch_id=launch_id, **ids)
            run.log(f"Slurm job {ids['slurm_job_id']} started on {ids['node']}{stacked}")
        _set_threads(os.environ)
        common: dict[str, Any] = {
            "device": device,
            "resume": resume,
            "heartbeat_s": interval_from_env(os.environ),
            "checkpoint_request": checkpoint_request,
        }
        if len(runs) == 1:
            from srat_engine.training.trainer import execute

            execute(runs[0], **common)
        else:
            from srat_engine.training.stacked_trainer import execute_stacked

            execute_stacked(runs, **common)
    except RunPreempted as stop:
        # a run that failed on its own in the stack has ended: it is not requeued with it
        unfinished = [run for run in runs if run.exit_record() is None]
        return _requeue(unfinished, ids["slurm_job_id"], stop)
    except RunInterrupted as stop:
        for run in runs:
            if run.exit_record() is None:  # cancelled before training started
                with suppress(SratError):
                    run.record_end("killed", error=f"stopped by {stop}", log=f"killed by {stop}")
        return "killed"
    return "finished"


def _skip_reason(run: RunDir, launch_id: str) -> str | None:
    launch = run.launch_record()
    if launch.get("launch_id") != launch_id:
        return "the run has been launched again since (a later resume)"
    state = run.state()
    status = state.get("status", "unknown")
    # a resume's job may start before its launcher has marked the run queued again
    resumed = bool(launch.get("resume")) and status in ("failed", "killed")
    if status not in _STARTABLE and not (resumed and state.get("launch_id") != launch_id):
        return f"the run is {status}"
    return None


def _set_threads(environ: dict[str, str] | os._Environ[str]) -> None:
    """As many intra-op threads as CPUs Slurm gave the job (torch would count the node's)."""
    cpus = environ.get("SLURM_CPUS_PER_TASK", "")
    if cpus.isdigit() and int(cpus) > 0:
        import torch

        torch.set_num_threads(int(cpus))


def _requeue(runs: list[RunDir], job_id: str, stop: Exception) -> str:
    """After a checkpoint on Slurm's warning: the runs back to `queued` and their job into
    Slurm's queue again (a failed requeue ends them `killed`, resumable by hand)."""
    # Slurm ends this job with SIGTERM once it is requeued: that is not a kill of the runs
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    counts = {}
    for run in runs:
        counts[run.id] = int(run.state().get("requeues") or 0) + 1
        run.write_state(status="queued", queued=now_iso(), pid=None, pid_start=None,
                        pid_boot_start=None, host=None, requeues=counts[run.id])  # fmt: skip
    try:
        done = subprocess.run(
            ["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60, check=False
        )
        failure = (
            None if done.returncode == 0 else (done.stderr.strip() or f"exit {done.returncode}")
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        failure = str(err)
    if failure is not None:
        message = f"{stop}; Slurm did not requeue job {job_id} ({failure}): resume it by hand"
        for run in runs:
            run.record_end("killed", error=message, log=f"killed: {message}")
        return "killed"
    for run in runs:
        run.log(f"{stop} on Slurm's signal; job {job_id} requeued (requeue {counts[run.id]})")
    return "requeued"
