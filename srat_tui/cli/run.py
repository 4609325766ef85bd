"""`srat run`: one configuration in the foreground, or many queued as detached runs.

Nothing is created before every configuration has been validated and resolved.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from srat_engine.config.presets import expand_patterns
from srat_engine.devices import parse_device
from srat_engine.errors import SratError
from srat_engine.runs.records import epoch_summary
from srat_tui.cli.common import (
    NO_SLURM,
    AsJson,
    PerGpu,
    SlurmRequest,
    error_line,
    interrupted_exit,
    stdout_console,
    with_slurm_options,
)
from srat_tui.cli.exit_codes import EXIT_FAILED
from srat_tui.render import run as render
from srat_tui.render.format import inert

if TYPE_CHECKING:  # torch loads with the engine's launch path: only `srat run` pays for it
    from srat_engine.config.prepare import PreparedRun
    from srat_engine.jobs.slurm_options import SlurmOptions
    from srat_engine.runs.home import Home
    from srat_engine.runs.rundir import RunDir

app = typer.Typer()


def _print_dry_run(prepared: PreparedRun, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(prepared.document(), indent=2))
        return
    from srat_engine.config.schema import config_toml

    console = stdout_console()
    # the seed in the heading: a study's dry run repeats this block once per seed
    seed = f", seed {prepared.config.seed}"
    console.print(render.heading(str(prepared.source), f"{seed} (dry run: nothing was created)"))
    for line in render.schedule_lines(prepared):
        console.print(line)
    console.print(render.resolved_table(prepared))
    console.rule("resolved config (TOML, usable with --config)")
    console.print(config_toml(prepared.config), markup=False)


def _outlook_line(
    prepared: list[PreparedRun],
    home: Home,
    placement: tuple[str | None, int | None, int] | None,
    stack_size: int = 1,
) -> str:
    """How long the runs should train, and with `placement` (--gpus, --slots, --per-gpu of a
    detached launch) when the queue would be through (`jobs.forecast.launch_outlook`); with
    `stack_size` > 1, each of `prepared` is the first run of a stack of that many."""
    from srat_engine.hardware import auto_device
    from srat_engine.jobs.forecast import launch_outlook, planned_run
    from srat_engine.jobs.supervisor import resolve_devices

    try:
        planned = []
        for item in prepared:
            if placement is None:  # in the foreground: `_check_launch` found the device here
                requested = parse_device(item.config.device)
                device = auto_device() if requested.kind == "auto" else str(requested)
                planned.append(planned_run(item, [device], None, stack_size))
            else:
                gpus, slots, per_gpu = placement
                devices, per_device = resolve_devices(
                    gpus=gpus, device=item.config.device, slots=slots, per_gpu=per_gpu
                )
                planned.append(planned_run(item, devices, per_device, stack_size))
        records = home.index.all()  # as the new-run form reads it: a dry run changes nothing
    except SratError as err:
        return f"no estimate: {err}"
    now = datetime.now(timezone.utc)
    outlook = launch_outlook(planned, home.slots, records, now)
    return render.time_line(outlook, render.like_runs(planned), now, queued=placement is not None)


def _run_foreground(prepared: PreparedRun, home: Home, as_json: bool) -> int:
    from srat_engine.config.prepare import create_run
    from srat_engine.runs.sync import record_in_index
    from srat_engine.training.trainer import RunInterrupted, execute

    run = create_run(prepared, home.runs)
    record_in_index(run, home.index)  # listed by `srat runs ls` and the TUI while it trains
    console = stdout_console()
    epochs = prepared.config.train.epochs
    if as_json:
        typer.echo(json.dumps({"event": "created", "run_id": run.id, "path": str(run.path)}))
    else:
        console.print(render.heading(run.id, f"  {run.path}", before="run "))
        for line in render.schedule_lines(prepared):
            console.print(line, markup=False)
    show_bar = console.is_terminal and not as_json
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not show_bar,
    )
    task = progress.add_task("training", total=epochs)

    def on_event(record: dict[str, Any]) -> None:
        if as_json:
            typer.echo(json.dumps(record))
            return
        if record["event"] == "epoch":
            # plain lines always: Rich's bar prints nothing when stdout is not a TTY
            progress.console.print(epoch_summary(record), markup=False, soft_wrap=True)
            progress.update(task, completed=record["epoch"])
        elif record["event"] == "resume":
            progress.console.print(f"resumed after epoch {record['from_epoch']}")

    try:
        with progress:
            final = execute(run, on_event=on_event, index=home.index)  # listed as running
        record_in_index(run, home.index)
    except RunInterrupted as stop:
        record_in_index(run, home.index)
        error_line(f"run {run.id} stopped by {stop}; resume it from its last checkpoint")
        return interrupted_exit(stop)
    except SratError as failure:  # a write that failed (a full disk) is one too: WriteFailed
        record_in_index(run, home.index)
        error_line(f"error: run {run.id} failed: {failure}")
        return EXIT_FAILED
    except Exception:
        record_in_index(run, home.index)  # execute() recorded `failed`: list it so, then say why
        raise
    if not as_json:
        resolved = prepared.resolved
        title = f"{resolved.method['name']} on {prepared.config.data.dataset} (run {run.id})"
        console.print(render.summary_table(final, title))
        console.print(
            render.class_table(
                final, resolved.class_names, resolved.class_counts, resolved.under_classes
            )
        )
    return 0


def _run_foreground_stack(prepared: list[PreparedRun], home: Home, as_json: bool) -> int:
    """The seeds of one configuration trained here as one stack (`--stack`), each with its
    own run directory; one line per run and epoch. The exit code is the worst run's."""
    from srat_engine.config.prepare import create_run
    from srat_engine.jobs.supervisor import record_foreground_stack
    from srat_engine.runs.sync import record_in_index
    from srat_engine.training.stacked_trainer import execute_stacked
    from srat_engine.training.trainer import RunInterrupted

    runs = [create_run(item, home.runs) for item in prepared]
    record_foreground_stack(runs)
    for run in runs:
        record_in_index(run, home.index)
    console = stdout_console()
    if as_json:
        for run in runs:
            typer.echo(json.dumps({"event": "created", "run_id": run.id, "path": str(run.path)}))
    else:
        ids = ", ".join(run.id for run in runs)
        console.print(render.heading(ids, f"  (stacked, {len(runs)} runs)", before="runs "))
        for line in render.schedule_lines(prepared[0]):
            console.print(line, markup=False)

    def on_event(run: RunDir, record: dict[str, Any]) -> None:
        if as_json:
            typer.echo(json.dumps({"run_id": run.id, **record}))
        elif record["event"] == "epoch":
            console.print(inert(f"{run.id}  {epoch_summary(record)}"), soft_wrap=True)
        elif record["event"] == "resume":
            console.print(inert(f"{run.id}  resumed after epoch {record['from_epoch']}"))

    try:
        finals = execute_stacked(runs, on_event=on_event, index=home.index)
    except RunInterrupted as stop:
        error_line(f"runs {', '.join(r.id for r in runs)} stopped by {stop}; resume each one")
        return interrupted_exit(stop)
    except SratError as failure:
        error_line(f"error: the stack of {', '.join(r.id for r in runs)} failed: {failure}")
        return EXIT_FAILED
    failed = [run for run in runs if run.id not in finals]
    for run in failed:
        error = (run.exit_record() or {}).get("error") or "no error recorded"
        error_line(f"error: run {run.id} failed: {error}")
    if not as_json:
        resolved = prepared[0].resolved
        for run, item in zip(runs, prepared, strict=True):
            if run.id in finals:
                title = f"{resolved.method['name']} seed {item.config.seed} (run {run.id})"
                console.print(render.summary_table(finals[run.id], title))
    return EXIT_FAILED if failed else 0


