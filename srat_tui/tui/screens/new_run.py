"""Launch runs from a form: a preset to start from, the fields people change most, and a live
check of the result through the engine (the same `prepare` as `srat run`).

Every edit is validated off the UI thread; the engine's one-line message shows under the form
and Launch stays disabled until the config is valid. Counts, the method and the cost come from
the engine's resolved config, never from the form. The backend decides where the runs go:
`local` launches detached runs on this machine's slots (the devices field), `slurm` submits
them as sbatch jobs (partition, time limit, GPUs per run; unset ones from the home's
config.toml), validated and checked against the cluster (`srat run --backend slurm`'s checks)
before anything is created.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime, timezone
from fractions import Fraction
from typing import Any, ClassVar, get_args

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.reactive import reactive, var
from textual.screen import Screen
from textual.widgets import Button, Header, Input, Label, Select, Static
from textual.worker import get_current_worker

from srat_engine.config.methods import (
    PAPER_METHODS,
    SCHEMES,
    LossName,
    MethodSpec,
    compose_method,
    get_method,
)
from srat_engine.config.prepare import PreparedRun, create_run, prepare
from srat_engine.config.presets import describe, list_presets
from srat_engine.config.schema import DataConfig, ReatConfig, RunConfig
from srat_engine.config.seeds import parse_seeds, seed_override
from srat_engine.config.stacking import check_stackable
from srat_engine.devices import parse_device, parse_gpu_ids
from srat_engine.errors import SratError
from srat_engine.jobs.forecast import LaunchOutlook, launch_outlook, planned_run
from srat_engine.jobs.slurm import SlurmSubmission, check_submission, create_and_submit
from srat_engine.jobs.slurm_options import DEFAULT_TIME, SlurmOptions, load_defaults, slurm_options
from srat_engine.jobs.supervisor import launch_detached, launch_stack, resolve_devices
from srat_engine.runs.home import Home
from srat_tui.render.format import data_text, inert, inert_text
from srat_tui.render.run import (
    evaluation_cadence,
    like_runs,
    schedule_event,
    time_line,
    workload_line,
)
from srat_tui.tui.context import AppContext, app_context
from srat_tui.tui.messages import FormChecked, LaunchFailed, LaunchFinished, PresetLoaded
from srat_tui.tui.widgets.confirm import ConfirmModal
from srat_tui.tui.widgets.footer import SratFooter

DEFAULT_PRESET = "demo"
LOSSES: tuple[str, ...] = get_args(LossName)
DATASETS: tuple[str, ...] = get_args(DataConfig.model_fields["dataset"].annotation)
IMBALANCES: tuple[str, ...] = get_args(DataConfig.model_fields["imbalance"].annotation)
TFA_MODES: tuple[str, ...] = get_args(ReatConfig.model_fields["tfa_mode"].annotation)
BACKENDS: tuple[str, ...] = ("local", "slurm")
SLURM_FIELDS = ("partition", "time", "gpus_per_run")  # slurm_options' names
# Where the runs go, not what they are: no preset sets these, so choosing another keeps them.
LAUNCH_FIELDS = ("backend", "per_device", "stack", *SLURM_FIELDS)
_BAR_WIDTH = 30


def _method_parts() -> dict[str, tuple[str, str]]:
    """Method name -> (scheme, loss), inverted from the engine's own composition table."""
    parts: dict[str, tuple[str, str]] = {}
    for scheme in SCHEMES:
        for loss in LOSSES:
            try:
                parts[compose_method(scheme, loss)] = (scheme, loss)
            except SratError:
                continue  # e.g. gairat exists with CE only
    return parts


METHOD_PARTS = _method_parts()

# A scheme's own fields carry one of these CSS classes; each is shown while the chosen scheme
# has a method that trains with it (the engine's `MethodSpec`, so the form cannot disagree).
SCHEME_FIELDS: dict[str, Callable[[MethodSpec], bool]] = {
    "-sep": lambda spec: spec.separation,  # loss.sep_lambda and loss.sep_tau: SRAT's L_sep
    "-trades": lambda spec: spec.objective in ("trades", "pgd-kl"),  # loss.trades_beta's KL
    "-bsl": lambda spec: spec.prior_shift,  # loss.prior_tau
    "-awp": lambda spec: spec.awp,
    "-taet": lambda spec: spec.objective == "taet",
    "-reat": lambda spec: spec.objective == "reat",
    "-robal": lambda spec: spec.loss == "robal",
}
# The SRAT paper's schemes (its tables' methods) keep its protocol, one budget for every
# class: with them the class-wise budget switch shows only while it is on (a preset's);
# `attack.class_budget=true` in the extra overrides still works with any method.
PAPER_SCHEMES = frozenset(METHOD_PARTS[name][0] for name in PAPER_METHODS)


def scheme_field_classes(scheme: str, class_budget: bool) -> frozenset[str]:
    """The CSS classes of the fields the form shows for `scheme`: its methods' own fields
    (`SCHEME_FIELDS`; lambda and tau only where a method adds the separation loss), `-budget`
    (the class-wise budget switch) for an adversarial scheme beyond the paper's or while the
    switch is on, and `-budget-on` (alpha, warm-up) while on."""
    specs = [get_method(name) for name, (s, _) in METHOD_PARTS.items() if s == scheme]
    shown = {css for css, uses in SCHEME_FIELDS.items() if any(map(uses, specs))}
    adversarial = any(spec.adversarial for spec in specs)
    if class_budget or (adversarial and scheme not in PAPER_SCHEMES):
        shown.add("-budget")
    if class_budget:
        shown.add("-budget-on")
    return frozenset(shown)


