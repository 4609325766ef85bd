"""The Rich tables of `srat runs compare` and the TUI's compare screen.

Pure formatting over `srat_engine.reporting.report` structures (the export files are written by
`srat_engine.reporting.export`). Nothing here imports torch, so `srat runs compare` starts fast.

Each table has two layouts (`FitToWidth`): boxed where it fits, and a compact one for the
width it is drawn at (an 80-column terminal over SSH), in which every run id is still shown
whole: broken at its hyphens in a column header, never cut to "26120…".
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from rich import box
from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.measure import Measurement
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
from srat_tui.render.format import data_text, inert, inert_text, masking_flag, pct

# The columns that describe a run in the accuracy table, and those the compact layout says once
# in the title when every run has the same value in them.
_RUN_COLUMNS = ("run", "method", "data", "seed", "from")
_SAYABLE_ONCE = ("data", "seed", "from")
# Narrowest a compact column is made for its header: a percentage ("100.00") fits.
_MIN_COLUMN = 6


class FitToWidth:
    """A table laid out for the width it is drawn at: `build(None, all runs)`, the boxed
    layout, where its minimum width (its longest words, Rich's measure) fits; else the compact
    layout for that width, `build(width, part)`, its columns split over as many tables as it
    takes for each to fit (`columns_of`: how many runs, ratios or measures have columns, `part`
    a slice of them; 1 never splits)."""

    def __init__(self, build: Callable[[int | None, slice], Table], columns_of: int = 1) -> None:
        self.build = lambda width, part: numbers_whole(build(width, part))
        self.columns_of = max(columns_of, 1)
        self._laid_out: dict[int, list[Table]] = {}  # by width: drawn and measured alike

    def fitted(self, console: Console, options: ConsoleOptions) -> list[Table]:
        width, count = options.max_width, self.columns_of
        if width in self._laid_out:
            return self._laid_out[width]
        # measured one column wider: a measure is capped at the width it is given
        spare = options.update_width(width + 1)

        def fits(table: Table) -> bool:
            return Measurement.get(console, spare, table).minimum <= width

        tables = [self.build(None, slice(0, count))]
        if not fits(tables[0]):
            # the most parts whose columns fit side by side (one at least), found by bisection:
            # a table of more is never narrower
            low, high = 1, count
            while low < high:
                middle = (low + high + 1) // 2
                if fits(self.build(width, slice(middle))):
                    low = middle
                else:
                    high = middle - 1
            tables = [
                self.build(width, slice(start, start + low)) for start in range(0, count, low)
            ]
        self._laid_out[width] = tables
        return tables

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from self.fitted(console, options)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        tables = self.fitted(console, options)
        measures = [Measurement.get(console, options, table) for table in tables]
        return Measurement(max(m.minimum for m in measures), max(m.maximum for m in measures))


def numbers_whole(table: Table) -> Table:
    """`table` with each right-aligned (number) column at least as wide as its widest cell, so
    that Rich's minimum width, and so `FitToWidth`'s choice, counts "56.00 ± 1.00" whole: a
    layout that fits only by breaking a number over two lines does not fit."""
    for column in table.columns:
        if column.justify == "right":
            widths = [
                cell.cell_len if isinstance(cell, Text) else len(str(cell)) for cell in column.cells
            ]
            column.min_width = max([column.min_width or 0, *widths])
    return table


def part_title(title: str, part: slice | None, count: int) -> str:
    """A table's title, and which runs it shows when it shows only some of them."""
    start, stop, _ = (part or slice(None)).indices(count)
    if (start, stop) == (0, count):
        return title
    which = f"run {stop}" if stop - start == 1 else f"runs {start + 1}-{stop}"
    return f"{title} · {which} of {count}"


def new_table(title: str, width: int | None) -> Table:
    """A comparison table: boxed (width None), or compact for `width` columns: no vertical
    rules and no edge padding, and long words folded onto the next line rather than cut. The
    title is shown as written (it may hold a dataset's name), in Rich's title style."""
    heading = inert_text(title, "table.title")
    if width is None:
        return Table(title=heading, title_justify="left")
    return Table(
        title=heading,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )


def add_column(table: Table, header: str | Text, width: int | None, **options: Any) -> None:
    """`table.add_column`, folding words that do not fit in the compact layout (width set)."""
    options.setdefault("overflow", "ellipsis" if width is None else "fold")
    table.add_column(header, **options)


def add_number_column(table: Table, header: str | Text) -> None:
    """A right-aligned column of numbers, cut to "61.…" where even the compact layout is too
    wide: folded, "61.5" over "0" would read as another number."""
    table.add_column(header, justify="right", overflow="ellipsis")


def run_header(run_id: str, width: int | None, then: str = "") -> Text:
    """A run's column header: its id, and `then` ("std") after it. With a width, the id is
    broken at its hyphens into lines of at most that many characters, and `then` goes on a
    line of its own (Rich breaks a header at spaces only, and cuts the rest to "…")."""
    shown = inert(run_id)
    if width is None:
        return Text(f"{shown} {then}" if then else shown)
    lines = textwrap.wrap(shown, max(width, _MIN_COLUMN), break_on_hyphens=True) or [shown]
    return Text("\n".join([*lines, then] if then else lines))


def column_share(width: int, first: int, columns: int) -> int:
    """How wide each of `columns` equal columns can be in a compact table `width` wide whose
    first column is `first` wide (two spaces between columns), never under a percentage."""
    return max(_MIN_COLUMN, (width - first - 2 * columns) // max(columns, 1))


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


def config_diff_table(
    runs: Sequence[CompareRun],
    only_changed: bool = True,
    width: int | None = None,
    part: slice | None = None,
) -> Table:
    """Rows = dotted config keys, columns = run ids; "-" where a run lacks the key. width:
    the compact layout for that many columns (`new_table`), else boxed. part: the runs to
    give columns, of all those whose configs are compared (default: every one)."""
    configs = [run.doc.get("config", {}) for run in runs]
    rows = config_diff(configs, only_changed=only_changed)
    shown = range(len(runs))[part or slice(None)]
    title = "Config differences" if only_changed else "Config"
    table = new_table(part_title(title, part, len(runs)), width)
    add_column(table, "key", width, style="bold")
    keys = max((len(inert(key)) for key, _ in rows), default=3)
    share = None if width is None else column_share(width, keys, len(shown))
    for index in shown:
        add_column(table, run_header(runs[index].run_id, share), width)
    for key, values in rows:
        cells = _config_row(values)
        table.add_row(inert_text(key), *(inert_text(cells[index]) for index in shown))
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
    runs: Sequence[CompareRun],
    digits: int = 2,
    robust: RobustSource | None = None,
    width: int | None = None,
    part: slice | None = None,
) -> Table:
    """One row per run: the paper's four columns, and whether they are final numbers.

    A "masking" column (the AutoAttack gradient-masking verdict) appears when any run's
    metrics carry a "masking" value; robust.attack names the source of the robust columns.
    width: the compact layout, in which a column every run has the same value in (the data,
    the seed, "final") is said once in the title instead. part: which of the four columns to
    show (default: all; the masking verdict goes with the last)."""
    robust = robust or RobustSource()
    with_masking = any((run.metrics or {}).get("masking") is not None for run in runs)
    described: list[dict[str, Text]] = []
    for run in runs:
        config = run.doc.get("config", {})
        data = config.get("data", {})
        where = data_text(data)
        described.append(
            {
                "run": inert_text(run.run_id),
                "method": inert_text(config.get("method", "?")),
                "data": inert_text(where),
                "seed": inert_text(config.get("seed", "-")),
                "from": inert_text(_source(run.metrics)),
            }
        )
    hoisted = [name for name in _SAYABLE_ONCE if width is not None and _same(described, name)]
    said = [("seed " if name == "seed" else "") + described[0][name].plain for name in hoisted]
    table = new_table(" · ".join(["Accuracy (%)", *said]), width)
    names = [name for name in _RUN_COLUMNS if name not in hoisted]
    for name in names:
        # the id whole on one line: the other columns' headers wrap first
        whole = {"no_wrap": True} if name == "run" and width is not None else {}
        add_column(table, name, width, justify="right" if name == "seed" else "left", **whole)
    columns = METRIC_COLUMNS[part or slice(None)]
    with_masking = with_masking and METRIC_COLUMNS[-1] in columns
    for column in columns:
        # as Text: "[best epoch]" would be read as Rich markup, and vanish
        title = robust.title(column)
        # compact: a word a line, so that the numbers, not their titles, set the width
        header = inert_text(title if width is None else title.replace(" ", "\n"), newlines=True)
        add_number_column(table, header)
    if with_masking:
        add_column(table, "masking", width)
    for run, row in zip(runs, described, strict=True):
        metrics = run.metrics or {}
        cells = [
            *(row[name] for name in names),
            *(_value_cell(run, column, digits) for column in columns),
        ]
        if with_masking:
            cells.append(masking_flag(metrics.get("masking")))
        table.add_row(*cells)
    return table


def _same(rows: Sequence[Mapping[str, Text]], name: str) -> bool:
    """Whether there are rows and every one reads the same in column `name`."""
    return len({row[name].plain for row in rows}) == 1


def class_table(
    runs: Sequence[CompareRun],
    digits: int = 2,
    robust: RobustSource | None = None,
    width: int | None = None,
    part: slice | None = None,
) -> Table:
    """Rows = classes, two columns per run (standard, robust per-class accuracy). Classes the
    run treats as under-represented carry "*": on the name when all runs agree, else on the
    value of each run that does. width: the compact layout for that many columns. part: the
    runs to give columns, of all those compared (default: every one)."""
    resolved = [run.doc.get("resolved") or {} for run in runs]
    names_per_run = [list(r.get("class_names") or []) for r in resolved]
    under_per_run = [set(r.get("under_classes") or []) for r in resolved]
    sizes = [len(names) for names in names_per_run]
    sizes += [len((run.metrics or {}).get("std_class") or []) for run in runs]
    num_classes = max(sizes, default=0)
    # Runs whose config.json lacks the resolved block say nothing about under-representation.
    known_under = [u for u, r in zip(under_per_run, resolved, strict=True) if "under_classes" in r]
    same_under = all(under == known_under[0] for under in known_under)
    labels: list[str] = []
    for cls in range(num_classes):
        names: list[str] = []
        for run_names in names_per_run:
            if cls < len(run_names) and run_names[cls] not in names:
                names.append(str(run_names[cls]))
        label = " / ".join(names) if names else str(cls)
        if same_under and known_under and cls in known_under[0]:
            label += " *"
        labels.append(inert(label))
    shown = range(len(runs))[part or slice(None)]
    table = new_table(part_title("Per class accuracy (%)", part, len(runs)), width)
    add_column(table, "class", width)
    first = max(map(len, [*labels, "class"]))
    share = None if width is None else column_share(width, first, 2 * len(shown))
    rob = f"rob [{robust.attack}]" if robust and robust.attack else "rob"
    for index in shown:
        for then in ("std", rob):
            add_number_column(table, run_header(runs[index].run_id, share, then))
    for cls, label in enumerate(labels):
        row = [Text(label)]
        for run, under in ((runs[index], under_per_run[index]) for index in shown):
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
    metrics). robust: set when the robust columns come from a stored `srat eval` attack. Each
    table is boxed where it fits and compact where it does not (`FitToWidth`)."""
    out: list[RenderableType] = [
        FitToWidth(partial(config_diff_table, runs, only_changed), len(runs)),
        FitToWidth(partial(metrics_table, runs, digits, robust), len(METRIC_COLUMNS)),
    ]
    if any(run.metrics and run.metrics.get("std_class") for run in runs):
        out.append(FitToWidth(partial(class_table, runs, digits, robust), len(runs)))
    if robust is not None and robust.selection:
        out.append(Text(f"[best epoch] {robust.selection}", style="bold"))
    return out


def seed_table(
    block: TableBlock,
    digits: int = 2,
    robust: RobustSource | None = None,
    width: int | None = None,
    part: slice | None = None,
) -> Table:
    """One dataset and imbalance of the paper's layout (`report.paper_table`): a row per
    method, mean ± std over the seeds of each configuration, the cells `srat runs export
    --format md` writes. width: the compact layout; part: the imbalance ratios to show (their
    four columns each), of all the block's (default: every one)."""
    robust = robust or RobustSource()
    shown = range(len(block.ratios))[part or slice(None)]
    table = new_table(f"{block_title(block)}: mean ± std over seeds", width)
    add_column(table, "method", width)
    add_column(table, "seeds", width, justify="right")
    for index in shown:
        for column in METRIC_COLUMNS:
            header = f"K={format_ratio(block.ratios[index])} {robust.title(column)}"
            add_number_column(table, inert_text(header))
    per_ratio = len(METRIC_COLUMNS)
    for row in block.rows:
        counts = [row.cells[block.ratios[i]].n for i in shown if block.ratios[i] in row.cells]
        cells = value_cells(block, row, digits, robust, pm=" ± ", mark=f" {MASK_MARK}")
        values = [cells[i * per_ratio + k] for i in shown for k in range(per_ratio)]
        row_cells = (inert_text(c) for c in values)
        table.add_row(inert_text(row.label), "/".join(map(str, counts)) or "-", *row_cells)
    return table


def seed_tables(
    blocks: Sequence[TableBlock], digits: int = 2, robust: RobustSource | None = None
) -> list[RenderableType]:
    """The paper's layout of the compared runs: a `seed_table` per dataset and imbalance,
    boxed where it fits, else compact, its ratios split over tables where they do not fit
    side by side (`FitToWidth`)."""
    return [
        FitToWidth(partial(seed_table, block, digits, robust), len(block.ratios))
        for block in blocks
    ]
