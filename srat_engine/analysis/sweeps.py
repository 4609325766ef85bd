"""Sweeps: one detached run per value of a reweighting weight or of lambda (Figures 2, 5, 6).

`plan_sweep` is pure: which configurations (as `--set` overrides on a preset) a sweep queues.
`launch_sweep` validates every one of them before creating any run, creates and launches
them through the engine's launcher, tags each run `sweep-<id>` and writes a manifest
`<home>/sweeps/<id>.json` (kind, values, run ids), so `srat sweep plot` finds them together.

Reweighting sweep. The weight of the under-represented classes (the least frequent half, as
in the paper's "Under" column; Figure 5 weights the five tail classes of Step-100, Figure 2
the one tail class of a binary set) takes each value while the others keep weight 1, via
`loss.class_weights`, which replaces the class-balanced weights wherever a method reweights.
Arms:
  * adversarial: the preset's method if it reweights (CB, DRCB, SRAT: the weights follow its
    schedule, deferred for DRCB/SRAT as in Figure 5); else its class-balanced counterpart
    (CE -> CB-Reweight, Focal -> CB-Focal, LDAM -> CB-LDAM), weights from the first epoch as in
    Figure 2;
  * natural (`natural_too`): Natural-CB, natural training with the same weights from the first
    epoch (Figure 2a).
Lambda sweep: `loss.sep_lambda` over the values, for SRAT methods only (Figure 6).
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from srat_engine.config.methods import compose_method, get_method
from srat_engine.errors import SratError
from srat_engine.fsutil import atomic_write_json, read_json
from srat_engine.runs.rundir import is_valid_run_id

if TYPE_CHECKING:
    from srat_engine.jobs.slurm_options import SlurmOptions
    from srat_engine.runs.home import Home

SweepKind = Literal["reweight", "lambda"]
KINDS: tuple[str, ...] = ("reweight", "lambda")
NATURAL_REWEIGHTED = "Natural-CB"


@dataclass(frozen=True)
class SweepPoint:
    """One run of a sweep: its arm, the swept value and the overrides that make it."""

    arm: str  # "adversarial" or "natural"
    value: float
    overrides: tuple[str, ...]


def _number(value: float) -> str:
    """A TOML number that reads back as the same float (no '1e+02' surprises)."""
    return repr(float(value))


def reweight_overrides(
    method: str, value: float, num_classes: int, under_classes: list[int]
) -> tuple[str, ...]:
    weights = [value if cls in under_classes else 1.0 for cls in range(num_classes)]
    return (f"method={method}", f"loss.class_weights=[{', '.join(map(_number, weights))}]")


def adversarial_reweighted_method(method: str) -> str:
    """The method of the adversarial arm: the base if it reweights, else its CB counterpart."""
    spec = get_method(method)
    if spec.gair:
        raise SratError(f"{spec.name} has no reweighted counterpart to sweep weights with")
    if spec.adversarial and spec.reweight != "none":
        return spec.name
    return compose_method("cb", spec.loss)


def plan_sweep(
    kind: str,
    values: list[float],
    *,
    method: str,
    num_classes: int,
    under_classes: list[int],
    natural_too: bool = False,
) -> list[SweepPoint]:
    """The runs a sweep queues, in launch order (adversarial arm first, then natural).

    `method`, `num_classes` and `under_classes` describe the base configuration (its resolved
    block); nothing is read or created here.
    """
    if kind not in KINDS:
        raise SratError(f"unknown sweep kind {kind!r} (known: {', '.join(KINDS)})")
    if not values:
        raise SratError("a sweep needs at least one value")
    if len(set(values)) != len(values):
        raise SratError(f"sweep values repeat: {', '.join(f'{v:g}' for v in values)}")
    if any(v < 0 for v in values):
        raise SratError("sweep values must be >= 0")
    if kind == "lambda":
        if natural_too:
            raise SratError("--natural-too is for reweighting sweeps: lambda acts in SRAT only")
        spec = get_method(method)
        if not spec.separation:
            raise SratError(
                f"lambda only acts in SRAT methods; {spec.name} has no separation loss "
                "(use an srat preset, e.g. exp100-ldam)"
            )
        return [
            SweepPoint("adversarial", float(v), (f"loss.sep_lambda={_number(v)}",)) for v in values
        ]
    if not under_classes:
        raise SratError("the base configuration has no under-represented classes to reweight")
    arms = [("adversarial", adversarial_reweighted_method(method))]
    if natural_too:
        arms.append(("natural", NATURAL_REWEIGHTED))
    return [
        SweepPoint(arm, float(v), reweight_overrides(name, v, num_classes, under_classes))
        for arm, name in arms
        for v in values
    ]


# --------------------------------------------------------------------------- launching


def validate_sweep_id(sweep_id: str) -> str:
    """Sweep ids name files: the run-id rule (no `/`, `..` or spaces) applies."""
    if not is_valid_run_id(sweep_id):
        raise SratError(f"invalid sweep id {sweep_id!r}: use lower-case letters, digits, - and _")
    return sweep_id


def new_sweep_id(kind: str) -> str:
    return f"{kind}-{time.strftime('%y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def sweep_tag(sweep_id: str) -> str:
    return f"sweep-{sweep_id}"


@dataclass(frozen=True)
class PlannedSweep:
    sweep_id: str
    kind: str
    preset: str
    base_overrides: tuple[str, ...]
    points: list[SweepPoint]
    prepared: list[Any]  # PreparedRun per point, validated and resolved


def prepare_sweep(
    kind: str,
    values: list[float],
    *,
    preset: str,
    overrides: tuple[str, ...] = (),
    natural_too: bool = False,
    home: Home,
) -> PlannedSweep:
    """Plan and validate every run of the sweep (presets and datasets found where `home`
    says); creates nothing."""
    from srat_engine.config.prepare import load_config, prepare

    dirs, data = home.preset_dirs, home.data_dir
    base_overrides = overrides
    if kind == "reweight":
        # resolved as the method the adversarial arm trains, so that a setting of the sweep
        # (`--set loss.class_weight_scale=head` on a CE preset) is checked against CB-Reweight
        config, _ = load_config(preset=preset, overrides=overrides, preset_dirs=dirs)
        arm = adversarial_reweighted_method(config.method)
        base_overrides = (*overrides, f"method={arm}")
    base = prepare(preset=preset, overrides=base_overrides, preset_dirs=dirs, data_dir=data)
    points = plan_sweep(
        kind,
        values,
        method=base.config.method,
        num_classes=base.resolved.num_classes,
        under_classes=list(base.resolved.under_classes),
        natural_too=natural_too,
    )
    prepared = [
        prepare(
            preset=preset, overrides=(*overrides, *p.overrides), preset_dirs=dirs, data_dir=data
        )
        for p in points
    ]
    return PlannedSweep(new_sweep_id(kind), kind, preset, overrides, points, prepared)


def launch_sweep(
    planned: PlannedSweep,
    devices: list[str],
    per_device: int,
    *,
    home: Home,
    slurm: SlurmOptions | None = None,
) -> list[dict[str, Any]]:
    """Create, tag and launch every run in `home`: detached on `devices`, or with `slurm`
    options as one Slurm job array; write the manifest; return its entries."""
    from srat_engine.config.prepare import create_run
    from srat_engine.jobs.supervisor import launch_detached

    tag = sweep_tag(planned.sweep_id)
    entries: list[dict[str, Any]] = []
    created = []
    for point, prepared in zip(planned.points, planned.prepared, strict=True):
        run = create_run(prepared, home.runs)
        created.append(run)
        note = f"{planned.kind} sweep {planned.sweep_id}: {point.arm} {point.value:g}"
        run.write_meta([tag], [note])  # before launching: the launcher indexes the run with it
        entries.append({"run_id": run.id, **asdict(point), "overrides": list(point.overrides)})
        if slurm is None:
            # the manifest is rewritten after every run, so a failure part-way leaves it truthful
            write_manifest(planned, entries, home)
            entries[-1]["pid"] = launch_detached(run, devices, per_device, home=home)
    if slurm is not None:
        from srat_engine.jobs.slurm import submit_runs

        # all or nothing: a refused array removes the runs again, and no manifest is written
        jobs = {job.run_id: job.job_id for job in submit_runs(created, slurm, home=home)}
        for entry in entries:
            entry["slurm_job_id"] = jobs[entry["run_id"]]
    write_manifest(planned, entries, home)
    return entries


def write_manifest(planned: PlannedSweep, entries: list[dict[str, Any]], home: Home) -> None:
    """Write the sweep's manifest, <home>/sweeps/<id>.json (run ids, arms, values)."""
    atomic_write_json(
        home.sweeps / f"{planned.sweep_id}.json",
        {
            "sweep_id": planned.sweep_id,
            "kind": planned.kind,
            "preset": planned.preset,
            "overrides": list(planned.base_overrides),
            "runs": [
                {k: v for k, v in e.items() if k not in ("pid", "slurm_job_id")} for e in entries
            ],
        },
    )