@dataclass(frozen=True)
class FormValues:
    """The form as typed: strings, parsed only by the engine (and seeds/devices here)."""

    dataset: str = ""
    imbalance: str = ""
    ratio: str = ""
    loss: str = ""
    scheme: str = ""
    sep_lambda: str = ""
    sep_tau: str = ""
    epochs: str = ""
    eps: str = ""
    devices: str = ""
    seeds: str = ""
    extra: str = ""
    backend: str = "local"
    partition: str = ""
    time: str = ""
    gpus_per_run: str = ""
    trades_beta: str = ""  # a scheme's own fields, last: tests build FormValues positionally
    prior_tau: str = ""
    awp_gamma: str = ""
    class_budget: str = ""  # "true" | "false", as the engine parses a bool
    budget_alpha: str = ""
    budget_warmup: str = ""
    taet_stage1_epochs: str = ""
    reat_tfa_weight: str = ""
    reat_tfa_mode: str = ""
    robal_scale: str = ""
    robal_gamma: str = ""
    robal_margin: str = ""
    robal_tau_m: str = ""
    robal_tau_b: str = ""
    robal_tau_p: str = ""
    per_device: str = ""  # runs at once on each device (local): --per-gpu, or --slots on a CPU
    stack: str = ""  # "true": the seeds as one stacked process (`srat run --stack`)
    eval_eps: str = ""  # empty: evaluation attacks with `eps` too


def format_budget(value: float) -> str:
    """8/255 as papers write it when the value is one, else the plain number."""
    fraction = Fraction(value).limit_denominator(255)
    if fraction.denominator == 255 and abs(float(fraction) - value) < 1e-12:
        return f"{fraction.numerator}/255"
    return f"{value:g}"


def form_values(config: RunConfig) -> FormValues:
    """What the form shows for a validated config (a preset before any edit)."""
    scheme, loss = METHOD_PARTS.get(config.method, ("", ""))
    return FormValues(
        dataset=config.data.dataset,
        imbalance=config.data.imbalance,
        ratio=f"{config.data.ratio:g}",
        loss=loss,
        scheme=scheme,
        sep_lambda=f"{config.loss.sep_lambda:g}",
        sep_tau=f"{config.loss.sep_tau:g}",
        trades_beta=f"{config.loss.trades_beta:g}",
        prior_tau=f"{config.loss.prior_tau:g}",
        awp_gamma=f"{config.awp.gamma:g}",
        class_budget="true" if config.attack.class_budget else "false",
        budget_alpha=f"{config.attack.budget_alpha:g}",
        budget_warmup=str(config.attack.budget_warmup),
        taet_stage1_epochs=str(config.taet.stage1_epochs),
        reat_tfa_weight=f"{config.reat.tfa_weight:g}",
        reat_tfa_mode=config.reat.tfa_mode,
        robal_scale=f"{config.robal.scale:g}",
        robal_gamma=f"{config.robal.gamma:g}",
        robal_margin=f"{config.robal.margin:g}",
        robal_tau_m=f"{config.robal.tau_m:g}",
        robal_tau_b=f"{config.robal.tau_b:g}",
        robal_tau_p=f"{config.robal.tau_p:g}",
        epochs=str(config.train.epochs),
        eps=format_budget(config.attack.eps),
        eval_eps="" if config.eval.eps == config.attack.eps else format_budget(config.eval.eps),
        devices=config.device,
        seeds=str(config.seed),
        extra="",
    )


@dataclass(frozen=True)
class DeviceChoice:
    """How the devices field maps onto `resolve_devices` and the config's `device`."""

    gpus: str | None = None
    device: str | None = None
    slots: int | None = None
    config_device: str | None = None  # a `device=` override, as `srat run --device` adds


def parse_runs_per_device(text: str) -> int:
    """The runs-per-device field: how many runs train at once on each device (`srat run
    --per-gpu K`, or `--slots K` on the CPU); empty = 1. SratError for anything but a whole
    number >= 1."""
    value = text.strip()
    if not value:
        return 1
    if not (value.isascii() and value.isdigit()) or int(value) < 1:
        raise SratError(f"runs per device is a whole number >= 1 (got {value!r})")
    return int(value)


def parse_devices(text: str) -> DeviceChoice:
    """auto | cpu | cuda | cuda:N | all | GPU ids like 0,1, in the engine's syntax."""
    value = text.strip().lower()
    if value in ("", "auto"):
        return DeviceChoice()
    try:
        parse_gpu_ids(value)
    except SratError:
        device = str(parse_device(value))  # neither: the device syntax's message
    else:
        return DeviceChoice(gpus=value)
    if device == "cpu":
        return DeviceChoice(device="cpu", slots=1, config_device="cpu")
    return DeviceChoice(device=device, config_device=device)


