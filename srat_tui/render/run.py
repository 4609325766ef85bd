"""Rich renderables and plain lines for engine records; formatting only, no maths.

A record read back from a run directory may lack fields (a hand edit): what is missing shows
as "-"; every name from a config or a record is shown `inert`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.table import Table
from rich.text import Text

from srat_tui.render.format import counted, data_text, duration, inert, inert_text, pct, time_left

if TYPE_CHECKING:
    from datetime import datetime

    from srat_engine.config.prepare import PreparedRun
    from srat_engine.config.workload import Workload
    from srat_engine.jobs.forecast import LaunchOutlook, Planned


def heading(name: str, rest: str = "", before: str = "") -> Text:
    """A line that starts a block of output: `before`, the name in bold, then `rest`."""
    return Text.assemble(inert(before), (inert(name), "bold"), inert(rest))


def summary_table(final: dict[str, Any], title: str) -> Table:
    """The paper's four columns: standard/robust accuracy, overall and under-represented."""
    table = Table(title=inert_text(title), title_justify="left")
    for header in ("Std overall", "Std under", "Rob overall", "Rob under"):
        table.add_column(header, justify="right")
    table.add_row(
        pct(final.get("std_overall")),
        pct(final.get("std_under")),
        pct(final.get("rob_overall")),
        pct(final.get("rob_under")),
    )
    return table


def _at(values: Any, index: int) -> Any:
    return values[index] if isinstance(values, (list, tuple)) and index < len(values) else None


def class_table(
    final: dict[str, Any], classes: Sequence[Any], counts: Sequence[Any], under: Sequence[int]
) -> Table:
    """Per class: train examples, standard and robust accuracy; "-" where a value is missing."""
    table = Table(title="Per class (balanced test set)", title_justify="left")
    table.add_column("class")
    table.add_column("train n", justify="right")
    table.add_column("std %", justify="right")
    table.add_column("rob %", justify="right")
    std, rob = final.get("std_class"), final.get("rob_class")
    for cls, name in enumerate(classes):
        marker = " *" if cls in under else ""
        count = _at(counts, cls)
        table.add_row(
            inert_text(f"{name}{marker}"),
            "-" if count is None else inert(count),
            pct(_at(std, cls)),
            pct(_at(rob, cls)),
        )
    table.caption = "* under-represented"
    return table


def resolved_table(prepared: PreparedRun) -> Table:
    """Per-class train counts, class weights, LDAM margins and class-wise attack budgets of a
    resolved config."""
    resolved = prepared.resolved
    budgets = resolved.class_budgets
    table = Table(title_justify="left")
    table.add_column("class", justify="right")
    table.add_column("train n", justify="right")
    table.add_column("weight", justify="right")
    if resolved.ldam_margins is not None:
        table.add_column("LDAM margin", justify="right")
    if budgets is not None:
        table.add_column("attack eps", justify="right")
    table.add_column("under", justify="center")
    for cls, n in enumerate(resolved.class_counts):
        row = [str(cls), str(n), f"{resolved.class_weights[cls]:.4f}"]
        if resolved.ldam_margins is not None:
            row.append(f"{resolved.ldam_margins[cls]:.4f}")
        if budgets is not None:
            row.append(f"{budgets[cls] * 255:.3f}/255")
        row.append("*" if cls in resolved.under_classes else "")
        table.add_row(*row)
    return table


def _millions(count: int) -> str:
    return f"{count / 1e6:,.1f} M" if count >= 100_000 else f"{count:,}"


def evaluation_cadence(work: Workload | None) -> str:
    """Which epochs are evaluated and on how many test examples: ": 1,000 at 200 epochs, clean
    10,000 at 200, final 10,000"; "" when the test split's size is unknown."""
    if work is None:
        return ""
    return (
        f": {work.robust_size:,} at {counted(work.robust_epochs, 'epoch')}, "
        f"clean {work.test_size:,} at {work.evaluated_epochs}, final {work.test_size:,}"
    )