def _check_launch(
    prepared: list[PreparedRun],
    options: SlurmOptions | None,
    detach: bool,
    placement: tuple[str | None, int | None, int],
) -> list[tuple[list[str], int]]:
    """What a launch refuses before it creates anything, for the launch and its dry run alike:
    a cluster without sbatch or the partition (Slurm), a device that is not here (in the
    foreground), or placements that cannot be (detached: each run on the device its config
    names, --device sets it for all, unless --gpus). Returns the detached runs' placements."""
    if options is not None:
        from srat_engine.jobs.slurm import check_cluster

        check_cluster(options)
        return []
    if not detach:
        # a missing GPU fails before the run dir exists; auto and cpu are always there, and
        # checking them would import torch for nothing (a dry run)
        if parse_device(prepared[0].config.device).kind in ("cuda", "mps"):
            from srat_engine.training.device import pick_device

            pick_device(prepared[0].config.device)
        return []
    from srat_engine.jobs.supervisor import resolve_devices

    gpus, slots, per_gpu = placement
    return [
        resolve_devices(gpus=gpus, device=item.config.device, slots=slots, per_gpu=per_gpu)
        for item in prepared
    ]


def _submit_to_slurm(
    prepared: list[PreparedRun], home: Home, options: SlurmOptions, as_json: bool, stack_size: int
) -> None:
    """Every run as one Slurm job, or every `stack_size` seeds of a configuration as one
    stacked job (one array for several); nothing is left on a refusal."""
    from srat_engine.jobs.slurm import create_and_submit

    submissions = create_and_submit(prepared, options, home=home, stack_size=stack_size)
    entries = [
        {"run_id": job.run_id, "source": item.source, "slurm_job_id": job.job_id}
        for job, item in zip(submissions, prepared, strict=True)
    ]
    if as_json:
        typer.echo(json.dumps(entries))
        return
    how = "stacked, " if stack_size > 1 else ""
    for entry in entries:
        job = entry["slurm_job_id"]
        typer.echo(inert(f"{entry['run_id']}  {entry['source']}  submitted ({how}Slurm job {job})"))