# Form fields that become one `--set key=value` each when edited, in the order they are set.
_DATA_FIELDS = {"dataset": "data.dataset", "imbalance": "data.imbalance", "ratio": "data.ratio"}
_METHOD_FIELDS = {
    "sep_lambda": "loss.sep_lambda", "sep_tau": "loss.sep_tau",
    "trades_beta": "loss.trades_beta", "prior_tau": "loss.prior_tau", "awp_gamma": "awp.gamma",
    "taet_stage1_epochs": "taet.stage1_epochs",
    "reat_tfa_weight": "reat.tfa_weight", "reat_tfa_mode": "reat.tfa_mode",
    "robal_scale": "robal.scale", "robal_gamma": "robal.gamma", "robal_margin": "robal.margin",
    "robal_tau_m": "robal.tau_m", "robal_tau_b": "robal.tau_b", "robal_tau_p": "robal.tau_p",
    "class_budget": "attack.class_budget", "budget_alpha": "attack.budget_alpha",
    "budget_warmup": "attack.budget_warmup",
    "epochs": "train.epochs",
}  # fmt: skip
METHOD_KEY = "method"
DEVICE_KEY = "device"
SEED_KEY = seed_override(0).partition("=")[0]  # the engine's own assignment's key
# Every config key a form field sets, with the fields that decide it, in the order of their
# `--set`s: the one table `form_overrides` builds the form's overrides from and `owned_keys`
# the keys the extra overrides may not name (else two values for one key, one of them lost).
FORM_KEYS: dict[str, tuple[str, ...]] = {
    **{key: (name,) for name, key in _DATA_FIELDS.items()},
    METHOD_KEY: ("scheme", "loss"),
    **{key: (name,) for name, key in _METHOD_FIELDS.items()},
    # one budget for training and evaluation, as in the paper's protocol, unless the eval eps
    # field gives evaluation its own
    "attack.eps": ("eps",),
    "eval.eps": ("eps", "eval_eps"),
    DEVICE_KEY: ("devices",),
    SEED_KEY: ("seeds",),  # set per run by `check_form` and the launch, not here
}


def owned_keys(values: FormValues) -> tuple[str, ...]:
    """The config keys the form's own fields set for `values`, in `FORM_KEYS`' order. On
    Slurm the devices field is off (Slurm allocates the GPUs), so `device` is left to the
    extra overrides there (`device=cpu` for a CPU job)."""
    return tuple(key for key in FORM_KEYS if not (key == DEVICE_KEY and on_slurm(values)))


def _form_value(key: str, values: FormValues, base: FormValues) -> str | None:
    """The value the form gives `key`, or None where it keeps the preset's: only changed
    fields become overrides. eval.eps is the eval eps field's, or eps's while that is empty
    (a preset whose evaluation budget differs from its training budget fills it in)."""
    if key == SEED_KEY:
        return None  # one run per seed: each run's own override
    if key == DEVICE_KEY:  # devices schedule this machine's slots (`parse_devices`)
        device = parse_devices(values.devices).config_device
        return None if device in (None, base.devices.strip().lower()) else f'"{device}"'
    names = FORM_KEYS[key]
    if all(getattr(values, name).strip() == getattr(base, name).strip() for name in names):
        return None
    if key == METHOD_KEY:
        return compose_method(values.scheme, values.loss)
    if key == "eval.eps":
        return values.eval_eps.strip() or values.eps.strip()
    (name,) = names
    return getattr(values, name).strip()


def check_extra(assignment: str, owned: Sequence[str]) -> None:
    """SratError when an extra override sets a key that a form field sets (`owned_keys`), or a
    whole section holding one (`train={...}` replaces train.epochs): one value per key, and
    the field shows it, so the cost and the schedule never disagree with the form."""
    key = assignment.partition("=")[0].strip()
    for own in owned:
        if key == own:
            raise SratError(f"extra overrides: {own} has its own field: set it there")
        if own.startswith(f"{key}."):
            what = f"{key} would replace {own}, which has its own field"
            raise SratError(f"extra overrides: {what}: set it there")


def form_overrides(values: FormValues, base: FormValues) -> tuple[str, ...]:
    """`--set` assignments for the fields that differ from the preset (`FORM_KEYS`), then
    the extra ones.

    Raises SratError for input the engine cannot even be asked about (a scheme/loss pair with
    no method, unbalanced quotes) and for an extra override of a key with its own field.
    """
    owned = owned_keys(values)
    out: list[str] = []
    for key in owned:
        value = _form_value(key, values, base)
        if value is not None:
            out.append(f"{key}={value}")
    try:
        extra = shlex.split(values.extra)
    except ValueError as err:
        raise SratError(f"extra overrides: {err}") from None
    for assignment in extra:
        if "=" not in assignment:
            raise SratError(f"extra overrides: expected section.key=value (got {assignment!r})")
        check_extra(assignment, owned)
        out.append(assignment)
    return tuple(out)


def on_slurm(values: FormValues) -> bool:
    return values.backend == "slurm"


def slurm_overrides(values: FormValues) -> dict[str, Any]:
    """The Slurm fields as `slurm_options` overrides: an empty field is None (the home's
    config.toml default, else Slurm's); the engine parses and checks every value."""
    return {name: getattr(values, name).strip() or None for name in SLURM_FIELDS}


def slurm_placeholders(defaults: dict[str, Any]) -> dict[str, str]:
    """What the empty Slurm fields say they default to: the `[backend.slurm]` table of the
    home's config.toml (`load_defaults`) where it sets the value, else Slurm's own default or
    srat's `DEFAULT_TIME`."""

    def given(key: str) -> str | None:
        value = defaults.get(key)
        return None if value is None else inert(str(value))

    partition, time, gpus = given("partition"), given("time"), given("gpus_per_run")
    return {
        "partition": f"{partition} (config.toml)" if partition else "the cluster's default",
        "time": f"{time} (config.toml)" if time else f"{DEFAULT_TIME}, or e.g. 90, 1-12",
        "gpus_per_run": f"{gpus} (config.toml)" if gpus else "1, 0 for a cpu run",
    }


def check_slurm(values: FormValues, config_device: str, home: Home) -> SlurmOptions:
    """The Slurm options the form asks for, checked as `srat run --backend slurm` checks them
    before creating anything: valid values, sbatch here, a partition this cluster has, and a
    GPU for a run whose device needs one. SratError with the first problem."""
    options = slurm_options(home.config_file, slurm_overrides(values))
    check_submission(options, [config_device])
    return options


