"""Rich renderables for stored robustness evaluations (eval.json): `srat eval`, `runs show`.

Formatting only; the numbers come from `srat_engine.evaluation`. The gradient-masking verdict
is printed in bold red next to any AutoAttack number it concerns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from srat_engine.runs.evaluations import (
    ATTACKS,
    CHECKPOINTS,
    attack_title,
    entry_steps,
    result_key,
    result_title,
)
from srat_tui.render.format import MASKING_STYLE, inert_text, is_number, masking_flag, pct


def masking_text(entry: Mapping[str, Any]) -> Text | None:
    """The masking verdict of an AutoAttack entry as one line (None for other attacks): PGD-20
    against AutoAttack and against the logit-scaled PGD, each gap, the threshold."""
    masking = entry.get("masking")
    if not isinstance(masking, Mapping) or not isinstance(masking.get("suspected"), bool):
        return None
    pgd = attack_title("pgd20", entry_steps(entry.get("pgd20")))
    numbers = (
        f"{pgd} {pct(masking.get('pgd20_overall'))} vs AutoAttack "
        f"{pct(masking.get('autoattack_overall'))} on the same examples, gap "
        f"{pct(masking.get('gap'))} points"
    )
    if "logit_scaled_overall" in masking:  # absent from results stored before the check
        params = (entry.get("logit_scaled") or {}).get("params") or {}
        scales = ", ".join(f"x{s:g}" for s in params.get("logit_scales") or [] if is_number(s))
        numbers += (
            f"; vs logit-scaled {pgd}{f' ({scales})' if scales else ''} "
            f"{pct(masking.get('logit_scaled_overall'))}, gap "
            f"{pct(masking.get('logit_scaled_gap'))} points"
        )
    numbers += f"; threshold {masking.get('threshold', '?')}"
    if masking["suspected"]:
        return Text(f"gradient masking suspected: {numbers}", style=MASKING_STYLE)
    return Text(f"no sign of gradient masking: {numbers}")


def masking_cell(entry: Mapping[str, Any] | None) -> Text:
    """'SUSPECTED' (highlighted), 'no', or '-' when the run has no AutoAttack result."""
    masking = (entry or {}).get("masking")
    return masking_flag(masking.get("suspected") if isinstance(masking, Mapping) else None)


def _budget(entry: Mapping[str, Any]) -> str:
    params = entry.get("params") or {}
    eps = params.get("eps")
    parts = [f"eps {eps * 255:.4g}/255" if isinstance(eps, (int, float)) else "eps ?"]
    if entry.get("attack") == "autoattack":
        parts.append(f"{params.get('version', 'standard')}, {params.get('package', '?')}")
    else:
        parts.append(
            f"{params.get('steps', '?')} steps of {params.get('step_size', 0) * 255:.4g}/255"
        )
    return ", ".join(parts)


def _when(iso: Any) -> str:
    # "2026-11-22T03:03:23+00:00" -> "2026-11-22 03:03" (UTC, as every srat timestamp)
    return str(iso)[:16].replace("T", " ") if iso else "-"


def summary_table(results: Mapping[str, Mapping[str, Any]], title: str) -> Table:
    """One row per stored attack: overall/under robust accuracy, clean accuracy on the same
    examples, how many, which checkpoint, the masking verdict."""
    table = Table(title=inert_text(title), title_justify="left")
    for header in ("attack", "Rob overall", "Rob under", "Clean overall", "n", "epoch",
                   "budget", "masking", "when (UTC)"):  # fmt: skip
        justify = "right" if header in ("Rob overall", "Rob under", "Clean overall", "n") else None
        table.add_column(header, justify=justify or "left")
    for attack in ordered(results):
        entry = results[attack]
        table.add_row(
            inert_text(result_title(attack, entry)),
            pct(entry.get("overall")),
            pct(entry.get("under")),
            pct(entry.get("clean_overall")),
            inert_text(entry.get("n", "-")),
            inert_text(entry.get("checkpoint_epoch", "-")),
            inert_text(_budget(entry)),
            masking_cell(entry) if entry.get("attack") == "autoattack" else Text("-"),
            inert_text(_when(entry.get("time"))),
        )
    return table


def class_table(
    results: Mapping[str, Mapping[str, Any]], class_names: Sequence[str], under: Sequence[int]
) -> Table:
    """Rows = classes: examples evaluated, clean accuracy, robust accuracy per stored attack.

    When the attacks ran on different subsets (different `--n`), the per-class n and clean
    columns would belong to one of them only: they are left out and each attack's header
    says its n instead."""
    attacks = ordered(results)
    shared = len({results[a].get("n") for a in attacks}) <= 1
    table = Table(title="Per class robust accuracy (%)", title_justify="left")
    table.add_column("class")
    if shared:
        table.add_column("n", justify="right")
        table.add_column("clean", justify="right")
    for attack in attacks:
        title = result_title(attack, results[attack])
        if not shared:
            title += f" (n={results[attack].get('n', '?')})"
        table.add_column(inert_text(title), justify="right")
    first = results[attacks[0]] if attacks else {}
    sizes = [len(class_names), *(len(results[a].get("class") or []) for a in attacks)]
    for cls in range(max(sizes)):
        name = str(class_names[cls]) if cls < len(class_names) else str(cls)
        row: list[str | Text] = [inert_text(name + (" *" if cls in under else ""))]
        if shared:
            row += [_at(first.get("class_n"), cls, str), _at(first.get("clean_class"), cls, pct)]
        row.extend(_at(results[a].get("class"), cls, pct) for a in attacks)
        table.add_row(*row)
    table.caption = "* under-represented"
    return table


def _at(values: Any, index: int, fmt: Any) -> str:
    if isinstance(values, list) and index < len(values):
        return fmt(values[index])
    return "-"


def ordered(results: Mapping[str, Any]) -> list[str]:
    """Known attacks in their fixed order, the last checkpoint's first, then the best epoch's;
    anything else after them."""
    known = [result_key(a, c) for c in CHECKPOINTS for a in ATTACKS]
    return [k for k in known if k in results] + sorted(k for k in results if k not in known)


def eval_renderables(
    results: Mapping[str, Mapping[str, Any]],
    class_names: Sequence[str],
    under: Sequence[int],
    title: str = "Robustness evaluation (eval.json)",
) -> list[RenderableType]:
    """What `srat runs show` and `srat eval` print: the summary, the masking line, per class."""
    if not results:
        return []
    out: list[RenderableType] = [summary_table(results, title)]
    for checkpoint in CHECKPOINTS:
        aa = results.get(result_key("autoattack", checkpoint))
        line = masking_text(aa) if aa else None
        if line is not None:
            out.append(line if checkpoint == "last" else Text("best epoch: ") + line)
    out.append(class_table(results, class_names, under))
    return out