def workload_line(work: Workload | None) -> str | None:
    """A run's model work (`config.workload.Workload`) in forward passes (equivalents: a
    backward counts as one or two), or None when the test split's size is unknown (a run made
    before it was kept)."""
    if work is None:
        return None
    return (
        f"{_millions(work.train)} training + {_millions(work.evaluation)} evaluation "
        f"forward passes ({work.evaluation_share:.0%} evaluation)"
    )


def _epoch_list(epochs: Sequence[int]) -> str:
    """ "epoch 5", "epochs 161, 181"; an epoch that several starts share once, with how many
    (milestones a short run scales onto one epoch all apply there): "epoch 5 (twice)"."""
    counts = Counter(epochs)  # insertion-ordered: the epochs as given
    shown = [
        f"{epoch}" if n == 1 else f"{epoch} ({'twice' if n == 2 else f'{n} times'})"
        for epoch, n in counts.items()
    ]
    return ("epoch " if len(counts) == 1 else "epochs ") + ", ".join(shown)


def schedule_event(what: str, starts: Sequence[int], epochs: int) -> str:
    """When a schedule event starts, as the form and `srat run --dry-run` both show it: `what`,
    then each of its `starts` (the engine's 0-based first epochs that have it, e.g.
    `resolved.lr_milestones`) as the 1-based epoch people count, and those at or past the
    run's `epochs` as not happening: "x0.01 from epochs 161, 181", "x0.01: not within 2
    epochs", "x0.01 from epoch 2 (epoch 6: not within 2 epochs)", "x0.01: never" without any,
    "x0.01 from epoch 5 (twice)" for two starts on one epoch (both drops happen there).
    One rule for every event, so an lr drop and a reweighting never read on different scales.
    """

    def said(tail: str) -> str:
        return f"{what}: {tail}" if what else tail

    if not starts:
        return said("never")
    within = [start + 1 for start in starts if start < epochs]
    beyond = [start + 1 for start in starts if start >= epochs]
    missed = f"not within {epochs} epoch{'' if epochs == 1 else 's'}"
    if not within:
        return said(missed)
    shown = f"{what} from {_epoch_list(within)}" if what else f"from {_epoch_list(within)}"
    return f"{shown} ({_epoch_list(beyond)}: {missed})" if beyond else shown


