"""`srat sweep reweight|lambda|plot|ls`: queue a sweep as detached runs and plot it class-wise."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from srat_engine.errors import SratError
from srat_engine.evaluation.metrics import class_group_mean
from srat_engine.runs.records import is_number
from srat_tui.cli.common import (
    NO_SLURM,
    AsJson,
    PerGpu,
    SlurmRequest,
    stdout_console,
    with_slurm_options,
)
from srat_tui.render.format import inert
from srat_tui.render.termplot import Series, line_plot, parse_numbers

app = typer.Typer(help="Sweeps of a reweighting weight or lambda (paper Figures 2, 5, 6).")

Overrides = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="override a field of the preset for every run"),
]
Device = Annotated[str | None, typer.Option("--device", "-d", help="cpu | cuda | cuda:N")]
Gpus = Annotated[str | None, typer.Option("--gpus", help="'all' or ids like 0,1,3")]
Slots = Annotated[int | None, typer.Option("--slots", help="with --device cpu: runs at once")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="print the planned runs, create nothing")]


def _queue(
    kind: str,
    values: list[float],
    *,
    preset: str,
    overrides: list[str] | None,
    natural_too: bool,
    device: str | None,
    gpus: str | None,
    per_gpu: int,
    slots: int | None,
    dry_run: bool,
    as_json: bool,
    slurm: SlurmRequest,
) -> None:
    from srat_engine.analysis.sweeps import launch_sweep, prepare_sweep, sweep_tag
    from srat_engine.runs.home import Home

    home = Home.from_env()
    options = slurm.options(home, local=(gpus, slots, per_gpu))
    assignments = tuple(overrides or ())
    if device is not None:
        assignments = (*assignments, f'device="{device}"')
    planned = prepare_sweep(
        kind, values, preset=preset, overrides=assignments, natural_too=natural_too, home=home
    )
    if dry_run:
        rows = [
            {"arm": p.arm, "value": p.value, "overrides": list(p.overrides)} for p in planned.points
        ]
        if as_json:
            typer.echo(json.dumps({"kind": kind, "preset": preset, "runs": rows}, indent=2))
            return
        typer.echo(f"{kind} sweep of {preset}: {len(rows)} runs (dry run: nothing was created)")
        for row in rows:
            typer.echo(f"  {row['arm']:<11} {row['value']:<8g} {' '.join(row['overrides'])}")
        return
    from srat_engine.jobs.supervisor import resolve_devices

    configured = planned.prepared[0].config.device
    if options is not None:
        from srat_engine.jobs.slurm import check_submission

        check_submission(options, [configured])
        devices, per_device = [], 1
    else:
        # on the device the sweep's config names (--device sets it), as `srat run --detach` does
        devices, per_device = resolve_devices(
            gpus=gpus, device=configured, slots=slots, per_gpu=per_gpu
        )
    entries = launch_sweep(planned, devices, per_device, home=home, slurm=options)
    if as_json:
        typer.echo(json.dumps({"sweep_id": planned.sweep_id, "runs": entries}))
        return
    where = "submitted to Slurm as one job array" if options is not None else "queued"
    typer.echo(f"sweep {planned.sweep_id}: {len(entries)} runs {where}, tagged "
               f"{sweep_tag(planned.sweep_id)}")  # fmt: skip
    for entry in entries:
        job = f"  Slurm job {entry['slurm_job_id']}" if "slurm_job_id" in entry else ""
        typer.echo(f"  {entry['run_id']}  {entry['arm']:<11} {entry['value']:g}{job}")
    typer.echo(f"follow: srat runs ls -f tag={sweep_tag(planned.sweep_id)}; "
               f"plot: srat sweep plot {planned.sweep_id}")  # fmt: skip


@app.command("reweight")
@with_slurm_options
def sweep_reweight(
    preset: Annotated[str, typer.Option("--preset", "-p", help="the base configuration")],
    weights: Annotated[
        str,
        typer.Option("--weights", help="weights of the under-represented classes, e.g. 1,10,50"),
    ],
    natural_too: Annotated[
        bool, typer.Option("--natural-too", help="also a natural-training arm (Natural-CB)")
    ] = False,
    overrides: Overrides = None,
    device: Device = None,
    gpus: Gpus = None,
    per_gpu: PerGpu = 1,
    slots: Slots = None,
    dry_run: DryRun = False,
    as_json: AsJson = False,
    slurm_request: SlurmRequest = NO_SLURM,
) -> None:
    """Queue one run per weight of the under-represented classes (others keep weight 1); with
    --backend slurm, one Slurm job array."""
    _queue(
        "reweight",
        parse_numbers(weights, "--weights"),
        preset=preset,
        overrides=overrides,
        natural_too=natural_too,
        device=device,
        gpus=gpus,
        per_gpu=per_gpu,
        slots=slots,
        dry_run=dry_run,
        as_json=as_json,
        slurm=slurm_request,
    )


@app.command("lambda")
@with_slurm_options
def sweep_lambda(
    preset: Annotated[str, typer.Option("--preset", "-p", help="an SRAT configuration")],
    lambdas: Annotated[str, typer.Option("--lambdas", help="values of lambda, e.g. 0,0.5,1,2")],
    overrides: Overrides = None,
    device: Device = None,
    gpus: Gpus = None,
    per_gpu: PerGpu = 1,
    slots: Slots = None,
    dry_run: DryRun = False,
    as_json: AsJson = False,
    slurm_request: SlurmRequest = NO_SLURM,
) -> None:
    """Queue one run per lambda (the separation loss weight of Eq. 7); with --backend slurm,
    one Slurm job array."""
    _queue(
        "lambda",
        parse_numbers(lambdas, "--lambdas"),
        preset=preset,
        overrides=overrides,
        natural_too=False,
        device=device,
        gpus=gpus,
        per_gpu=per_gpu,
        slots=slots,
        dry_run=dry_run,
        as_json=as_json,
        slurm=slurm_request,
    )


def _class_info(manifest: dict[str, Any], runs_root: Path) -> tuple[list[str], list[int]]:
    """Class names and under-represented classes, from the sweep's first readable run."""
    from srat_engine.runs.rundir import RunDir

    for entry in manifest["runs"]:
        try:
            resolved = RunDir.open(runs_root, str(entry["run_id"])).config()["resolved"]
        except (SratError, OSError, KeyError, ValueError):
            continue
        return [str(n) for n in resolved["class_names"]], list(resolved["under_classes"])
    raise SratError(f"no run of sweep {manifest['sweep_id']} can be read")


