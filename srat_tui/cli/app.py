"""The `srat` command line: headless runs and presets.

Every user error is one line on stderr and exit code 2; nothing is created before the config
has been validated and resolved.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from srat_engine.config.presets import describe, expand_patterns, list_presets, load_preset
from srat_engine.errors import SratError
from srat_tui.cli import analysis as analysis_commands
from srat_tui.cli import bench as bench_command
from srat_tui.cli import eval as eval_command
from srat_tui.cli import tui as tui_command
from srat_tui.cli.runs import runs_app
from srat_tui.render import run as render

if TYPE_CHECKING:  # torch loads with the engine's launch path: only `srat run` pays for it
    from srat_engine.config.prepare import PreparedRun

app = typer.Typer(
    name="srat",
    help="Separable Reweighted Adversarial Training on class-imbalanced data.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
presets_app = typer.Typer(help="Named configurations (every cell of the paper's tables).")
app.add_typer(presets_app, name="presets")
app.add_typer(runs_app, name="runs")
# commands that live in their own modules register themselves here (one line each)
tui_command.register(app)
bench_command.register(app)
eval_command.register(app)
analysis_commands.register(app)

EXIT_USAGE = 2
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


def _stdout() -> Console:
    return Console(highlight=False, soft_wrap=True)


def _error_line(message: str) -> None:
    """Errors are one plain line: no Rich wrapping that would split a path."""
    print(message, file=sys.stderr, flush=True)


def _print_dry_run(prepared: PreparedRun, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(prepared.document(), indent=2))
        return
    import tomli_w

    console = _stdout()
    console.print(f"[bold]{prepared.source}[/bold] (dry run: nothing was created)")
    for line in render.schedule_lines(prepared):
        console.print(line)
    console.print(render.resolved_table(prepared))
    console.rule("resolved config (TOML, usable with --config)")
    console.print(tomli_w.dumps(prepared.config.model_dump(mode="json")), markup=False)


def _run_foreground(prepared: PreparedRun, as_json: bool) -> int:
    from srat_engine.config.prepare import create_run
    from srat_engine.runs.sync import record_in_index
    from srat_engine.training.trainer import RunInterrupted, execute

    run = create_run(prepared)
    record_in_index(run)  # listed by `srat runs ls` and the TUI while it trains
    console = _stdout()
    epochs = prepared.config.train.epochs
    if as_json:
        typer.echo(json.dumps({"event": "created", "run_id": run.id, "path": str(run.path)}))
    else:
        console.print(f"run [bold]{run.id}[/bold]  {run.path}")
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
            progress.console.print(render.epoch_line(record), markup=False, soft_wrap=True)
            progress.update(task, completed=record["epoch"])
        elif record["event"] == "resume":
            progress.console.print(f"resumed after epoch {record['from_epoch']}")

    try:
        with progress:
            final = execute(run, on_event=on_event)
        record_in_index(run)
    except RunInterrupted as stop:
        record_in_index(run)
        _error_line(f"run {run.id} stopped by {stop}; resume it from its last checkpoint")
        return EXIT_INTERRUPTED
    except SratError as failure:
        record_in_index(run)
        _error_line(f"error: run {run.id} failed: {failure}")
        return EXIT_FAILED
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


@app.command()
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
    per_gpu: Annotated[int, typer.Option("--per-gpu", help="runs per GPU at once")] = 1,
    slots: Annotated[
        int | None, typer.Option("--slots", help="with --device cpu: CPU runs at once")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="validate and print the resolved config, run nothing")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Run configurations: in the foreground (one line per epoch), or detached and queued."""
    from srat_engine.config.prepare import create_run, prepare

    assignments = tuple(overrides or ())
    if device is not None:
        assignments = (*assignments, f'device="{device}"')
    if presets and config is not None:
        raise SratError("give exactly one of --preset NAME or --config FILE")
    names = expand_patterns(presets) if presets else []
    if (gpus is not None or slots is not None) and not detach:
        raise SratError("--gpus and --slots schedule detached runs: add --detach")
    if len(names) > 1 and not (detach or dry_run):
        raise SratError(f"{len(names)} presets match: add --detach to queue them all")
    # validate every configuration before creating any run
    if names:
        prepared = [prepare(preset=n, overrides=assignments) for n in names]
    else:
        prepared = [prepare(config_file=config, overrides=assignments)]
    if dry_run:
        for item in prepared:
            _print_dry_run(item, as_json)
        return
    if not detach:
        raise typer.Exit(_run_foreground(prepared[0], as_json))
    from srat_engine.jobs.supervisor import launch_detached, resolve_devices

    devices, per_device = resolve_devices(gpus=gpus, device=device, slots=slots, per_gpu=per_gpu)
    launched = []
    for item in prepared:
        created = create_run(item)
        pid = launch_detached(created, devices, per_device)
        launched.append({"run_id": created.id, "source": item.source, "pid": pid})
    if as_json:
        typer.echo(json.dumps(launched))
        return
    for entry in launched:
        typer.echo(f"{entry['run_id']}  {entry['source']}  queued (worker pid {entry['pid']})")


@presets_app.command("ls")
def presets_ls(
    patterns: Annotated[
        list[str] | None, typer.Argument(help="shell patterns, e.g. 'exp100-*'")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List presets with their descriptions."""
    names = expand_patterns(patterns) if patterns else list(list_presets())
    rows = [{"name": name, "description": describe(name)} for name in names]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    console = _stdout()
    width = max(len(row["name"]) for row in rows)
    for row in rows:
        console.print(f"{row['name']:<{width}}  {row['description']}", markup=False)


@presets_app.command("show")
def presets_show(
    name: Annotated[str, typer.Argument(help="preset name")],
    raw: Annotated[bool, typer.Option("--raw", help="the preset file as written")] = False,
) -> None:
    """Print a preset as a complete TOML file you can copy, edit and pass to --config."""
    from srat_engine.config.presets import preset_path
    from srat_engine.config.schema import validate_config

    if raw:
        typer.echo(preset_path(name).read_text(encoding="utf-8"), nl=False)
        return
    import tomli_w

    config = validate_config(load_preset(name))
    description = " ".join(describe(name).split())
    header = (
        f"# preset {name}: {description}\n"
        f"# every field, resolved; save it, edit it, run it: srat run --config FILE\n\n"
    )
    typer.echo(header + tomli_w.dumps(config.model_dump(mode="json")), nl=False)


def main() -> None:
    """Console entry point: SratError -> one line on stderr, exit 2."""
    try:
        app()
    except SratError as err:
        _error_line(f"error: {' '.join(str(err).split())}")
        sys.exit(EXIT_USAGE)


if __name__ == "__main__":
    main()
