"""Analysis of trained runs: `srat tsne`, `srat curves`, `srat figure1`.

The numbers come from `srat_engine.analysis`; this module only draws them (plotext in the
terminal, an image file, PNG by default, for t-SNE). `srat theory` and `srat sweep` have
modules of their own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from srat_engine.errors import SratError
from srat_engine.runs.records import epoch_records, is_number
from srat_tui.cli.common import error_line, open_run
from srat_tui.render.format import inert
from srat_tui.render.termplot import Series, grouped_bars, line_plot, scatter_classes

app = typer.Typer()


@app.command("tsne")
def tsne(
    run_id: Annotated[str, typer.Argument(help="run id")],
    n_per_class: Annotated[
        int, typer.Option("--n-per-class", "-n", help="balanced test examples per class")
    ] = 100,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="image file, its format by suffix: png, pdf, svg, ... (default: <run>/tsne.png); "
            "the folder must exist",
        ),
    ] = None,
    device: Annotated[str, typer.Option("--device", "-d", help="cpu | cuda | cuda:N")] = "cpu",
    seed: Annotated[int, typer.Option("--seed", help="t-SNE random_state")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="points and labels as JSON")] = False,
) -> None:
    """t-SNE of the penultimate features of a balanced test sample (paper Figures 3 and 4)."""
    from srat_engine.analysis.tsne import figure_path, run_tsne, save_figure

    run = open_run(run_id)
    # a bad --out is refused now, not after minutes of t-SNE
    target = figure_path(out or run.path / "tsne.png")
    result = run_tsne(run, n_per_class=n_per_class, device=device, seed=seed)
    method = run.config()["resolved"]["method"]["name"]
    epoch = f"epoch {result.epoch}" if result.epoch is not None else "last checkpoint"
    title = f"t-SNE, {method}, run {run.id} ({epoch}), separability {result.separability:.3f}"
    png = save_figure(result, target, title)
    if as_json:
        typer.echo(json.dumps({**result.as_dict(), "png": str(png)}))
        return
    points = [(float(a), float(b)) for a, b in result.points]
    typer.echo(scatter_classes(points, result.labels.tolist(), result.class_names, title=title))
    typer.echo(f"separability (between/within, normalised features): {result.separability:.4f}")
    typer.echo(inert(f"saved {png}"))


CURVE_KEYS = ("std_overall", "std_under", "rob_overall", "rob_under", "separability")


@app.command("curves")
def curves(
    run_id: Annotated[str, typer.Argument(help="run id")],
    as_json: Annotated[
        bool, typer.Option("--json", help="each epoch's accuracies and separability as JSON")
    ] = False,
) -> None:
    """Accuracy and feature separability per epoch of one run."""
    run = open_run(run_id)
    # one record per epoch, a resumed run's later one, as the TUI plots them
    epochs = epoch_records(run.metrics())
    if not epochs:
        raise SratError(f"run {run.id} has no finished epoch yet")
    if as_json:
        rows = [
            {"epoch": r["epoch"], **{k: r[k] if is_number(r.get(k)) else None for k in CURVE_KEYS}}
            for r in epochs
        ]
        typer.echo(json.dumps({"run_id": run.id, "epochs": rows}, indent=2))
        return
    accuracy = []
    for key in CURVE_KEYS[:4]:
        pts = [(float(r["epoch"]), float(r[key])) for r in epochs if is_number(r.get(key))]
        if pts:
            accuracy.append(Series(key, [p[0] for p in pts], [p[1] for p in pts]))
    typer.echo(line_plot(accuracy, title=f"run {run.id}", xlabel="epoch", ylabel="accuracy %"))
    sep_points = [
        (float(r["epoch"]), float(r["separability"]))
        for r in epochs
        if is_number(r.get("separability"))
    ]
    if not sep_points:
        typer.echo("no separability recorded (runs trained before it was tracked)")
        return
    series = [Series("separability", [p[0] for p in sep_points], [p[1] for p in sep_points])]
    title = "feature separability: between / within class distance, normalised features"
    typer.echo(line_plot(series, title=title, xlabel="epoch", ylabel="B / W", height=14))


@app.command("figure1")
def figure1(
    natural_run: Annotated[str, typer.Argument(help="the naturally trained run")],
    adversarial_run: Annotated[str, typer.Argument(help="the adversarially trained run")],
    as_json: Annotated[
        bool, typer.Option("--json", help="the classes and the four bars per class as JSON")
    ] = False,
) -> None:
    """Class-wise standard and robust accuracy, natural vs adversarial (paper Figure 1)."""
    from srat_engine.analysis.sweeps import latest_classwise

    bars: dict[str, list[float]] = {}
    names: list[str] = []
    warnings: list[str] = []  # said once both runs have loaded: a damaged one is one line
    for label, run_id in (("natural", natural_run), ("adversarial", adversarial_run)):
        run = open_run(run_id)
        latest = latest_classwise(run.metrics())
        if latest.get("std_class") is None:
            raise SratError(f"run {run.id} has no class-wise accuracy yet")
        run_names = [str(n) for n in run.config()["resolved"]["class_names"]]
        if names and run_names != names:
            raise SratError(f"runs {natural_run} and {adversarial_run} have different classes")
        names = run_names
        method = run.config().get("resolved", {}).get("method", {})
        if isinstance(method.get("adversarial"), bool) and method["adversarial"] != (
            label == "adversarial"
        ):  # two runs given the wrong way round draw each under the other's name
            kind = "adversarially" if method["adversarial"] else "on clean inputs"
            warnings.append(f"warning: run {run.id} ({method.get('name')}) trains {kind}; it is "
                            f"drawn as the {label} run")  # fmt: skip
        bars[f"{label} std"] = [float(v) for v in latest["std_class"]]
        if latest.get("rob_class") is not None:
            bars[f"{label} rob"] = [float(v) for v in latest["rob_class"]]
    for warning in warnings:
        error_line(warning)
    if as_json:
        typer.echo(json.dumps({"classes": names, "bars": bars}, indent=2))
        return
    title = "class-wise accuracy (%): natural vs adversarial training"
    typer.echo(grouped_bars(names, bars, title=title, ylabel="accuracy %"))
