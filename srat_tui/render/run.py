"""Rich renderables and plain lines for engine records; formatting only, no maths."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.table import Table

from srat_tui.render.format import pct

if TYPE_CHECKING:
    from srat_engine.config.prepare import PreparedRun


def epoch_line(record: dict[str, Any]) -> str:
    """One plain line per epoch: readable in a log file, greppable, no TTY needed."""
    width = len(str(record["epochs"]))
    parts = [
        f"epoch {record['epoch']:>{width}}/{record['epochs']}",
        f"lr {record['lr']:.4g}",
        f"loss {record['loss']:.4f}",
    ]
    if record.get("sep_loss") is not None:
        parts.append(f"sep {record['sep_loss']:.4f}")
    parts.append(f"std {pct(record['std_overall'])}/{pct(record['std_under'])}")
    if record.get("rob_overall") is not None:
        parts.append(f"rob {pct(record['rob_overall'])}/{pct(record['rob_under'])}")
    flags = [f for f in ("reweighting", "gair") if record.get(f)]
    if flags:
        parts.append("+" + "+".join(flags))
    parts.append(f"{record['train_seconds'] + record['eval_seconds']:.1f}s")
    return "  ".join(parts)


def summary_table(final: dict[str, Any], title: str) -> Table:
    """The paper's four columns: standard/robust accuracy, overall and under-represented."""
    table = Table(title=title, title_justify="left")
    for header in ("Std overall", "Std under", "Rob overall", "Rob under"):
        table.add_column(header, justify="right")
    table.add_row(
        pct(final["std_overall"]),
        pct(final["std_under"]),
        pct(final["rob_overall"]),
        pct(final["rob_under"]),
    )
    return table


def class_table(
    final: dict[str, Any], classes: list[str], counts: list[int], under: list[int]
) -> Table:
    table = Table(title="Per class (balanced test set)", title_justify="left")
    table.add_column("class")
    table.add_column("train n", justify="right")
    table.add_column("std %", justify="right")
    table.add_column("rob %", justify="right")
    rob = final.get("rob_class") or [None] * len(counts)
    rows = zip(classes, counts, final["std_class"], rob, strict=True)
    for cls, (name, n, std, r) in enumerate(rows):
        marker = " *" if cls in under else ""
        table.add_row(f"{name}{marker}", str(n), pct(std), pct(r))
    table.caption = "* under-represented"
    return table


def resolved_table(prepared: PreparedRun) -> Table:
    """Per-class train counts, class weights and LDAM margins of a resolved config."""
    resolved = prepared.resolved
    table = Table(title_justify="left")
    table.add_column("class", justify="right")
    table.add_column("train n", justify="right")
    table.add_column("weight", justify="right")
    if resolved.ldam_margins is not None:
        table.add_column("LDAM margin", justify="right")
    table.add_column("under", justify="center")
    for cls, n in enumerate(resolved.class_counts):
        row = [str(cls), str(n), f"{resolved.class_weights[cls]:.4f}"]
        if resolved.ldam_margins is not None:
            row.append(f"{resolved.ldam_margins[cls]:.4f}")
        row.append("*" if cls in resolved.under_classes else "")
        table.add_row(*row)
    return table


def schedule_lines(prepared: PreparedRun) -> list[str]:
    config, resolved = prepared.config, prepared.resolved
    spec = resolved.method
    attack = config.attack
    lines = [
        f"method   {spec['name']}: loss {spec['loss']}, reweight {spec['reweight']}"
        + (
            f", separation lambda={config.loss.sep_lambda:g} tau={config.loss.sep_tau:g}"
            if spec["separation"]
            else ""
        )
        + (f", GAIR {config.gair.func} lambda={config.gair.lam:g}" if spec["gair"] else "")
        + ("" if spec["adversarial"] else ", natural training (no attack)"),
        f"data     {config.data.dataset} {config.data.imbalance} K={config.data.ratio:g}: "
        f"{resolved.train_size} train examples, {resolved.num_classes} classes, "
        f"root {resolved.data_root}",
        f"model    {config.model.arch}, {resolved.head} head",
        f"train    {config.train.epochs} epochs, batch {config.train.batch_size}, "
        f"lr {config.train.lr:g} x{config.train.lr_gamma:g} at {resolved.lr_milestones}, "
        f"{config.train.precision}",
        f"attack   PGD-{attack.steps} eps {attack.eps * 255:.4g}/255 "
        f"step {attack.step_size * 255:.4g}/255, BN {attack.bn_mode} during attack",
        f"eval     PGD-{config.eval.steps} eps {config.eval.eps * 255:.4g}/255 "
        f"step {config.eval.step_size * 255:.4g}/255",
    ]
    if resolved.reweight_epoch is not None:
        lines.append(f"reweight class-balanced from epoch {resolved.reweight_epoch + 1}")
    if resolved.gair_begin_epoch is not None:
        lines.append(f"gair     from epoch {resolved.gair_begin_epoch + 1}")
    return lines
