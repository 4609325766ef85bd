"""`srat bench`: the engine's PGD-AT training step against common public code, side by side;
with --study, K whole runs of one preset at once on one device (`srat_engine.bench.study`)."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from srat_engine.errors import RunInterrupted, SratError, raise_interrupted
from srat_tui.cli.common import AsJson, error_line, interrupted_exit
from srat_tui.cli.exit_codes import EXIT_FAILED

if TYPE_CHECKING:  # torch loads only when the command runs
    from srat_engine.bench.benchmark import BenchResult
    from srat_engine.bench.study import PackResult, StudyResult

app = typer.Typer()

_STUDY = "Several runs on one device (--study)"
_DEFAULT_PRESET = "cifar10-exp100-srat-ldam"  # bench.study.DEFAULT_PRESET, for --help only


def _lines(result: BenchResult) -> list[str]:
    engine, ref = result.engine, result.reference
    folded = f"{result.engine_fold_bn} BN folded" if result.engine_fold_bn else "no BN folding"
    rows = [
        f"srat bench: {result.arch}, batch {result.batch}, PGD-{result.attack_steps}, "
        f"{result.device} ({result.threads} threads), seed {result.seed}",
        f"median of {result.repeats} repeats x {result.iters} steps, "
        f"{result.warmup} warm-up step(s) excluded",
        f"forward {result.forward_gflops:.4g} GFLOP/image (FlopCounterMode, 2 x MACs); "
        f"model FLOPs per training example = {result.fwd_equivalents} forwards",
        f"engine    : {result.engine_precision}, channels_last "
        f"{'on' if result.engine_channels_last else 'off'}, {folded}, "
        f"compile {result.engine_compile}, CUDA graphs "
        f"{'on' if result.engine_cuda_graphs else 'off'}, input-only attack gradients, "
        "data on the device",
        f"reference : fp32, DataLoader ({result.loader_workers} workers) + CPU "
        "RandomCrop/Flip, loss.backward() in the attack, eager",
        "",
        f"{'':10} {'images/s':>10} {'TFLOP/s':>9} {'executed fwd/ex':>16} {'peak MB':>9}",
    ]
    for name, path in (("engine", engine), ("reference", ref)):
        executed = path.executed_fwd_equivalents
        shown = "n/a" if executed is None else f"{executed:.1f}"  # compiled graphs: not counted
        rows.append(
            f"{name:10} {path.images_per_s:10.1f} {path.tflops:9.4f} "
            f"{shown:>16} {path.peak_memory_mb:9.0f}"
        )
    rows += ["", f"engine / reference = {result.ratio:.2f}x", f"peak memory: {result.memory_kind}"]
    if result.engine_graph_failure:
        rows.append(f"CUDA graph capture failed, engine ran eagerly: {result.engine_graph_failure}")
    return rows


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def _share(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.1f}%"


def _speedup(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _pack_lines(pack: PackResult, device: str) -> list[str]:
    rows = [
        f"K={pack.per_device}: {len(pack.runs)} run(s) at once on {device}",
        f"  {'run':20} {'seed':>4} {'epoch 1 s':>9} {'train s':>8} {'eval s':>7} "
        f"{'final s':>7} {'images/s':>9} {'robust %':>8}",
    ]
    for run in pack.runs:
        final = "-" if run.final_s is None else f"{run.final_s:.2f}"
        robust = "-" if run.rob_overall is None else f"{run.rob_overall:.1f}"
        rows.append(
            f"  {run.run_id:20} {run.seed:>4} {run.first_train_s:9.2f} {run.train_s:8.2f} "
            f"{run.eval_s:7.2f} {final:>7} {run.images_per_s:9,.1f} {robust:>8}"
        )
    return rows


def _study_lines(result: StudyResult) -> list[str]:
    share = "" if result.peak_tflops is None else f"{result.peak_tflops:g} TFLOP/s, "
    rows = [
        f"srat bench --study: {result.preset} on {result.device} ({result.device_name}), "
        f"{result.epochs} epochs per run, MPS {'on' if result.mps else 'off'}"
        + (", each K > 1 one stacked process" if result.stacked else ""),
        f"overrides: {' '.join(result.overrides) or '-'}; precision {result.precision}",
        f"{result.arch}: forward {result.forward_gflops:.4g} GFLOP/example, model FLOPs per "
        f"training example = {result.fwd_equivalents} forwards (PGD-{result.attack_steps})",
        f"peak: {share}{result.peak_source}",
        "per run: epoch 1 apart (warm-up); train/eval s = medians of the epochs after it; "
        "final s = final evaluation",
        "",
    ]
    for pack in result.packs:
        rows += [*_pack_lines(pack, result.device), ""]
    length = result.project_epochs
    rows += [
        "images/s: steady = sum over runs of examples / median train s (training only); "
        "wall = every example of every epoch / first epoch start to last epoch end",
        f"projected: one {length}-epoch run at K (its slowest run; eval.every "
        f"{result.eval_every}, robust_every {result.robust_every}; every epoch evaluated in "
        f"brackets) and the {result.column_runs}-run column, ceil({result.column_runs}/K) waves",
        f"{'K':>3} {'images/s':>10} {'wall img/s':>10} {'TFLOP/s':>8} {'share':>6} "
        f"{'speed-up':>8} {'(wall)':>7} {'run':>9} {'(every)':>9} {'column':>10}",
    ]
    for pack in result.packs:
        rows.append(
            f"{pack.per_device:>3} {pack.images_per_s:10,.1f} {pack.images_per_s_wall:10,.1f} "
            f"{pack.tflops:8.3g} {_share(pack.peak_share):>6} {_speedup(pack.speedup):>8} "
            f"{'(' + _speedup(pack.speedup_wall) + ')':>7} {_minutes(pack.projected_run_s):>9} "
            f"{'(' + _minutes(pack.projected_run_every_epoch_s) + ')':>9} "
            f"{_minutes(pack.projected_column_s):>10}"
        )
    return rows


@app.command("bench")
def bench(
    ctx: typer.Context,
    model: Annotated[
        str, typer.Option("--model", "-m", help="resnet18 | preact18 | wrn34 | small")
    ] = "resnet18",
    batch: Annotated[int, typer.Option("--batch", "-b", help="batch size")] = 128,
    device: Annotated[
        str, typer.Option("--device", "-d", help="auto | cpu | cuda | cuda:N")
    ] = "auto",
    repeats: Annotated[int, typer.Option("--repeats", "-r", help="timed repeats")] = 5,
    iters: Annotated[int, typer.Option("--iters", help="training steps per repeat")] = 3,
    warmup: Annotated[int, typer.Option("--warmup", help="untimed steps first")] = 1,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    workers: Annotated[
        int | None,
        typer.Option("--workers", help="reference DataLoader workers (default: 0 CPU, 4 CUDA)"),
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set", "-s", help="engine config field, e.g. train.precision=bf16 (repeatable)"
        ),
    ] = None,
    as_json: AsJson = False,
    study: Annotated[
        str | None,
        typer.Option(
            "--study",
            help="time whole runs instead: K runs of --preset at once on one device, for each "
            "K of a list like 1,2,4",
            rich_help_panel=_STUDY,
        ),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option("--preset", "-p", help=f"(default {_DEFAULT_PRESET})", rich_help_panel=_STUDY),
    ] = None,
    epochs: Annotated[
        int | None,
        typer.Option(
            "--epochs",
            help="epochs per run (default 3; the first is warm-up)",
            rich_help_panel=_STUDY,
        ),
    ] = None,
    peak_tflops: Annotated[
        float | None,
        typer.Option(
            "--peak-tflops",
            help="the device's peak for the share (default: the dense bf16 peak table)",
            rich_help_panel=_STUDY,
        ),
    ] = None,
    mps: Annotated[
        bool,
        typer.Option(
            "--mps", help="share the GPU through a private CUDA MPS daemon", rich_help_panel=_STUDY
        ),
    ] = False,
    stack: Annotated[
        bool,
        typer.Option(
            "--stack",
            help="each K > 1 as one process training the K seeds stacked (srat run --stack)",
            rich_help_panel=_STUDY,
        ),
    ] = False,
    home: Annotated[
        Path | None,
        typer.Option(
            "--home",
            help="keep the runs in this srat home (default: a temporary one, removed afterwards)",
            rich_help_panel=_STUDY,
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            help="seconds each K's runs may take (default 1800)",
            rich_help_panel=_STUDY,
        ),
    ] = None,
) -> None:
    """Time one PGD-10 adversarial training step: engine vs. common public code (or, with
    --study, whole runs packed K at a time on one device)."""

    def given(*names: str) -> list[str]:
        """The options among `names` typed on the command line (a default typed counts), by
        the source's name: Typer may bring its own copy of click's ParameterSource."""
        typed = [
            n for n in names if getattr(ctx.get_parameter_source(n), "name", "") == "COMMANDLINE"
        ]
        return [f"--{name.replace('_', '-')}" for name in typed]

    if study is not None:
        step_only = given("model", "batch", "repeats", "iters", "warmup", "seed", "workers")
        if step_only:
            raise SratError(
                f"{', '.join(step_only)}: one step's options, not a --study's (it runs "
                "--preset; --set changes its config)"
            )
        _study(
            study, preset, epochs, device, overrides, peak_tflops, mps, stack, home, timeout,
            as_json,
        )  # fmt: skip
        return
    study_only = given("preset", "epochs", "peak_tflops", "mps", "stack", "home", "timeout")
    if study_only:
        raise SratError(f"{', '.join(study_only)}: only with --study K,K,... (e.g. --study 1,2,4)")
    if workers is not None and workers < 0:
        raise SratError(f"--workers must be >= 0 (got {workers})")
    from srat_engine.bench.benchmark import run_benchmark

    result = run_benchmark(
        model=model,
        batch=batch,
        device=device,
        repeats=repeats,
        iters=iters,
        warmup=warmup,
        seed=seed,
        workers=workers,
        overrides=tuple(overrides or ()),
    )
    if as_json:
        typer.echo(json.dumps(result.as_dict(), indent=2))
        return
    for line in _lines(result):
        typer.echo(line)


def _study(
    counts: str,
    preset: str | None,
    epochs: int | None,
    device: str,
    overrides: list[str] | None,
    peak_tflops: float | None,
    mps: bool,
    stack: bool,
    home: Path | None,
    timeout: float | None,
    as_json: bool,
) -> None:
    """`srat bench --study`: the runs go in a temporary home unless --home names one."""
    from srat_engine.bench.study import StudyFailed, parse_per_device, run_study, study_home
    from srat_engine.runs.home import Home

    per_device = parse_per_device(counts)

    def say(line: str) -> None:  # progress on stderr: stdout stays the table or the JSON
        print(line, file=sys.stderr, flush=True)

    # what is not typed takes run_study's own defaults (the help texts repeat them)
    given = {"preset": preset, "epochs": epochs, "timeout_s": timeout}
    chosen = {name: value for name, value in given.items() if value is not None}
    # SIGTERM and SIGHUP (a `kill`, a closed SSH session) end Python without its cleanup:
    # raised instead, they stop the study's runs and remove its temporary home. Ctrl-C goes the
    # same way, not as Typer's "Aborted!" (exit 1), so it exits 130 as `srat run` does.
    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, raise_interrupted) for sig in handled}
    try:
        with study_home(Home.from_env(), home) as where:
            result = run_study(
                where,
                per_device=per_device,
                device=device,
                overrides=tuple(overrides or ()),
                peak_tflops=peak_tflops,
                mps=mps,
                stacked=stack,
                say=say,
                **chosen,
            )
    except StudyFailed as failure:  # a run failed: not bad input (exit 1, not 2)
        error_line(f"error: {' '.join(str(failure).split())}")
        raise typer.Exit(EXIT_FAILED) from None
    except RunInterrupted as stop:
        error_line(f"stopped by {stop}: the study's runs were stopped")
        raise typer.Exit(interrupted_exit(stop)) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if as_json:
        typer.echo(json.dumps({**result.as_dict(), "home_kept": home is not None}, indent=2))
        return
    for line in _study_lines(result):
        typer.echo(line)
    if home is None:
        typer.echo(f"(the runs' temporary home {result.home} has been removed; --home keeps them)")
    else:
        typer.echo(f"the runs are kept in {home} (SRAT_HOME={home} srat runs ls)")
