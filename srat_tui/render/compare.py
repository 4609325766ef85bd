"""The Rich tables of `srat runs compare` and the TUI's compare screen.

Pure formatting over `srat_engine.reporting.report` structures (the export files are written by
`srat_engine.reporting.export`). Nothing here imports torch, so `srat runs compare` starts fast.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from srat_engine.reporting.export import (
    MASK_MARK,
    RobustSource,
    block_title,
    format_ratio,
    value_cells,
)
from srat_engine.reporting.report import TableBlock, config_diff, pick_metrics
from srat_engine.runs.records import METRIC_COLUMNS, measured_at, result_columns
from srat_tui.render.format import inert_text, is_number, masking_flag, pct


@dataclass(frozen=True)
class CompareRun:
    """One run to compare.

    run_id: its id (a column header). doc: its config.json document ({"config": ...,
    "resolved": ...}). metrics: what to show for it, normally `report.pick_metrics(events)`:
    the "final" event of metrics.jsonl, else the latest "epoch" event, else None (no numbers);
    `compare_run` makes one whose four columns are those of `srat runs ls`. epochs: the epoch
    each of the four columns was measured at where that is not the record's own.
    """

    run_id: str
    doc: Mapping[str, Any]
    metrics: Mapping[str, Any] | None = None
    epochs: Mapping[str, int] = field(default_factory=dict)


def compare_run(
    run_id: str,
    doc: Mapping[str, Any],
    events: Sequence[Mapping[str, Any]],
    num_classes: int | None = None,
    checkpoint: str = "last",
) -> CompareRun:
    """A run to compare from its metrics.jsonl `events`: `report.pick_metrics`' record, with
    the four columns of a run still training (no current final evaluation, last checkpoint)
    as the runs list shows them: per column the latest value an epoch measured
    (`records.result_columns`, what `summary.summarize_run` calls), since robust accuracy is
    measured every eval.robust_every epochs only and the latest epoch may lack it."""
    metrics = pick_metrics(events, num_classes, checkpoint)
    if metrics is None or metrics.get("event") != "epoch" or "best_epoch" in metrics:
        return CompareRun(run_id, doc, metrics)
    values, _ = result_columns(events, METRIC_COLUMNS, num_classes)
    epochs: dict[str, int] = {}
    for column, record in measured_at(events, METRIC_COLUMNS, num_classes).items():
        # a value from an earlier epoch than the row's own says which
        earlier = record is not None and metrics.get(column) is None
        if earlier and isinstance(epoch := record.get("epoch"), int):
            epochs[column] = epoch
    return CompareRun(run_id, doc, {**metrics, **values}, epochs)


def _config_value(value: Any) -> str:
    if value is None:
        return "-"
    if value == "":
        return '""'  # an empty setting is not a missing one ("-")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _config_row(values: Sequence[Any]) -> list[str]:
    shown = [_config_value(v) for v in values]
    distinct_values = {json.dumps(v, sort_keys=True, default=str) for v in values}
    # Values that differ beyond 6 significant digits must not print alike.
    if len(set(shown)) < len(distinct_values):
        shown = ["-" if v is None else repr(v) for v in values]
    return shown


def config_diff_table(runs: Sequence[CompareRun], only_changed: bool = True) -> Table:
    """Rows = dotted config keys, columns = run ids; "-" where a run lacks the key."""
    configs = [run.doc.get("config", {}) for run in runs]
    rows = config_diff(configs, only_changed=only_changed)
    title = "Config differences" if only_changed else "Config"
    table = Table(title=title, title_justify="left")
    table.add_column("key", style="bold")
    for run in runs:
        table.add_column(inert_text(run.run_id))
    for key, values in rows:
        table.add_row(inert_text(key), *(inert_text(v) for v in _config_row(values)))
    if not rows:
        table.caption = "no differences" if only_changed else "empty configs"
    return table


def _source(metrics: Mapping[str, Any] | None) -> str:
    if metrics is None:
        return "no metrics"
    if metrics.get("event") == "final":
        return "final"
    epoch, epochs = metrics.get("epoch"), metrics.get("epochs")
    return f"epoch {epoch}/{epochs}" if epochs else f"epoch {epoch}"


def _value_cell(run: CompareRun, column: str, digits: int) -> Text:
    """A column's value, and "@N" when it comes from an earlier epoch than the row's "from"
    (the run screen's header marks robust accuracy from an earlier epoch alike)."""
    cell = Text(pct((run.metrics or {}).get(column), digits))
    if column in run.epochs:
        cell.append(f" @{run.epochs[column]}", style="dim")
    return cell


def metrics_table(
    runs: Sequence[CompareRun], digits: int = 2, robust: RobustSource | None = None
) -> Table:
    """One row per run: the paper's four columns, and whether they are final numbers.

    A "masking" column (the AutoAttack gradient-masking verdict) appears when any run's
    metrics carry a "masking" value; robust.attack names the source of the robust columns."""
    robust = robust or RobustSource()
    with_masking = any((run.metrics or {}).get("masking") is not None for run in runs)
    table = Table(title="Accuracy (%)", title_justify="left")
    table.add_column("run")
    table.add_column("method")
    table.add_column("data")
    table.add_column("seed", justify="right")
    table.add_column("from")
    for column in METRIC_COLUMNS:
        # as Text: "[best epoch]" would be read as Rich markup, and vanish
        table.add_column(inert_text(robust.title(column)), justify="right")
    if with_masking:
        table.add_column("masking")
    for run in runs:
        config = run.doc.get("config", {})
        data = config.get("data", {})
        ratio = data.get("ratio")
        where = f"{data.get('dataset', '?')} {data.get('imbalance', '?')}"
        if is_number(ratio) and data.get("imbalance") != "none":
            where += f" K={format_ratio(float(ratio))}"
        metrics = run.metrics or {}
        cells = [
            inert_text(run.run_id),
            inert_text(config.get("method", "?")),
            inert_text(where),
            inert_text(config.get("seed", "-")),
            inert_text(_source(run.metrics)),
            *(_value_cell(run, column, digits) for column in METRIC_COLUMNS),
        ]
        if with_masking:
            cells.append(masking_flag(metrics.get("masking")))
        table.add_row(*cells)
    return table


def class_table(
    runs: Sequence[CompareRun], digits: int = 2, robust: RobustSource | None = None
) -> Table:
    """Rows = classes, two columns per run (standard, robust per-class accuracy). Classes the
    run treats as under-represented carry "*": on the name when all runs agree, else on the
    value of each run that does."""
    resolved = [run.doc.get("resolved") or {} for run in runs]
    names_per_run = [list(r.get("class_names") or []) for r in resolved]
    under_per_run = [set(r.get("under_classes") or []) for r in resolved]
    sizes = [len(names) for names in names_per_run]
    sizes += [len((run.metrics or {}).get("std_class") or []) for run in runs]
    num_classes = max(sizes, default=0)
    # Runs whose config.json lacks the resolved block say nothing about under-representation.
    known_under = [u for u, r in zip(under_per_run, resolved, strict=True) if "under_classes" in r]
    same_under = all(under == known_under[0] for under in known_under)
    table = Table(title="Per class accuracy (%)", title_justify="left")
    table.add_column("class")
    for run in runs:
        table.add_column(inert_text(f"{run.run_id} std"), justify="right")
        rob = f"rob [{robust.attack}]" if robust and robust.attack else "rob"
        table.add_column(inert_text(f"{run.run_id} {rob}"), justify="right")
    for cls in range(num_classes):
        names: list[str] = []
        for run_names in names_per_run:
            if cls < len(run_names) and run_names[cls] not in names:
                names.append(str(run_names[cls]))
        label = " / ".join(names) if names else str(cls)
        if same_under and known_under and cls in known_under[0]:
            label += " *"
        row = [inert_text(label)]
        for run, under in zip(runs, under_per_run, strict=True):
            metrics = run.metrics or {}
            mark = " *" if not same_under and cls in under else ""
            for key in ("std_class", "rob_class"):
                values = metrics.get(key) or []
                value = values[cls] if cls < len(values) else None
                row.append(Text(pct(value, digits) + mark))
        table.add_row(*row)
    table.caption = "* under-represented"
    return table


def compare_renderables(
    runs: Sequence[CompareRun],
    only_changed: bool = True,
    digits: int = 2,
    robust: RobustSource | None = None,
) -> list[RenderableType]:
    """What `srat runs compare` prints, in order: the config diff (all keys when not
    only_changed), the four columns per run, and per-class accuracy (left out when no run has
    metrics). robust: set when the robust columns come from a stored `srat eval` attack."""
    out: list[RenderableType] = [
        config_diff_table(runs, only_changed),
        metrics_table(runs, digits, robust),
    ]
    if any(run.metrics and run.metrics.get("std_class") for run in runs):
        out.append(class_table(runs, digits, robust))
    if robust is not None and robust.selection:
        out.append(Text(f"[best epoch] {robust.selection}", style="bold"))
    return out


def seed_tables(
    blocks: Sequence[TableBlock], digits: int = 2, robust: RobustSource | None = None
) -> list[Table]:
    """The paper's layout of the compared runs (`report.paper_table`): one table per dataset
    and imbalance, a row per method, mean ± std over the seeds of each configuration, the
    cells `srat runs export --format md` writes."""
    robust = robust or RobustSource()
    tables: list[Table] = []
    for block in blocks:
        title = f"{block_title(block)}: mean ± std over seeds"
        table = Table(title=inert_text(title), title_justify="left")
        table.add_column("method")
        table.add_column("seeds", justify="right")
        for ratio in block.ratios:
            for column in METRIC_COLUMNS:
                header = f"K={format_ratio(ratio)} {robust.title(column)}"
                table.add_column(inert_text(header), justify="right")
        for row in block.rows:
            seeds = "/".join(str(cell.n) for _, cell in sorted(row.cells.items()))
            cells = value_cells(block, row, digits, robust, pm=" ± ", mark=f" {MASK_MARK}")
            table.add_row(inert_text(row.label), seeds, *(inert_text(c) for c in cells))
        tables.append(table)
    return tables