@dataclass(frozen=True)
class Validation:
    """One check of the form through the engine; `error` set means Launch is off."""

    generation: int
    preset: str | None
    values: FormValues
    overrides: tuple[str, ...] = ()
    prepared: PreparedRun | None = None
    seeds: tuple[int, ...] = ()
    devices: tuple[str, ...] = ()
    per_device: int = 1
    stack: bool = False  # the seeds train as one stack (`config.stacking`): one slot or job
    slurm: SlurmOptions | None = None  # set: the runs go to Slurm with these options
    error: str | None = None
    # launched now, behind the local queue (`jobs.forecast.launch_outlook`), as of checked_at
    outlook: LaunchOutlook | None = None
    like: str = ""
    checked_at: datetime | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.prepared is not None


def check_form(
    generation: int,
    preset: str,
    values: FormValues,
    base: FormValues,
    home: Home,
    now: datetime | None = None,
) -> Validation:
    """Everything Launch needs (presets and datasets found where `home` says), or the first
    problem as one line, and when the runs would train if launched at `now` (default: the
    clock). Never raises."""
    result = Validation(generation, preset, values)
    try:
        overrides = form_overrides(values, base)
        result = replace(result, overrides=overrides)
        seed_error: str | None = None
        try:
            seeds = parse_seeds(values.seeds)
        except SratError as err:
            seed_error, seeds = str(err), []
        first = [seed_override(seeds[0])] if seeds and values.seeds != base.seeds else []
        # the config is checked even when the seeds are not, so its message comes first
        prepared = prepare(
            preset=preset,
            overrides=(*overrides, *first),
            preset_dirs=home.preset_dirs,
            data_dir=home.data_dir,
        )
        if seed_error is not None:
            return replace(result, error=seed_error)
        prepared.check_data()  # a launch would refuse it: say so before
        stack = values.stack == "true"
        if stack:
            if len(seeds) < 2:
                raise SratError("stack seeds: give two or more seeds (e.g. 0,1,2)")
            configs = [prepared.config.model_copy(update={"seed": seed}) for seed in seeds]
            check_stackable(configs)
        if on_slurm(values):
            options = check_slurm(values, prepared.config.device, home)
            return replace(
                result, prepared=prepared, seeds=tuple(seeds), slurm=options, stack=stack
            )
        choice = parse_devices(values.devices)
        at_once = parse_runs_per_device(values.per_device)
        devices, per_device = resolve_devices(
            gpus=choice.gpus, device=choice.device, slots=at_once, per_gpu=at_once
        )
    except SratError as err:
        return replace(result, error=str(err))
    except Exception as err:  # a form must never take the app down
        return replace(result, error=f"{type(err).__name__}: {err}")
    checked = replace(
        result,
        prepared=prepared,
        seeds=tuple(seeds),
        devices=tuple(devices),
        per_device=per_device,
        stack=stack,
    )
    return with_outlook(checked, home, now or datetime.now(timezone.utc))


def with_outlook(validation: Validation, home: Home, now: datetime) -> Validation:
    """`validation` with when its runs would train, launched now behind the home's local
    queue (`jobs.forecast.launch_outlook`; the index as the runs screen keeps it fresh). An
    unreadable index or queue leaves the outlook out: the form still launches."""
    assert validation.prepared is not None
    # a stack waits for one slot and trains its seeds together: one planned run, the stack's
    size = len(validation.seeds) if validation.stack else 1
    plan = planned_run(validation.prepared, validation.devices, validation.per_device, size)
    planned = [plan] * (1 if validation.stack else max(1, len(validation.seeds)))
    try:
        outlook = launch_outlook(planned, home.slots, home.index.all(), now)
    except (SratError, OSError):
        return validation
    return replace(validation, outlook=outlook, like=like_runs(planned), checked_at=now)


def _prepare_seeds(validation: Validation, preset: str, home: Home) -> list[PreparedRun]:
    return [
        prepare(
            preset=preset,
            overrides=(*validation.overrides, seed_override(seed)),
            preset_dirs=home.preset_dirs,
            data_dir=home.data_dir,
        )
        for seed in validation.seeds
    ]


def launch_runs(validation: Validation, preset: str, context: AppContext) -> list[str]:
    """Create and start one detached run per seed (or, stacked, one worker for them all);
    every seed is validated before any run directory is created, as `srat run --detach`
    does."""
    home = context.home
    prepared = _prepare_seeds(validation, preset, home)
    if validation.stack:
        runs = [create_run(item, context.runs_root) for item in prepared]
        launch_stack(runs, list(validation.devices), validation.per_device, home=home)
        return [run.id for run in runs]
    launched: list[str] = []
    for item in prepared:
        run = create_run(item, context.runs_root)
        launch_detached(run, list(validation.devices), validation.per_device, home=home)
        launched.append(run.id)
    return launched


def submit_to_slurm(
    validation: Validation, preset: str, context: AppContext
) -> list[SlurmSubmission]:
    """One Slurm job per seed (one job array for several), or with stack seeds one job for
    them all, as `srat run --backend slurm [--stack]` submits them: every seed validated and
    the cluster checked again before any run directory is created; nothing is left behind
    when a creation or the submission fails."""
    options = validation.slurm
    assert options is not None
    home = context.home
    stack_size = len(validation.seeds) if validation.stack else 1
    # the cluster may have changed since the form was checked: create_and_submit checks again
    prepared = _prepare_seeds(validation, preset, home)
    return create_and_submit(prepared, options, home=home, stack_size=stack_size)


