"""The Slurm backend: runs submitted as sbatch jobs through submitit, one job array per batch.

The run directory stays the contract: each job trains `<home>/runs/<id>/` on the shared
filesystem (`jobs.slurm_job`), writing its state, metrics, checkpoints, log and heartbeat
there, and never the run index (a TinyDB file is not safe to write from many nodes over NFS;
readers refresh it from the run directories). Slurm allocates the GPUs; srat's slots are for
local runs only. submitit writes the sbatch files and job pickles under `<home>/slurm/<job>/`,
where Slurm also writes each job's output.

A stack (`srat run --stack --backend slurm`: the seeds of one configuration) is one job, one
array task, that trains its runs as one stacked model (`slurm_job.run_stack_job`); each run
keeps its own directory, and resumes alone or, `srat runs resume ID --stack`, as one stack again.

A submission is all or nothing: bad options, no sbatch, an unknown partition or a refused
sbatch raise SratError before (or instead of) anything being left behind: runs created for it
are removed again, runs resumed by it get their previous launch record back, the files
submitit staged for the refused sbatch are removed, and the jobs of groups sbatch took before
it refused a later one are cancelled.
"""

from __future__ import annotations

import io
import shutil
import socket
import subprocess
import uuid
from collections.abc import Sequence
from contextlib import redirect_stderr, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from srat_engine.devices import parse_device
from srat_engine.errors import SratError
from srat_engine.fsutil import held_lock
from srat_engine.jobs.slurm_options import SlurmOptions
from srat_engine.runs.home import Home
from srat_engine.runs.rundir import RunDir, StateChange, now_iso
from srat_engine.runs.sync import record_in_index

if TYPE_CHECKING:
    from srat_engine.config.prepare import PreparedRun

CLIENT_TIMEOUT_S = 30.0
SUBMIT_LOCK_TIMEOUT_S = 120.0  # one sbatch call is seconds; this is a stuck submitter
NO_SBATCH = "no sbatch on PATH: submit from a Slurm login node, or use --backend local"


@dataclass(frozen=True)
class SlurmSubmission:
    """One run's job: its Slurm job id ("1234" or, for an array task, "1234_5")."""

    run_id: str
    job_id: str
    array_job_id: str | None
    array_index: int | None