@app.command("plot")
def sweep_plot(
    sweep_id: Annotated[str, typer.Argument(help="the sweep id printed when it was queued")],
    per_class: Annotated[
        bool, typer.Option("--per-class", help="one line per class, not group means")
    ] = False,
    metric: Annotated[
        str,
        typer.Option(
            "--metric",
            help="std or rob: the per-class lines' accuracy and the table's (the group "
            "means draw both)",
        ),
    ] = "std",
    as_json: AsJson = False,
) -> None:
    """Class-wise accuracy against the swept value, one plot per arm (natural, adversarial)."""
    from srat_engine.analysis.sweeps import sweep_results
    from srat_engine.runs.home import Home

    if metric not in ("std", "rob"):
        raise SratError(f"--metric is std or rob (got {metric!r})")
    home = Home.from_env()
    manifest, points = sweep_results(sweep_id, home)
    names, under = _class_info(manifest, home.runs)
    well = [c for c in range(len(names)) if c not in under]
    if as_json:
        rows = [asdict(p) for p in points]
        doc = {"manifest": manifest, "class_names": names, "under_classes": under, "runs": rows}
        typer.echo(json.dumps(doc, indent=2))
        return
    console = stdout_console()
    xlabel = (
        "weight of the under-represented classes" if manifest["kind"] == "reweight" else "lambda"
    )
    for arm in dict.fromkeys(p.arm for p in points):
        mine = sorted((p for p in points if p.arm == arm), key=lambda p: p.value)
        done = [p for p in mine if getattr(p, f"{metric}_class") is not None]
        waiting = [f"{p.run_id} ({p.status})" for p in mine if p not in done]
        if waiting:
            console.print(f"{arm}: no class-wise {metric} accuracy yet: {', '.join(waiting)}")
        if not done:
            continue
        xs = [p.value for p in done]
        series = []
        if per_class:
            for c, name in enumerate(names):
                ys = [getattr(p, f"{metric}_class")[c] for p in done]
                series.append(Series(f"{name}{' (under)' if c in under else ''}", xs, ys))
        else:
            for label, group in (("well-represented", well), ("under-represented", under)):
                for m in ("std", "rob"):
                    ys = [class_group_mean(getattr(p, f"{m}_class"), group) for p in done]
                    if all(y is not None for y in ys) and group:
                        series.append(Series(f"{m} {label}", xs, [float(y) for y in ys]))
        typer.echo(
            line_plot(
                series,
                title=f"sweep {manifest['sweep_id']}: {arm} ({manifest['preset']})",
                xlabel=xlabel,
                ylabel="accuracy %",
            )
        )
        for p in done:  # the class-wise numbers behind the plot, in the metric asked for
            values = getattr(p, f"{metric}_class") or []
            cells = " ".join(f"{v:5.1f}" if is_number(v) else "    -" for v in values)
            console.print(f"  {p.value:<8g} {p.run_id}  {metric} {cells}", markup=False)


@app.command("ls")
def sweep_ls(as_json: AsJson = False) -> None:
    """The sweeps of this srat home, newest last."""
    from srat_engine.analysis.sweeps import read_manifest
    from srat_engine.runs.home import Home

    home = Home.from_env()
    docs = []
    for sweep_id in sorted(p.stem for p in home.sweeps.glob("*.json")):
        try:
            docs.append(read_manifest(sweep_id, home))
        except SratError as err:  # one damaged manifest hides no other sweep
            typer.echo(inert(f"warning: {err}"), err=True)
    if as_json:
        typer.echo(json.dumps(docs, indent=2))
        return
    if not docs:  # as `srat runs ls` says "no runs"
        typer.echo("no sweeps (srat sweep reweight|lambda --preset P ... starts one)")
    for doc in docs:
        values = ", ".join(f"{r['arm'][:3]} {r['value']:g}" for r in doc["runs"])
        typer.echo(f"{doc['sweep_id']}  {doc['preset']}  {len(doc['runs'])} runs: {values}")