@app.command()
@with_slurm_options
def run(
    presets: Annotated[
        list[str] | None,
        typer.Option(
            "--preset", "-p", help="preset name or pattern ('exp100-*'); repeat for a sweep"
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="a TOML config file")
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", help="override a field: section.key=value (repeatable)"),
    ] = None,
    device: Annotated[
        str | None, typer.Option("--device", "-d", help="cpu | cuda | cuda:N (default: config)")
    ] = None,
    detach: Annotated[
        bool, typer.Option("--detach", help="run in the background; print the run id and return")
    ] = False,
    gpus: Annotated[
        str | None, typer.Option("--gpus", help="with --detach: 'all' or ids like 0,1,3")
    ] = None,
    per_gpu: PerGpu = 1,
    slots: Annotated[
        int | None, typer.Option("--slots", help="with --device cpu: CPU runs at once")
    ] = None,
    seeds: Annotated[
        str | None,
        typer.Option("--seeds", help="one run per seed of each configuration: 0,1,2 or 0-2"),
    ] = None,
    stack: Annotated[
        bool,
        typer.Option(
            "--stack",
            help="with --seeds: train each configuration's seeds in one process, as one "
            "stacked model (one slot, or one Slurm job, per configuration)",
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="validate and print the resolved config, run nothing")
    ] = False,
    as_json: AsJson = False,
    slurm_request: SlurmRequest = NO_SLURM,
) -> None:
    """Run configurations: in the foreground (one line per epoch), detached and queued on this
    machine, or as Slurm jobs (--backend slurm; several runs make one job array)."""
    from srat_engine.config.prepare import create_run, prepare
    from srat_engine.config.seeds import parse_seeds, seed_override
    from srat_engine.runs.home import Home

    home = Home.from_env()
    options = slurm_request.options(home, local=(gpus, slots, per_gpu))
    on_slurm = options is not None
    assignments = tuple(overrides or ())
    if device is not None:
        assignments = (*assignments, f'device="{device}"')
    if presets and config is not None:
        raise SratError("give exactly one of --preset NAME or --config FILE")
    dirs = home.preset_dirs
    names = expand_patterns(presets, dirs) if presets else []
    if (gpus is not None or slots is not None) and not detach:
        raise SratError("--gpus and --slots schedule detached runs: add --detach")
    # one run per seed: the seed's override comes last, so it wins over a --set seed=
    per_seed = [(seed_override(seed),) for seed in parse_seeds(seeds)] if seeds else [()]
    count = max(len(names), 1) * len(per_seed)
    if stack and len(per_seed) < 2:
        raise SratError(
            "--stack trains the seeds of a configuration together: give two or more with "
            "--seeds (e.g. --seeds 0-3)"
        )
    if count > 1 and not (detach or dry_run or on_slurm or (stack and len(names) <= 1)):
        what = f"{len(names)} presets match" if len(names) > 1 else f"{count} runs"
        raise SratError(f"{what}: add --detach to queue them all")
    # validate every configuration before creating any run: each preset (or the config
    # file) once per seed
    sources: list[dict[str, Any]] = [{"preset": n} for n in names] or [{"config_file": config}]
    prepared = [
        prepare(
            **source,
            overrides=(*assignments, *seed),
            preset_dirs=dirs,
            data_dir=home.data_dir,
        )
        for source in sources
        for seed in per_seed
    ]
    # with --stack, each configuration's seeds are one stack (prepared is source-major)
    stacks = [prepared[i : i + len(per_seed)] for i in range(0, len(prepared), len(per_seed))]
    stack_size = len(per_seed) if stack else 1
    if stack:
        from srat_engine.config.stacking import check_stackable

        for group in stacks:
            check_stackable([item.config for item in group])
    if dry_run:
        refused: SratError | None = None
        try:  # what the launch would refuse: said after the plan, and the exit is 2 as then
            _check_launch(prepared, options, detach, (gpus, slots, per_gpu))
        except SratError as err:
            refused = err
        for item in prepared:
            _print_dry_run(item, as_json)
        if not as_json:
            placement = (gpus, slots, per_gpu) if detach else None
            # a stack waits for one slot and trains its seeds together: its first run's time
            timed = [group[0] for group in stacks] if stack else prepared
            line = _outlook_line(timed, home, placement, stack_size)
            stdout_console().print(inert(f"time     {line}"))
        if refused is not None:
            raise refused
        return
    placements = _check_launch(prepared, options, detach, (gpus, slots, per_gpu))
    if options is not None:
        _submit_to_slurm(prepared, home, options, as_json, stack_size)
        return
    if not detach:
        if stack:
            raise typer.Exit(_run_foreground_stack(prepared, home, as_json))
        raise typer.Exit(_run_foreground(prepared[0], home, as_json))
    from srat_engine.jobs.supervisor import launch_detached

    launched = []
    if stack:
        from srat_engine.jobs.supervisor import launch_stack

        for group, (devices, per_device) in zip(stacks, placements[:: len(per_seed)], strict=True):
            created = [create_run(item, home.runs) for item in group]
            pid = launch_stack(created, devices, per_device, home=home)
            launched.extend(
                {"run_id": run.id, "source": item.source, "pid": pid, "stack": created[0].id}
                for run, item in zip(created, group, strict=True)
            )
    else:
        for item, (devices, per_device) in zip(prepared, placements, strict=True):
            created_run = create_run(item, home.runs)
            pid = launch_detached(created_run, devices, per_device, home=home)
            launched.append({"run_id": created_run.id, "source": item.source, "pid": pid})
    if as_json:
        typer.echo(json.dumps(launched))
        return
    for entry in launched:
        how = f"stacked, worker pid {entry['pid']}" if stack else f"worker pid {entry['pid']}"
        typer.echo(inert(f"{entry['run_id']}  {entry['source']}  queued ({how})"))