def schedule_lines(prepared: PreparedRun) -> list[str]:
    """What `srat run --dry-run` prints of a resolved config, one plain line each."""
    config, resolved = prepared.config, prepared.resolved
    spec = resolved.method
    attack = config.attack
    epochs = config.train.epochs
    workload = prepared.workload  # counted once for the two lines that show it
    # image budgets in 1/255 steps, as papers write them; vectors (gaussian) have no pixels
    vectors = len(resolved.input_shape) == 1

    def budget(value: float) -> str:
        return f"{value:g}" if vectors else f"{value * 255:.4g}/255"

    lines = [
        f"method   {spec['name']}: loss {spec['loss']}, reweight {spec['reweight']}"
        + (
            f", separation lambda={config.loss.sep_lambda:g} tau={config.loss.sep_tau:g}"
            if spec["separation"]
            else ""
        )
        + (f", GAIR {config.gair.func} lambda={config.gair.lam:g}" if spec["gair"] else "")
        # what "loss ce" leaves out: TRADES' KL, the balanced softmax, AWP (MethodSpec)
        + (f", objective {spec['objective']}" if spec.get("objective", "pgd") != "pgd" else "")
        + (f", balanced softmax tau={config.loss.prior_tau:g}" if spec.get("prior_shift") else "")
        + (f", AWP gamma={config.awp.gamma:g}" if spec.get("awp") else "")
        + ("" if spec["adversarial"] else ", natural training (no attack)"),
        f"data     {data_text(config.data.model_dump())}: "
        f"{resolved.train_size} train examples, {resolved.num_classes} classes, "
        f"root {inert(resolved.data_root)}",
        *(
            [f"missing  {inert(missing)}: a launch would refuse it"]
            if (missing := prepared.missing_data) is not None
            else []
        ),
        f"model    {config.model.arch}, {resolved.head} head",
        f"train    {counted(config.train.epochs, 'epoch')}, batch {config.train.batch_size}, "
        f"lr {config.train.lr:g}, {config.train.precision}",
        # the schedule's epochs 1-based, as the new-run form shows them (`schedule_event`)
        f"lr       {schedule_event(f'x{config.train.lr_gamma:g}', resolved.lr_milestones, epochs)}",
        (
            f"attack   PGD-{attack.steps} eps {budget(attack.eps)} "
            f"step {budget(attack.step_size)}, BN {attack.bn_mode} during attack"
            + (", ascends the training loss L" if attack.loss == "training" else "")
            if spec["adversarial"] and attack.steps > 0
            else "attack   none: trains on clean inputs"
        ),
        f"eval     PGD-{config.eval.steps} eps {budget(config.eval.eps)} "
        f"step {budget(config.eval.step_size)}{evaluation_cadence(workload)}",
    ]
    work = workload_line(workload)
    if work is not None:
        lines.append(f"work     {work}")
    if resolved.reweight_epoch is not None:
        weights = schedule_event("class-balanced", [resolved.reweight_epoch], epochs)
        lines.append(f"reweight {weights}")
    if resolved.gair_begin_epoch is not None:
        lines.append(f"gair     {schedule_event('', [resolved.gair_begin_epoch], epochs)}")
    if resolved.taet_stage2_epoch is not None:
        stage2 = [resolved.taet_stage2_epoch]
        lines.append(f"taet     clean CE first; {schedule_event('PGD', stage2, epochs)}")
    if resolved.awp_begin_epoch is not None:
        perturbed = schedule_event(
            f"weights perturbed (gamma {config.awp.gamma:g})", [resolved.awp_begin_epoch], epochs
        )
        lines.append(f"awp      {perturbed}")
    if resolved.class_budgets is not None:
        warmup = resolved.budget_warmup_epochs or 0
        ramp = (
            f", warmed up linearly from {'0' if attack.budget_warmup_start == 'zero' else 'eps'} "
            f"over epochs 1-{warmup}"
            if warmup
            else ""
        )
        lines.append(
            f"budgets  class-wise eps_c (alpha {attack.budget_alpha:g}), step scaled by "
            f"eps_c / eps{ramp}; evaluation eps stays global"
        )
    return lines


def time_line(outlook: LaunchOutlook, like: str, now: datetime, *, queued: bool) -> str:
    """How long planned runs should train and, for `queued` (detached) ones, when the first
    should start and the last end its training (`jobs.forecast.launch_outlook`); `like` names
    the runs whose pace is used ("small_cnn on digits (cpu)")."""
    if outlook.training_seconds is None:
        return f"no estimate yet: no timed run of {inert(like)} in this home"
    low, high = (duration(seconds) for seconds in outlook.training_seconds)
    each = low if low == high else f"{low}-{high}"
    pace = f"at the pace of the latest run of {inert(like)}"
    if not queued:
        return f"training ~{each} {pace}, then the final evaluation"
    if outlook.first_start is None or outlook.last_end is None:
        return f"training ~{each} a run {pace}; the queue ahead has no estimate"
    wait = time_left(outlook.first_start, now)
    left = time_left(outlook.last_end, now) or "0s"
    return (
        f"training ~{each} a run {pace}; launched now, the first starts "
        f"{f'in ~{wait}' if wait else 'at once'} and the last ends its training "
        f"~{outlook.last_end.isoformat(timespec='minutes')} (in {left})"
    )


def like_runs(planned: Sequence[Planned]) -> str:
    """What kind of run's pace a forecast of `planned` looks for: "small_cnn on digits (cpu)",
    or "their model, data and device" for a mix."""
    kinds = {
        (str(p.record.get("arch")), str(p.record.get("dataset")), ", ".join(sorted(p.devices)))
        for p in planned
    }
    if len(kinds) != 1:
        return "their model, data and device"
    arch, dataset, devices = kinds.pop()
    return f"{arch} on {dataset} ({devices})"
