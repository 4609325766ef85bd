"""Launch, kill, resume and remove runs: the verbs the CLI and the TUI share.

A detached run is a `srat_engine.jobs.worker` process in its own session (start_new_session), so
closing the terminal or losing SSH does not reach it; it waits as `queued` for a device slot.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from srat_engine.devices import parse_device, parse_gpu_ids
from srat_engine.errors import SratError
from srat_engine.fsutil import WriteFailed, writing
from srat_engine.hardware import cuda_device_count
from srat_engine.runs.home import Home
from srat_engine.runs.liveness import (
    ACTIVE,
    LOCAL_BACKEND,
    RESUMABLE,
    process_alive,
    process_record,
    process_start,
    reconcile,
    waiting_in_slurm,
)
from srat_engine.runs.rundir import RunDir, StateChange, now_iso
from srat_engine.runs.sync import record_in_index

if TYPE_CHECKING:  # the options' type only: the Slurm backend is imported when it is used
    from srat_engine.jobs.slurm_options import SlurmOptions


def resolve_devices(
    *,
    gpus: str | None = None,
    device: str | None = None,
    slots: int | None = None,
    per_gpu: int = 1,
) -> tuple[list[str], int]:
    """The devices a detached run may use and how many runs each takes at once.

    `gpus` "all" or "0,1,3"; else `device` (cpu, cuda, cuda:N; cpu takes `slots` runs at
    once); else every visible GPU, or the CPU with one slot when there is none.
    """
    if per_gpu < 1 or (slots is not None and slots < 1):
        raise SratError("--per-gpu and --slots must be at least 1")
    if gpus is not None:
        available = cuda_device_count()
        if available == 0:
            raise SratError("--gpus given but no CUDA GPU is visible here")
        ids = parse_gpu_ids(gpus)
        if ids is None:
            return [f"cuda:{k}" for k in range(available)], per_gpu
        if any(k >= available for k in ids):
            raise SratError(f"--gpus {gpus}: visible GPUs are 0..{available - 1}")
        return [f"cuda:{k}" for k in ids], per_gpu
    chosen = parse_device("auto" if device is None else device)
    if chosen.kind == "auto":
        count = cuda_device_count()
        if count:
            return [f"cuda:{k}" for k in range(count)], per_gpu
        return ["cpu"], slots or 1
    if chosen.kind == "cpu":
        return ["cpu"], slots or 1
    if chosen.kind == "cuda":
        index = chosen.index or 0
        if index >= cuda_device_count():
            raise SratError(f"cuda:{index} is not a visible CUDA device")
        return [f"cuda:{index}"], per_gpu
    raise SratError(f"device {chosen} cannot run detached: use cpu, cuda or cuda:N")


def launch_detached(
    run: RunDir, devices: list[str], per_device: int, *, home: Home, resume: bool = False
) -> int:
    """Start the run's worker in a new session and return its pid at once.

    The worker is told `home` (its slots and index) on its command line, so it never depends
    on inheriting $SRAT_HOME.
    """
    return _launch([run], devices, per_device, home=home, resume=resume)


def launch_stack(
    runs: Sequence[RunDir],
    devices: list[str],
    per_device: int,
    *,
    home: Home,
    resume: bool = False,
) -> int:
    """Start one worker for the runs of a stack (`config.stacking`: one configuration, seeds
    apart), which wait for one slot together and train as one stacked model; its pid.

    The runs share that process: stopping one (`kill_run`) stops all of them, and each
    resumes from its own checkpoint, alone or stacked again (`resume_runs`). The worker's
    output goes to the first run's output.log."""
    from srat_engine.config.schema import validate_config
    from srat_engine.config.stacking import check_stackable

    check_stackable([validate_config(run.config()["config"]) for run in runs])
    return _launch(list(runs), devices, per_device, home=home, resume=resume)


def _launch(
    runs: list[RunDir], devices: list[str], per_device: int, *, home: Home, resume: bool
) -> int:
    lead = runs[0]
    for run in runs:
        run.clear_exit()
    output_log = lead.path / "output.log"
    try:
        for run in runs:
            run.hold_reserve()  # room to record the end, should the disk fill up meanwhile
        command = [
            sys.executable,
            "-m",
            "srat_engine.jobs.worker",
            *(str(run.path) for run in runs),
            "--home",
            str(home.root),
            "--devices",
            ",".join(devices),
            "--per-device",
            str(per_device),
            # its place in the queue: launch order, finer than run ids (to the second)
            "--queued-ns",
            str(time.time_ns()),
        ]
        if resume:
            command.append("--resume")
        with writing(output_log), output_log.open("ab") as output:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                cwd=lead.path,
            )
    except WriteFailed as failure:
        for run in runs:
            _record_launch_failure(run, failure, home)
        raise
    try:
        started = process_start(process.pid)
    except psutil.NoSuchProcess:
        started = {"pid_start": None, "pid_boot_start": None}
    stack = {"stack": [run.id for run in runs], "output": str(output_log)} if len(runs) > 1 else {}
    try:
        for run in runs:
            run.write_launch_record(
                {
                    "pid": process.pid,
                    **started,
                    "host": socket.gethostname(),
                    "devices": devices,
                    "per_device": per_device,
                    "resume": resume,
                    "launched": now_iso(),
                    **stack,
                }
            )
            # Only now, with the worker's pid on record, may the run read as queued: a listing
            # that saw `queued` with no live process behind it would mark the run dead. The
            # worker may have written its own state already; then it is left alone.
            run.update_state(_queued_unless_started(process.pid, started))
            with_others = f", stacked with {len(runs) - 1} other run(s)" if stack else ""
            run.log(
                f"launched worker pid {process.pid} on {','.join(devices)} x{per_device}"
                + with_others
            )
    except WriteFailed as failure:
        # Its launcher's record is how a worker that dies early is found: without it, stop the
        # worker (it leads its own process group) before it writes anything, and record this.
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        for run in runs:
            _record_launch_failure(run, failure, home)
        raise
    for run in runs:
        record_in_index(run, home.index)
    return process.pid