def command_line(preset: str, validation: Validation) -> str:
    """The `srat run` that launches the same runs, for notes and scripts."""
    parts = ["srat", "run", "--preset", preset]
    options = validation.slurm
    # the devices field is the local backend's (hidden for Slurm, so not parsed there)
    choice = parse_devices(validation.values.devices) if options is None else None
    # `--device D` sets the config's device too (`DeviceChoice.config_device`): said once
    said_by_option = choice is not None and choice.device is not None
    for assignment in validation.overrides:
        if said_by_option and assignment.partition("=")[0].strip() == DEVICE_KEY:
            continue
        parts += ["--set", assignment]
    if validation.stack:
        parts += ["--seeds", ",".join(map(str, validation.seeds)), "--stack"]
    elif validation.seeds:
        parts += ["--set", seed_override(validation.seeds[0])]
    if options is not None:
        # the options as the engine resolved them (the home's config.toml filled the blanks)
        parts += ["--backend", "slurm"]
        if options.partition is not None:
            parts += ["--partition", options.partition]
        parts += ["--time", options.time]
        if options.gpus_per_run is not None:
            parts += ["--gpus-per-run", str(options.gpus_per_run)]
    elif choice is not None:  # the local backend
        parts.append("--detach")
        if choice.gpus is not None:
            parts += ["--gpus", choice.gpus]
        elif choice.device is not None:
            parts += ["--device", choice.device]
        if validation.per_device > 1:
            packing = "--slots" if validation.devices == ("cpu",) else "--per-gpu"
            parts += [packing, str(validation.per_device)]
    text = shlex.join(parts)
    if len(validation.seeds) > 1 and not validation.stack:
        text += f"   (once per seed: {', '.join(map(str, validation.seeds))})"
    return text


# -- renderables -------------------------------------------------------------------------------


def counts_chart(prepared: PreparedRun) -> RenderableType:
    """Per-class train counts as horizontal bars; under-represented classes marked."""
    resolved = prepared.resolved
    data = prepared.config.data
    counts = resolved.class_counts
    largest = max(counts) if counts else 0
    under = set(resolved.under_classes)
    table = Table.grid(padding=(0, 1))
    table.add_column(justify="right", no_wrap=True)
    table.add_column(no_wrap=True)
    table.add_column(justify="right", no_wrap=True)
    table.add_column(no_wrap=True)
    for cls, (name, count) in enumerate(zip(resolved.class_names, counts, strict=True)):
        width = round(count * _BAR_WIDTH / largest) if largest else 0
        style = "dark_orange" if cls in under else "dodger_blue2"
        bar = Text("█" * max(width, 1 if count else 0), style=style)
        mark = Text("*", style="bold dark_orange") if cls in under else ""
        table.add_row(inert_text(name), bar, f"{count:,}", mark)
    title = Text.assemble(("train examples per class", "bold"), f"  {data_text(data.model_dump())}")
    caption = Text("* under-represented (the least frequent half)", style="dim")
    return Group(title, table, caption)


def cost_lines(validation: Validation) -> RenderableType:
    """What the run computes, from the engine's count (`PreparedRun.workload`): its training
    examples and epochs, then training and evaluation in forward-pass equivalents."""
    assert validation.prepared is not None
    prepared = validation.prepared
    config, resolved = prepared.config, prepared.resolved
    attack = f"PGD-{config.attack.steps}" if resolved.method.get("adversarial", True) else "natural"
    lines = [
        Text.assemble(
            ("cost  ", "bold"),
            f"{resolved.train_size:,} training examples × {config.train.epochs} epochs, {attack}",
        )
    ]
    workload = prepared.workload  # counted once for the two lines that show it
    work = workload_line(workload)
    if work is not None:
        lines.append(Text(f"      {work}"))
    lines.append(Text(f"      eval PGD-{config.eval.steps}{evaluation_cadence(workload)}"))
    seeds = len(validation.seeds)
    if seeds > 1:
        where = "one Slurm job" if validation.slurm is not None else "one slot"
        stacked = f", stacked: one process, {where}" if validation.stack else ""
        lines.append(Text(f"      for each of {seeds} seeds (a run each{stacked})"))
    if validation.outlook is not None and validation.checked_at is not None:
        when = time_line(validation.outlook, validation.like, validation.checked_at, queued=True)
        lines.append(Text(f"      {when}"))
    lines.append(Text(""))
    lines.extend(schedule_lines(prepared))
    return Group(*lines)


def schedule_lines(prepared: PreparedRun) -> list[Text]:
    """When the learning rate drops and reweighting starts, as the engine scaled them."""
    config, resolved = prepared.config, prepared.resolved
    epochs = config.train.epochs
    # 1-based epochs, as `srat run --dry-run` prints them: the same `schedule_event`
    lr = schedule_event(f"×{config.train.lr_gamma:g}", resolved.lr_milestones, epochs)
    lines = [
        Text.assemble(
            ("model ", "bold"),
            f"{config.model.arch}, {resolved.head} head, ",
            f"batch {config.train.batch_size}, lr {config.train.lr:g}",
        ),
        Text.assemble(("lr    ", "bold"), lr),
    ]
    if resolved.reweight_epoch is not None:
        weights = schedule_event("class-balanced", [resolved.reweight_epoch], epochs)
        lines.append(Text.assemble(("weights ", "bold"), weights))
    if resolved.gair_begin_epoch is not None:
        gair = schedule_event("", [resolved.gair_begin_epoch], epochs)
        lines.append(Text.assemble(("GAIR  ", "bold"), gair))
    return lines


def method_line(prepared: PreparedRun) -> Text:
    spec = prepared.resolved.method
    text = Text.assemble(("method  ", "bold"), (str(spec["name"]), "bold green"))
    if spec.get("description"):
        text.append(f"  {spec['description']}", style="dim")
    return text


# -- the screen --------------------------------------------------------------------------------