def _client(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SratError(NO_SBATCH if name == "sbatch" else f"no {name} on PATH: is Slurm here?")
    return path


def _call(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [_client(name), *args],
            capture_output=True,
            text=True,
            timeout=CLIENT_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise SratError(f"{name} did not answer in {CLIENT_TIMEOUT_S:g} s") from None
    except OSError as err:
        raise SratError(f"cannot run {name}: {err}") from None


def known_partitions() -> list[str]:
    """The partitions this cluster has, as `sinfo` lists them (the default marked `*` there)."""
    done = _call("sinfo", "--noheader", "--format=%P")
    if done.returncode != 0:
        raise SratError(f"sinfo failed: {_first_line(done.stderr)}")
    names = [line.strip().rstrip("*") for line in done.stdout.splitlines() if line.strip()]
    return list(dict.fromkeys(names))


def check_cluster(options: SlurmOptions) -> None:
    """Refuse (SratError) a submission this cluster cannot take, before anything is created:
    no sbatch on PATH, or a partition it does not have."""
    _client("sbatch")
    if options.partition is not None:
        partitions = known_partitions()
        if options.partition not in partitions:
            known = ", ".join(partitions) or "none"
            raise SratError(f"unknown Slurm partition {options.partition!r} (this cluster has: "
                            f"{known})")  # fmt: skip


def check_submission(options: SlurmOptions, devices: Sequence[str]) -> None:
    """Everything a submission of runs on `devices` (their configs' devices) is refused for,
    before anything is created: `check_cluster`, and a device that needs a GPU the options
    do not give (`job_device`)."""
    check_cluster(options)
    for device in devices:
        job_device(device, options.gpus_for(device))


def job_device(config_device: str, gpus: int) -> str:
    """The device a job trains on: its config's, with the GPU Slurm allocated seen as `cuda`
    (a cuda:N of the config names a GPU of another machine)."""
    chosen = parse_device(config_device)
    if chosen.kind == "cpu":
        return "cpu"
    if gpus == 0:
        if chosen.kind == "cuda":
            raise SratError(f"device {config_device} needs a GPU: --gpus-per-run 0 gives none")
        return "cpu"  # auto, with no GPU asked for
    return "cuda"


def create_and_submit(
    prepared: Sequence[PreparedRun], options: SlurmOptions, *, home: Home, stack_size: int = 1
) -> list[SlurmSubmission]:
    """Create and submit one run per prepared configuration (one job array for several): the
    cluster and every run's device are checked before any run directory is created, and none
    is left behind when a creation or the submission fails. What `srat run --backend slurm`
    and the TUI's new-run form do. With `stack_size` > 1, each `stack_size` consecutive runs
    are one stack, one job (`config.stacking` checks them first)."""
    from srat_engine.config.prepare import create_run

    check_submission(options, [item.config.device for item in prepared])
    if stack_size > 1:
        from srat_engine.config.stacking import check_stackable

        for start in range(0, len(prepared), stack_size):
            check_stackable([item.config for item in prepared[start : start + stack_size]])
    created: list[RunDir] = []
    try:
        for item in prepared:
            created.append(create_run(item, home.runs))
    except BaseException:
        for run in created:
            shutil.rmtree(run.path, ignore_errors=True)
        raise
    # submit_runs removes the runs if sbatch refuses
    return submit_runs(created, options, home=home, stack_size=stack_size)


def submit_runs(
    runs: Sequence[RunDir],
    options: SlurmOptions,
    *,
    home: Home,
    resume: bool = False,
    created: bool = True,
    stack_size: int = 1,
) -> list[SlurmSubmission]:
    """Submit `runs` (one job array per resource shape) and record each job in its run.

    `created`: the runs were made for this submission and are removed if it fails; else (a
    resume) their previous launch records are put back. `check_submission` should have
    been called before the runs were created. With `stack_size` > 1, each `stack_size`
    consecutive runs are one stack (checked stackable by the caller): one array task.
    """
    import submitit

    from srat_engine.jobs.slurm_job import run_job, run_stack_job

    previous = {run.id: run.launch_record() for run in runs}
    # a job trains one unit: a run, or the runs of a stack
    units = [list(runs[i : i + stack_size]) for i in range(0, len(runs), max(stack_size, 1))]
    groups: dict[tuple[int, str], list[list[tuple[RunDir, str]]]] = {}
    for unit in units:
        device = unit[0].config()["config"].get("device", "auto")
        gpus = options.gpus_for(device)
        members = [(run, uuid.uuid4().hex) for run in unit]
        groups.setdefault((gpus, job_device(device, gpus)), []).append(members)
    submissions: list[SlurmSubmission] = []
    try:
        for (gpus, device), group in groups.items():
            for members in group:
                stack = [run.id for run, _ in members] if len(members) > 1 else None
                for run, launch_id in members:
                    # before sbatch: a job that starts at once finds the launch it belongs to
                    record = _launch_record(launch_id, options, device, gpus, resume, stack)
                    run.write_launch_record(record)
            executor = submitit.SlurmExecutor(folder=home.slurm / "%j")
            executor.update_parameters(**_sbatch_parameters(options, gpus, group))
            # one sbatch for the group: an array when there are several units
            if stack_size > 1:
                arguments = [
                    [[str(run.path) for run, _ in members] for members in group],
                    [str(home.root)] * len(group),
                    [[launch_id for _, launch_id in members] for members in group],
                ]
                jobs = _staged_submission(home, executor, run_stack_job, arguments)
            else:
                arguments = [
                    [str(members[0][0].path) for members in group],
                    [str(home.root)] * len(group),
                    [members[0][1] for members in group],
                ]
                jobs = _staged_submission(home, executor, run_job, arguments)
            for members, job in zip(group, jobs, strict=True):
                array_job, _, index = str(job.job_id).partition("_")
                for run, _ in members:
                    submissions.append(
                        SlurmSubmission(
                            run.id, str(job.job_id), array_job if index else None,
                            int(index) if index else None,
                        )
                    )  # fmt: skip
    except SratError:
        _cancel_submitted(submissions, home)
        _undo(runs, previous, created, home)
        raise
    except Exception as err:  # sbatch's refusal reaches us as whatever submitit raised
        _cancel_submitted(submissions, home)
        _undo(runs, previous, created, home)
        raise SratError(f"sbatch refused the job: {_submit_error(err)}") from None
    record_submissions(runs, submissions, home)
    return submissions


def _staged_files(folder: Path) -> set[Path]:
    """What submitit writes into its job-independent folder before sbatch answers (the job
    pickles and the sbatch script) and moves into the job's folder once it has a job id."""
    if not folder.is_dir():
        return set()
    return {*folder.glob("*.pkl"), *folder.glob(".submission_file_*.sh")}


def _staged_submission(
    home: Home, executor: Any, function: Any, arguments: list[list[Any]]
) -> list[Any]:
    """`executor.map_array(function, *arguments)`, one submission at a time per home, so that a
    refused one removes exactly the files submitit staged for it (it leaves them behind);
    sbatch's refusal is in the exception, not on stderr."""
    home.slurm.mkdir(parents=True, exist_ok=True)
    with held_lock(
        home.slurm / ".submit.lock", timeout=SUBMIT_LOCK_TIMEOUT_S,
        busy=f"another submission to Slurm from this home has held its lock for "
             f"{SUBMIT_LOCK_TIMEOUT_S:g} s; try again",
    ):  # fmt: skip
        before = _staged_files(home.slurm)
        try:
            # submitit prints sbatch's stderr before raising it; the caller says it once
            with redirect_stderr(io.StringIO()):
                return list(executor.map_array(function, *arguments))
        except BaseException:
            for path in _staged_files(home.slurm) - before:
                path.unlink(missing_ok=True)
            raise


def _cancel_submitted(submissions: Sequence[SlurmSubmission], home: Home) -> None:
    """Cancel the jobs of a submission's groups sbatch took before it refused a later one
    (their runs are about to be removed or put back, so nothing must train them), and remove
    what submitit kept of each cancelled one: its job folders and the link to its sbatch
    script. A job scancel refuses keeps its files."""
    by_sbatch: dict[str, list[str]] = {}
    for job in submissions:
        by_sbatch.setdefault(job.array_job_id or job.job_id, []).append(job.job_id)
    for sbatch_id, job_ids in by_sbatch.items():
        try:
            cancel_job(sbatch_id)
        except SratError:
            continue
        folders = [home.slurm / job_id for job_id in job_ids]
        for link in home.slurm.glob(".submission_file_*.sh"):
            if link.is_symlink() and any(f in link.resolve().parents for f in folders):
                link.unlink(missing_ok=True)
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)


def _sbatch_parameters(
    options: SlurmOptions, gpus: int, group: list[list[tuple[RunDir, str]]]
) -> dict[str, Any]:
    count = len(group)
    stacks = len(group[0]) > 1
    if count == 1:
        name = f"srat-stack-{group[0][0][0].id}" if stacks else f"srat-{group[0][0][0].id}"
    else:
        name = f"srat-{count}-stacks" if stacks else f"srat-{count}-runs"
    parameters: dict[str, Any] = {
        "job_name": name,
        "time": options.minutes,
        "signal_delay_s": options.signal_s,
        "array_parallelism": options.max_parallel or count,
        "stderr_to_stdout": True,
        # `--slurm exclusive=` is the bare flag (#SBATCH --exclusive)
        "additional_parameters": {k: v if v != "" else True for k, v in options.extra.items()},
    }
    optional = {
        "partition": options.partition,
        "gpus_per_node": gpus or None,
        "cpus_per_task": options.cpus_per_run,
        "mem": options.mem,
        "account": options.account,
        "qos": options.qos,
    }
    parameters.update({key: value for key, value in optional.items() if value is not None})
    return parameters


def _launch_record(
    launch_id: str,
    options: SlurmOptions,
    device: str,
    gpus: int,
    resume: bool,
    stack: list[str] | None = None,
) -> dict[str, Any]:
    return {
        "backend": "slurm",
        "launch_id": launch_id,
        "options": options.model_dump(),
        "device": device,
        "gpus": gpus,
        "resume": resume,
        "host": socket.gethostname(),
        "launched": now_iso(),
        # the ids of the runs its job trains as one stack (`RunDir.stack`)
        **({"stack": stack} if stack else {}),
    }


def _undo(
    runs: Sequence[RunDir], previous: dict[str, dict[str, Any]], created: bool, home: Home
) -> None:
    for run in runs:
        if created:
            shutil.rmtree(run.path, ignore_errors=True)
            with suppress(SratError, OSError):
                home.index.remove(run.id)
        elif previous[run.id]:
            with suppress(SratError, OSError):
                run.write_launch_record(previous[run.id])
        else:
            (run.path / "launch.json").unlink(missing_ok=True)


def _submit_error(err: BaseException) -> str:
    output = getattr(err, "output", None) or getattr(err, "stderr", None)
    if isinstance(output, bytes):
        output = output.decode(errors="replace")
    return _first_line(str(output or err))


def _first_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else "no message"


def _queued_in_slurm(run: RunDir, launch_id: str, job: SlurmSubmission) -> StateChange:
    """The state change that makes a submitted run `queued` in Slurm, unless its job has
    started already (it then wrote this launch id itself, and only the job id is added).
    A resumed run's old exit record goes with it (under the run's lock: a job that has started
    clears it itself, and may already have written its own)."""

    def change(state: dict[str, Any]) -> dict[str, Any] | None:
        fields: dict[str, Any] = {
            "backend": "slurm",
            "slurm_job_id": job.job_id,
            "slurm_array_job_id": job.array_job_id,
            "slurm_array_index": job.array_index,
        }
        if state.get("launch_id") != launch_id:
            run.clear_exit()
            fields.update(
                status="queued",
                queued=now_iso(),
                launch_id=launch_id,
                pid=None,
                pid_start=None,
                pid_boot_start=None,
                host=None,
                slot=None,
                node=None,
            )
        return fields

    return change


def cancel_job(job_id: str) -> None:
    """`scancel JOB`; SratError with scancel's reason if it refuses."""
    done = _call("scancel", job_id)
    if done.returncode != 0:
        raise SratError(f"scancel {job_id} failed: {_first_line(done.stderr)}")


def record_submissions(
    runs: Sequence[RunDir], submissions: Sequence[SlurmSubmission], home: Home
) -> None:
    """Write each job's ids into its run (launch.json, state.json, log) and list the run."""
    by_id = {run.id: run for run in runs}
    for job in submissions:
        run = by_id[job.run_id]
        launch = run.launch_record()
        log = str(slurm_log(home, job.job_id))
        launch.update(
            job_id=job.job_id, array_job_id=job.array_job_id, array_index=job.array_index, log=log
        )
        run.write_launch_record(launch)
        run.update_state(_queued_in_slurm(run, str(launch["launch_id"]), job))
        run.log(f"submitted to Slurm as job {job.job_id}")
        record_in_index(run, home.index)


def slurm_log(home: Home, job_id: str) -> Path:
    """Where Slurm writes the job's output (stdout and stderr together)."""
    return home.slurm / job_id / f"{job_id}_0_log.out"


def resume_in_slurm(
    runs: Sequence[RunDir], options: SlurmOptions, *, home: Home
) -> list[SlurmSubmission]:
    """Resubmit a failed, killed, dead or lost run to Slurm, or the runs of a stack
    (`supervisor.stack_of`) as one stacked job again; each resumes from its own checkpoint.
    SratError before anything changes if one may not resume, the runs do not stack or the
    cluster cannot take the job."""
    from srat_engine.jobs.supervisor import check_resumable

    for run in runs:
        check_resumable(run)
    if len(runs) > 1:
        from srat_engine.config.schema import validate_config
        from srat_engine.config.stacking import check_stackable

        check_stackable([validate_config(run.config()["config"]) for run in runs])
    check_cluster(options)
    return submit_runs(runs, options, home=home, resume=True, created=False, stack_size=len(runs))


def previous_options(run: RunDir) -> dict[str, Any]:
    """The Slurm options the run was last submitted with ({} if it never was)."""
    launch = run.launch_record()
    options = launch.get("options") if launch.get("backend") == "slurm" else None
    return dict(options) if isinstance(options, dict) else {}