def _queued_unless_started(pid: int, started: dict[str, float | None]) -> StateChange:
    """The state change that makes a just-launched run `queued` with its worker's process
    record, unless the worker has written its own state already (it then holds that pid)."""

    def change(state: dict[str, Any]) -> dict[str, Any] | None:
        if state.get("pid") == pid:
            return None
        host = socket.gethostname()
        return {"status": "queued", "queued": now_iso(), "pid": pid, **started, "host": host,
                **LOCAL_BACKEND}  # fmt: skip

    return change


def _record_launch_failure(run: RunDir, failure: WriteFailed, home: Home) -> None:
    """A launch that could not write: the run is `failed` with the cause, and listed so."""
    with suppress(SratError):  # no room even with the reserve freed: the error still says why
        run.record_end("failed", error=str(failure), log=f"failed: {failure}")
    record_in_index(run, home.index)


def record_foreground_stack(runs: Sequence[RunDir]) -> None:
    """A stack this process trains itself (`srat run --stack` without --detach): each run's
    launch record names the stack and this process, as a detached stack's names its worker,
    so `runs show`, `runs kill` and `runs resume ID --stack` know the runs share a process."""
    ids = [run.id for run in runs]
    pid = os.getpid()
    for run in runs:
        run.write_launch_record(
            {
                "pid": pid,
                **process_start(pid),
                "host": socket.gethostname(),
                "foreground": True,
                "launched": now_iso(),
                "stack": ids,
            }
        )


def _live_pid(run: RunDir) -> int | None:
    state = run.state()
    for record in (state, run.launch_record()):
        pid, start, boot_start = process_record(record)
        if process_alive(pid, start, boot_start):
            return int(pid)
    return None


def kill_run(run: RunDir, *, home: Home, grace_seconds: float = 10.0) -> str:
    """Stop a queued or running run: a local one by SIGTERM to its whole process group
    (SIGKILL after the grace period), one on Slurm by cancelling its job (`scancel`)."""
    status = reconcile(run)
    if status in ACTIVE and run.launch_record().get("backend") == "slurm":
        _cancel_slurm_job(run, grace_seconds)
        return _record_killed(run, home)
    pid = _live_pid(run) if status in ACTIVE else None
    if pid is None:
        raise SratError(f"run {run.id} is not running (status {status})")
    # the worker leads its own session, so its process group is its pid
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline and _live_pid(run) is not None:
        time.sleep(0.1)
    if _live_pid(run) is not None:
        os.killpg(pid, signal.SIGKILL)
        time.sleep(0.2)
    return _record_killed(run, home)


def _cancel_slurm_job(run: RunDir, grace_seconds: float) -> None:
    """scancel the run's job; a job that runs records its own end on the SIGTERM (waited for up
    to the grace period), a pending one has nothing to wait for."""
    from srat_engine.jobs.slurm import cancel_job

    job = run.state().get("slurm_job_id") or run.launch_record().get("job_id")
    if not job:
        raise SratError(f"run {run.id} has no Slurm job on record to cancel")
    cancel_job(str(job))
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline and run.exit_record() is None:
        if waiting_in_slurm(run.state()):
            return
        time.sleep(0.1)


def _record_killed(run: RunDir, home: Home) -> str:
    if run.exit_record() is None:
        run.write_exit({"status": "killed", "error": "killed on request"})
    run.write_state(status="killed")
    run.log("killed on request (srat runs kill, or k in srat-tui)")
    record_in_index(run, home.index)
    return "killed"


def previous_devices(run: RunDir) -> tuple[list[str], int]:
    """Where a run was launched (devices, runs per device), else its configured device."""
    launch = run.launch_record()
    if launch.get("devices"):
        return list(launch["devices"]), int(launch.get("per_device", 1))
    return resolve_devices(device=run.config()["config"].get("device", "auto"))