class NewRunScreen(Screen[list[str] | None]):
    """A form that launches detached runs or submits them to Slurm; dismisses with the new
    run ids."""

    CSS_PATH = "new_run.tcss"
    # keys go to the form from the start; one focus change, not Textual's default then ours
    # (each restyles the whole form)
    AUTO_FOCUS = "#preset"
    HOLDS_EDITS: ClassVar[bool] = True  # the app's `q` does not quit from here (`SratApp`)

    HORIZONTAL_BREAKPOINTS: ClassVar[list[tuple[int, str]] | None] = [
        (0, "-narrow"),
        (120, "-wide"),
    ]

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "launch", "Launch", priority=True),
        Binding("escape", "cancel", "Cancel"),
    ]

    validation: var[Validation | None] = var(None, init=False)
    launching: reactive[bool] = reactive(False, init=False)

    def __init__(self) -> None:
        super().__init__()
        self._generation = 0
        self._base: FormValues | None = None
        self._preset_error: str | None = None
        # the preset whose values fill the form (loading or loaded): a Select.Changed that
        # names it again (Textual posts one for the initial value, after mount) reloads
        # nothing, so it cannot overwrite what was typed since
        self._preset_chosen: str | None = None
        self._footer_can_launch: bool | None = None  # what the footer's ctrl+s shows
        # the form as the chosen preset filled it: anything else is an edit escape asks about
        self._pristine: FormValues | None = None

    # -- layout ------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        presets = list(list_presets(app_context(self).home.preset_dirs))
        initial = DEFAULT_PRESET if DEFAULT_PRESET in presets else (presets[0] if presets else None)
        self._initial_preset = initial
        yield Header()
        with VerticalScroll(id="newrun-body"):
            with Grid(id="newrun-form"):
                yield Label("preset")
                yield Select(
                    [(name, name) for name in presets],
                    value=initial if initial is not None else Select.NULL,
                    allow_blank=initial is None,
                    compact=True,
                    id="preset",
                    classes="-wide-field",
                )
                yield from self._select("dataset", DATASETS)
                yield from self._select("imbalance", IMBALANCES)
                yield from self._input("ratio", "ratio K", "≥ 1, e.g. 10 or 100")
                yield from self._input("epochs", "epochs", "e.g. 200")
                yield from self._select("loss", LOSSES)
                yield from self._select("scheme", SCHEMES)
                # a scheme's own fields, shown while it is chosen (`scheme_field_classes`)
                yield from self._input(
                    "sep_lambda", "lambda", "loss.sep_lambda, ≥ 0 (SRAT)", classes="-sep"
                )
                yield from self._input("sep_tau", "tau", "loss.sep_tau, > 0 (SRAT)", classes="-sep")
                yield from self._input(
                    "trades_beta",
                    "beta",
                    "loss.trades_beta, ≥ 0 (TRADES, RoBal)",
                    classes="-trades",
                )
                yield from self._input(
                    "prior_tau", "prior tau", "loss.prior_tau, ≥ 0 (AT-BSL)", classes="-bsl"
                )
                yield from self._input(
                    "awp_gamma", "awp gamma", "awp.gamma, ≥ 0 (AWP)", classes="-awp"
                )
                yield from self._input(
                    "taet_stage1_epochs",
                    "stage 1 epochs",
                    "taet.stage1_epochs, ≥ 0, reference_epochs scale (TAET)",
                    classes="-taet",
                )
                yield from self._input(
                    "reat_tfa_weight", "tfa weight", "reat.tfa_weight, ≥ 0 (REAT)", classes="-reat"
                )
                yield from self._select("reat_tfa_mode", TFA_MODES, "tfa mode", classes="-reat")
                for name, label, placeholder in (
                    ("scale", "robal scale", "robal.scale s, > 0"),
                    ("gamma", "robal gamma", "robal.gamma of the head's norm, ≥ 0"),
                    ("margin", "robal margin", "robal.margin m, ≥ 0"),
                    ("tau_m", "robal tau_m", "robal.tau_m of the margins, ≥ 0"),
                    ("tau_b", "robal tau_b", "robal.tau_b, train-time prior, ≥ 0"),
                    ("tau_p", "robal tau_p", "robal.tau_p, post-hoc prior, ≥ 0"),
                ):
                    yield from self._input(f"robal_{name}", label, placeholder, classes="-robal")
                # RobustLT's class-wise budgets (`scheme_field_classes` says for which schemes)
                yield from self._select(
                    "class_budget",
                    [("off", "false"), ("on", "true")],
                    "class budget",
                    classes="-budget",
                )
                yield from self._input(
                    "budget_alpha",
                    "budget alpha",
                    "attack.budget_alpha, 0 to 1",
                    classes="-budget-on",
                )
                yield from self._input(
                    "budget_warmup",
                    "budget warm-up",
                    "attack.budget_warmup, epochs ≥ 0 (0 = none)",
                    classes="-budget-on",
                )
                yield from self._input("eps", "eps", "e.g. 8/255 (attack and eval)")
                yield from self._input("eval_eps", "eval eps", "empty: the eps above")
                yield from self._input("seeds", "seeds", "0 or 0,1,2 (one run each)")
                yield from self._input(
                    "devices", "device(s)", "auto, cpu, cuda:N, all or GPU ids 0,1"
                )
                yield from self._select("backend", BACKENDS)
                # this machine's slots: shown for the local backend only (`-local`)
                yield from self._input(
                    "per_device",
                    "runs per device",
                    "at once on each device: 1, 2, 4 (--per-gpu, --slots)",
                    classes="-local",
                )
                yield from self._select("stack", [("off", "false"), ("on", "true")], "stack seeds")
                # shown for the slurm backend only (`-slurm`); placeholders filled on mount
                yield from self._input("partition", "partition", "", classes="-slurm")
                yield from self._input("time", "time limit", "", classes="-slurm")
                yield from self._input("gpus_per_run", "gpus per run", "", classes="-slurm")
                yield from self._input(
                    "extra",
                    "extra overrides",
                    "section.key=value …  e.g. data.n_max=20 attack.steps=1",
                    wide=True,
                )
            yield Static(id="preset-description")
            yield Static(id="newrun-method")
            with Vertical(id="newrun-preview"):
                yield Static(id="newrun-counts")
                yield Static(id="newrun-cost")
            yield Static(id="newrun-command")
            with Horizontal(id="newrun-buttons"):
                yield Button("Launch", variant="primary", id="launch", disabled=True)
                yield Button("Cancel", id="cancel")
        # outside the scrolled body, above the footer: why Launch is off stays in view
        # however far down the form the field in question is (at 80x24 most are below it)
        yield Static(id="newrun-error")
        yield SratFooter()

    def _select(
        self,
        field: str,
        options: Sequence[str | tuple[str, str]],
        label: str = "",
        classes: str = "",
    ) -> ComposeResult:
        """A label and a Select of `options`: values, or (shown, value) pairs."""
        yield Label(label or field, classes=classes)
        yield Select(
            [(option, option) if isinstance(option, str) else option for option in options],
            allow_blank=False,
            compact=True,
            id=field,
            classes=classes or None,
        )

    def _input(
        self, field: str, label: str, placeholder: str, wide: bool = False, classes: str = ""
    ) -> ComposeResult:
        yield Label(label, classes=classes)
        yield Input(
            placeholder=placeholder,
            compact=True,
            id=field,
            classes=" ".join(filter(None, ["-wide-field" if wide else "", classes])) or None,
        )

    def on_mount(self) -> None:
        self.title = "New run"
        self._show_slurm_defaults(app_context(self).home)
        self._sync_backend()
        self._pristine = self.read_form()
        if self._initial_preset is not None:
            self._choose_preset(self._initial_preset)
        else:
            self._preset_error = "no presets found (see `srat presets ls`)"
            self._request_validation()

    # -- reading and filling the form ----------------------------------------------------------

    @property
    def preset(self) -> str | None:
        value = self.query_one("#preset", Select).value
        return value if isinstance(value, str) else None

    def read_form(self) -> FormValues:
        values: dict[str, str] = {}
        for item in fields(FormValues):
            widget = self.query_one(f"#{item.name}")
            if isinstance(widget, Select):
                values[item.name] = widget.value if isinstance(widget.value, str) else ""
            else:
                assert isinstance(widget, Input)
                values[item.name] = widget.value
        return FormValues(**values)

    def fill_form(self, values: FormValues) -> None:
        # one validation after filling, not one per field
        with self.prevent(Input.Changed, Select.Changed):
            for item in fields(FormValues):
                if item.name in LAUNCH_FIELDS:
                    continue  # a preset says what runs, not where
                widget = self.query_one(f"#{item.name}")
                value = getattr(values, item.name)
                if isinstance(widget, Select):
                    if value:
                        widget.value = value
                else:
                    assert isinstance(widget, Input)
                    widget.value = value
        self._sync_scheme()

    def _show_slurm_defaults(self, home: Home) -> None:
        try:
            defaults = load_defaults(home.config_file)  # one small file, as list_presets reads
        except SratError:
            defaults = {}  # choosing slurm shows the file's error, as a validation error
        for field, placeholder in slurm_placeholders(defaults).items():
            self.query_one(f"#{field}", Input).placeholder = placeholder

    def _sync_backend(self) -> None:
        """Slurm's fields for the slurm backend, the devices field (this machine's slots) for
        local runs only."""
        slurm = self.query_one("#backend", Select).value == "slurm"
        self.set_class(slurm, "-slurm-backend")
        self.query_one("#devices", Input).disabled = slurm

    def _sync_scheme(self) -> None:
        """The chosen scheme's own fields (SRAT's lambda and tau, TRADES' beta, AT-BSL's prior
        tau, AWP's gamma, TAET's, REAT's and RoBal's settings) and the class-wise budget's: a
        class `-x` on a field is shown while the screen has `-x-scheme`."""
        scheme = self.query_one("#scheme", Select).value
        budget = self.query_one("#class_budget", Select).value == "true"
        shown = scheme_field_classes(scheme if isinstance(scheme, str) else "", budget)
        for css in (*SCHEME_FIELDS, "-budget", "-budget-on"):
            self.set_class(css in shown, f"{css}-scheme")

    # -- workers -------------------------------------------------------------------------------

    def _choose_preset(self, name: str) -> None:
        """Start from preset `name`: its values fill the form once loaded (`_load_preset`)."""
        self._preset_chosen = name
        self._base = None
        self._load_preset(name, app_context(self).home)

    @work(thread=True, exclusive=True, group="newrun-preset")
    def _load_preset(self, name: str, home: Home) -> None:
        loaded = self._read_preset(name, home)
        if not get_current_worker().is_cancelled:  # another preset was chosen meanwhile
            self.post_message(loaded)

    @staticmethod
    def _read_preset(name: str, home: Home) -> PresetLoaded:
        dirs = home.preset_dirs
        try:
            prepared = prepare(preset=name, preset_dirs=dirs, data_dir=home.data_dir)
            return PresetLoaded(name, form_values(prepared.config), describe(name, dirs), None)
        except SratError as err:
            return PresetLoaded(name, None, "", str(err))
        except Exception as err:
            return PresetLoaded(name, None, "", f"{type(err).__name__}: {err}")

    def _request_validation(self) -> None:
        self._generation += 1
        generation = self._generation
        preset, base = self.preset, self._base
        values = self.read_form()
        if preset is None or base is None:
            error = self._preset_error or "choose a preset to start from"
            self.validation = Validation(generation, preset, values, error=error)
            return
        self._validate(generation, preset, values, base, app_context(self))

    @work(thread=True, exclusive=True, group="newrun-validate")
    def _validate(
        self,
        generation: int,
        preset: str,
        values: FormValues,
        base: FormValues,
        context: AppContext,
    ) -> None:
        validation = check_form(generation, preset, values, base, context.home, context.now())
        if not get_current_worker().is_cancelled:  # a later edit is being checked
            self.post_message(FormChecked(validation))

    @work(thread=True, exclusive=True, group="newrun-launch")
    def _launch(self, validation: Validation, preset: str, context: AppContext) -> None:
        try:
            if validation.slurm is not None:
                jobs = submit_to_slurm(validation, preset, context)
                finished = LaunchFinished([j.run_id for j in jobs], [j.job_id for j in jobs])
            else:
                finished = LaunchFinished(launch_runs(validation, preset, context))
        except Exception as error:  # the form stays open and says why
            message = str(error) if isinstance(error, SratError) else repr(error)
            self.post_message(LaunchFailed(message))
        else:
            self.post_message(finished)

    def on_preset_loaded(self, message: PresetLoaded) -> None:
        if message.name != self.preset:
            return  # the preset changed again while this one loaded
        self._preset_error = message.error
        self._base = message.base
        self.query_one("#preset-description", Static).update(
            inert_text(message.description, newlines=True)
        )
        if message.base is not None:
            self.fill_form(message.base)
            self._pristine = self.read_form()
        self._request_validation()

    def on_form_checked(self, message: FormChecked) -> None:
        if message.validation.generation == self._generation:
            self.validation = message.validation

    def on_launch_finished(self, message: LaunchFinished) -> None:
        if message.slurm_jobs:
            jobs = zip(message.run_ids, message.slurm_jobs, strict=True)
            text = "submitted " + ", ".join(f"{run} (Slurm job {job})" for run, job in jobs)
        else:
            text = f"launched {', '.join(message.run_ids)}"
        self.notify(text, title="New run")
        self.launching = False
        self.dismiss(message.run_ids)

    def on_launch_failed(self, message: LaunchFailed) -> None:
        self.launching = False
        error = self.query_one("#newrun-error", Static)
        error.update(inert_text(f"launch failed: {message.error}"))
        error.display = True  # hidden while the form was valid
        self.notify(message.error, severity="error", title="Launch failed")

    # -- events --------------------------------------------------------------------------------

    @on(Select.Changed)
    def _select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "preset":
            if isinstance(event.value, str) and event.value != self._preset_chosen:
                self._choose_preset(event.value)
            return
        if event.select.id == "backend":
            self._sync_backend()
        if event.select.id in ("scheme", "class_budget"):
            self._sync_scheme()
        self._request_validation()

    @on(Input.Changed)
    def _input_changed(self) -> None:
        self._request_validation()

    @on(Input.Submitted)
    def _input_submitted(self) -> None:
        # Enter moves on, as in most forms; launching stays an explicit ctrl+s or button press
        self.focus_next()

    @on(Button.Pressed, "#launch")
    def _launch_pressed(self) -> None:
        self.action_launch()

    @on(Button.Pressed, "#cancel")
    def _cancel_pressed(self) -> None:
        self.action_cancel()

    # -- state ---------------------------------------------------------------------------------

    def _can_launch(self) -> bool:
        return self.validation is not None and self.validation.ok and not self.launching

    def watch_validation(self, validation: Validation | None) -> None:
        error = self.query_one("#newrun-error", Static)
        method = self.query_one("#newrun-method", Static)
        counts = self.query_one("#newrun-counts", Static)
        cost = self.query_one("#newrun-cost", Static)
        command = self.query_one("#newrun-command", Static)
        ok = validation is not None and validation.ok
        message = validation.error if validation is not None else None
        error.update(inert_text(message or ""))
        error.display = message is not None
        for widget in (method, counts, cost, command):
            widget.display = ok
        if ok:
            assert validation is not None and validation.prepared is not None
            preset = self.preset or ""
            method.update(method_line(validation.prepared))
            counts.update(counts_chart(validation.prepared))
            cost.update(cost_lines(validation))
            command.update(Text(command_line(preset, validation)))
        self._sync_launch()

    def watch_launching(self) -> None:
        self._sync_launch()

    def _sync_launch(self) -> None:
        button = self.query_one("#launch", Button)
        can_launch = self._can_launch()
        button.disabled = not can_launch
        button.label = "Launching…" if self.launching else "Launch"
        if can_launch != self._footer_can_launch:  # the footer rebuilds its keys on a refresh
            self._footer_can_launch = can_launch
            self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "launch" and not self._can_launch():
            return None  # shown, but greyed out
        return True

    # -- actions -------------------------------------------------------------------------------

    def action_launch(self) -> None:
        validation, preset = self.validation, self.preset
        if not self._can_launch() or validation is None or preset is None:
            return
        if validation.values != self.read_form():
            return  # an edit is still being checked
        self.launching = True
        self._launch(validation, preset, app_context(self))

    @property
    def edited(self) -> bool:
        """Whether the form holds anything the chosen preset did not fill in."""
        return self._pristine is not None and self.read_form() != self._pristine

    def action_cancel(self) -> None:
        """Back to where the form was opened from; edits are lost only once confirmed."""
        if self.launching:
            return
        if not self.edited:
            self.dismiss(None)
            return

        def answered(discard: bool | None) -> None:
            if discard:
                self.dismiss(None)

        confirm = ConfirmModal(
            "Discard the edits to this new run?", yes_label="Discard", no_label="Keep editing"
        )
        self.app.push_screen(confirm, answered)
