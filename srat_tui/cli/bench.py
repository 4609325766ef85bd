"""`srat bench`: the engine's PGD-AT training step against common public code, side by side."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from srat_engine.errors import SratError
from srat_tui.cli.common import AsJson

if TYPE_CHECKING:  # torch loads only when the command runs
    from srat_engine.bench.benchmark import BenchResult

app = typer.Typer()


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


@app.command("bench")
def bench(
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
) -> None:
    """Time one PGD-10 adversarial training step: engine vs. common public code."""
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