def read_manifest(sweep_id: str, home: Home) -> dict[str, Any]:
    """The manifest of sweep `sweep_id` in `home`; SratError naming the known ones if none."""
    path = home.sweeps / f"{validate_sweep_id(sweep_id)}.json"
    try:
        doc = read_json(path)
    except FileNotFoundError:
        known = sorted(p.stem for p in home.sweeps.glob("*.json"))
        hint = f" (known: {', '.join(known)})" if known else " (no sweeps yet)"
        raise SratError(f"no sweep {sweep_id!r}{hint}") from None
    except (ValueError, json.JSONDecodeError) as err:
        raise SratError(f"sweep manifest {path} is corrupt: {err}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("runs"), list):
        raise SratError(f"sweep manifest {path} is not a sweep manifest")
    return doc


@dataclass(frozen=True)
class SweepCurvePoint:
    arm: str
    value: float
    run_id: str
    status: str
    std_class: list[float] | None
    rob_class: list[float] | None


def sweep_results(sweep_id: str, home: Home) -> tuple[dict[str, Any], list[SweepCurvePoint]]:
    """The manifest and, per run, its latest class-wise accuracies (final, else last epoch)."""
    from srat_engine.runs.liveness import reconcile
    from srat_engine.runs.rundir import RunDir

    manifest = read_manifest(sweep_id, home)
    points = []
    for entry in manifest["runs"]:
        run_id = str(entry["run_id"])
        try:
            run = RunDir.open(home.runs, run_id)
        except SratError:
            points.append(
                SweepCurvePoint(entry["arm"], entry["value"], run_id, "missing", None, None)
            )
            continue
        latest = latest_classwise(run.metrics())
        points.append(
            SweepCurvePoint(
                str(entry["arm"]),
                float(entry["value"]),
                run_id,
                reconcile(run),
                latest.get("std_class"),
                latest.get("rob_class"),
            )
        )
    return manifest, points


def latest_classwise(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The final record if there is one, else the last epoch record, its std_class and
    rob_class falling back to the last epoch that measured each (eval.every, robust_every)."""
    final = next((r for r in reversed(records) if r.get("event") == "final"), None)
    if final is not None:
        return final
    epochs = [r for r in records if r.get("event") == "epoch"]
    if not epochs:
        return {}
    last = dict(epochs[-1])
    for key in ("std_class", "rob_class"):
        if last.get(key) is None:
            measured = next((r for r in reversed(epochs) if r.get(key) is not None), None)
            if measured is not None:
                last[key] = measured[key]
    return last