def check_resumable(run: RunDir) -> None:
    """Refuse (SratError) to resume a run that has finished, is still active, never ran, or
    whose last checkpoint is no checkpoint at all (`RunDir.check_checkpoint_file`)."""
    status = reconcile(run)
    if status == "finished":
        raise SratError(f"run {run.id} has finished: nothing to resume")
    if status in ACTIVE:
        raise SratError(f"run {run.id} is {status}: kill it first to restart it")
    if status == "unknown":
        raise SratError(
            f"run {run.id}'s status is unknown (its state.json is missing or damaged and it "
            "has no exit record): srat cannot tell that it stopped, so it is not resumed"
        )
    if status not in RESUMABLE:
        raise SratError(f"run {run.id} is {status}: only failed, killed, dead or lost runs resume")
    run.check_checkpoint_file()


def resume_runs(runs: Sequence[RunDir], devices: list[str], per_device: int, *, home: Home) -> int:
    """Relaunch failed, killed, dead or lost runs from their last checkpoints on this host: one
    run, or the runs of a stack (`stack_of`) as one stack again; returns the worker pid. A lost
    run's host may only be cut off: its process, should it come back, sees itself replaced and
    stops beating, but only its end (or its host's) stops it training. Runs of a stack whose
    checkpoints stand at different points (one resumed alone since) end `failed`, saying so,
    and resume alone. (`jobs.slurm.resume_in_slurm` resubmits them to Slurm instead.)"""
    for run in runs:
        check_resumable(run)
    if len(runs) == 1:
        return launch_detached(runs[0], devices, per_device, home=home, resume=True)
    return launch_stack(runs, devices, per_device, home=home, resume=True)


def resume_run(run: RunDir, devices: list[str], per_device: int, *, home: Home) -> int:
    """`resume_runs` of one run."""
    return resume_runs([run], devices, per_device, home=home)


def stack_of(run: RunDir) -> list[RunDir]:
    """The runs of the stack `run` was last launched in (`RunDir.stack`): what `srat runs
    resume ID --stack` resumes together. SratError for a run launched alone, or a stack one
    of whose runs is missing."""
    ids = run.stack()
    if ids is None:
        raise SratError(f"run {run.id} was launched alone: resume it without --stack")
    runs = []
    for run_id in ids:
        try:
            runs.append(RunDir.open(run.path.parent, run_id))
        except SratError as err:
            raise SratError(f"the stack of {run.id} cannot resume together: {err}") from None
    return runs


def check_removable(run: RunDir) -> None:
    """Refuse (SratError) to remove a run that is still queued or running."""
    status = reconcile(run)
    if status in ACTIVE:
        raise SratError(f"run {run.id} is {status}: kill it before removing it")


def remove_run(run: RunDir, *, home: Home, purge: bool = False) -> Path | None:
    """Move a run to the home's trash (or delete it with purge) and drop it from its index."""
    check_removable(run)
    destination = None
    if purge:
        shutil.rmtree(run.path)
    else:
        trash = home.trash
        trash.mkdir(parents=True, exist_ok=True)
        destination = trash / run.id
        if destination.exists():
            destination = trash / f"{run.id}-{int(time.time())}"
        run.path.rename(destination)
    home.index.remove(run.id)
    return destination


def resume_groups(runs: Sequence[RunDir]) -> list[list[RunDir]]:
    """`runs` as they resume as launched: the runs of a stack (`RunDir.stack`) that are all
    among `runs` together, as one stack again, in the stack's order; every other run alone.
    In the order of `runs` (a stack where its first run is)."""
    by_id = {run.id: run for run in runs}
    groups: list[list[RunDir]] = []
    grouped: set[str] = set()
    for run in runs:
        if run.id in grouped:
            continue
        stack = run.stack()
        if stack is not None and all(member in by_id for member in stack):
            groups.append([by_id[member] for member in stack])
            grouped.update(stack)
        else:
            groups.append([run])
            grouped.add(run.id)
    return groups


def resume(
    runs: Sequence[RunDir],
    *,
    home: Home,
    slurm: SlurmOptions | None = None,
    placement: tuple[list[str], int] | None = None,
) -> str:
    """Resume a run, or the runs of a stack together: resubmitted to Slurm with `slurm`, else
    detached here on `placement` (devices, runs per device; default: where the first was
    launched); returns one line saying which."""
    ids = ", ".join(run.id for run in runs)
    together = " as one stack" if len(runs) > 1 else ""
    if slurm is not None:
        from srat_engine.jobs.slurm import resume_in_slurm

        job_id = resume_in_slurm(runs, slurm, home=home)[0].job_id
        return f"{ids} resubmitted{together} (Slurm job {job_id})"
    devices, per_device = placement or previous_devices(runs[0])
    pid = resume_runs(runs, devices, per_device, home=home)
    return f"{ids} resumed{together} (worker pid {pid})"


def resume_as_launched(runs: Sequence[RunDir], *, home: Home) -> str:
    """`resume` of a run, or of the runs of a stack together (`resume_groups`), where the
    first was launched last: on Slurm with the options it had (the home's config.toml filling
    any it lacks), else here on its devices (what the TUI's resume key does)."""
    lead = runs[0]
    slurm = None
    if lead.launch_record().get("backend") == "slurm":
        from srat_engine.jobs.slurm import previous_options
        from srat_engine.jobs.slurm_options import slurm_options

        slurm = slurm_options(home.config_file, {}, before=previous_options(lead))
    return resume(runs, home=home, slurm=slurm)
