"""Formatting of comparison and paper-layout structures: export text and Rich tables.

Pure formatting over `srat_engine.reporting.report` structures; the CLI and the Textual app
both use it.
Nothing here imports torch, so `srat runs compare` and exports start fast.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from srat_engine.reporting.report import COLUMNS, Stat, TableBlock, config_diff

EXPORT_FORMATS: tuple[str, ...] = ("csv", "md", "latex", "json")

COLUMN_TITLES: dict[str, str] = {
    "std_overall": "Std overall",
    "std_under": "Std under",
    "rob_overall": "Rob overall",
    "rob_under": "Rob under",
}

_DATASET_TITLES: dict[str, str] = {
    "cifar10": "CIFAR-10",
    "cifar100": "CIFAR-100",
    "svhn": "SVHN",
    "digits": "Digits",
    "gaussian": "Gaussian mixture",
    "synthetic": "Synthetic",
}


def format_ratio(ratio: float) -> str:
    """100.0 -> "100": configs store K as a float, tables print it as the paper does."""
    return f"{ratio:g}"


def block_title(block: TableBlock) -> str:
    dataset = _DATASET_TITLES.get(block.dataset, block.dataset)
    return f"{dataset}, {block.imbalance.capitalize()} imbalance"


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def cell_text(
    stat: Stat | None, paper: float | None, with_paper: bool, digits: int = 2, pm: str = " ± "
) -> str:
    """One table cell: mean ± sample std (std only when n > 1), "-" without a value, and
    " (paper 63.13)" appended when with_paper and the paper has the cell."""
    if stat is None or stat.mean is None:
        text = "-"
    elif stat.std is None:
        text = _num(stat.mean, digits)
    else:
        text = f"{_num(stat.mean, digits)}{pm}{_num(stat.std, digits)}"
    if with_paper and paper is not None:
        text += f" (paper {paper:.{digits}f})"
    return text


# -- export ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RobustSource:
    """Where the robust columns come from, for headers and marks.

    attack: None for the training-time PGD-20 columns, else the title of the `srat eval`
    attack whose stored results replaced them ("AutoAttack"). flagged: ids of runs whose
    AutoAttack evaluation suspects gradient masking; cells holding one get MASK_MARK.
    """

    attack: str | None = None
    flagged: frozenset[str] = frozenset()

    def title(self, column: str) -> str:
        title = COLUMN_TITLES[column]
        return f"{title} [{self.attack}]" if self.attack and column.startswith("rob") else title

    def marked(self, run_ids: Collection[str], column: str) -> bool:
        return column.startswith("rob") and any(r in self.flagged for r in run_ids)


MASK_MARK = "(!)"
MASK_NOTE = (
    "gradient masking suspected: AutoAttack more than 10 points below PGD-20 "
    "(srat eval --attack autoattack)"
)


def format_export(
    blocks: Sequence[TableBlock], fmt: str, digits: int = 2, robust: RobustSource | None = None
) -> str:
    """The blocks as csv | md | latex | json text. digits: decimals in md and latex (csv and
    json keep full precision for further processing). robust: the robust columns' source and
    the runs to mark for gradient masking (csv/json get extra fields, md/latex a mark and a
    note). Unknown fmt -> ValueError."""
    key = fmt.strip().lower()
    robust = robust or RobustSource()
    if key == "csv":
        return _export_csv(blocks, robust)
    if key in ("md", "markdown"):
        return _export_md(blocks, digits, robust)
    if key in ("latex", "tex"):
        return _export_latex(blocks, digits, robust)
    if key == "json":
        return json.dumps([_json_block(block, robust) for block in blocks], indent=2) + "\n"
    raise ValueError(f"unknown export format {fmt!r} (known: {', '.join(EXPORT_FORMATS)})")


def _block_flagged(block: TableBlock, robust: RobustSource) -> list[str]:
    ids = {r for row in block.rows for cell in row.cells.values() for r in cell.run_ids}
    return sorted(ids & robust.flagged)


def _json_block(block: TableBlock, robust: RobustSource) -> dict[str, Any]:
    data = block.to_dict()
    if robust.attack or robust.flagged:
        data["robust_attack"] = robust.attack or "PGD-20 (training)"
        data["masking_suspected_runs"] = _block_flagged(block, robust)
    return data


def _csv_number(value: float | None) -> str:
    # Round off float noise (62.00000000001) but keep more than the tables show.
    return "" if value is None else repr(round(value, 6))


def _export_csv(blocks: Sequence[TableBlock], robust: RobustSource) -> str:
    with_paper = any(block.with_paper for block in blocks)
    extra = bool(robust.attack or robust.flagged)
    header = ["dataset", "imbalance", "ratio", "method", "label", "config_key", "n", "seeds"]
    for column in COLUMNS:
        header += [column, f"{column}_std"]
    if with_paper:
        header += [f"paper_{column}" for column in COLUMNS]
    if extra:
        header += ["robust_attack", "masking_suspected"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for block in blocks:
        for row in block.rows:
            for ratio in block.ratios:
                cell = row.cells.get(ratio)
                if cell is None:
                    continue
                line = [
                    block.dataset,
                    block.imbalance,
                    format_ratio(ratio),
                    row.method,
                    row.label,
                    cell.config_key,
                    str(cell.n),
                    " ".join("" if s is None else str(s) for s in cell.seeds),
                ]
                for column in COLUMNS:
                    stat = cell.values.get(column)
                    line += [
                        _csv_number(stat.mean if stat else None),
                        _csv_number(stat.std if stat else None),
                    ]
                if with_paper:
                    paper = cell.paper or {}
                    line += [_csv_number(paper.get(column)) for column in COLUMNS]
                if extra:
                    flagged = sum(r in robust.flagged for r in cell.run_ids)
                    line += [robust.attack or "PGD-20 (training)", str(flagged)]
                writer.writerow(line)
    return out.getvalue()


def _md_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|")


def _export_md(blocks: Sequence[TableBlock], digits: int, robust: RobustSource) -> str:
    parts: list[str] = []
    for block in blocks:
        header = ["Method"]
        for ratio in block.ratios:
            header += [f"K={format_ratio(ratio)} {robust.title(c)}" for c in COLUMNS]
        lines = [
            f"### {_md_escape(block_title(block))}",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "---|" + "---:|" * (len(header) - 1),
        ]
        for row in block.rows:
            cells = [_md_escape(row.label)]
            for ratio in block.ratios:
                cell = row.cells.get(ratio)
                for column in COLUMNS:
                    if cell is None:
                        cells.append("-")
                        continue
                    paper = (cell.paper or {}).get(column)
                    text = cell_text(cell.values.get(column), paper, block.with_paper, digits)
                    mark = f" {MASK_MARK}" if robust.marked(cell.run_ids, column) else ""
                    cells.append(text + mark)
            lines.append("| " + " | ".join(cells) + " |")
        flagged = _block_flagged(block, robust)
        if flagged:
            lines += ["", f"{MASK_MARK} {MASK_NOTE}: {', '.join(flagged)}"]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


_LATEX_SPECIAL: dict[str, str] = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    """Text safe inside a LaTeX tabular cell (one pass, so replacements are not re-escaped)."""
    escaped = "".join(_LATEX_SPECIAL.get(char, char) for char in text)
    # A cell opening with "[" after "\\" would be read as the row-spacing argument of "\\".
    return "{}" + escaped if escaped.startswith("[") else escaped


def _export_latex(blocks: Sequence[TableBlock], digits: int, robust: RobustSource) -> str:
    parts: list[str] = []
    for block in blocks:
        k = len(block.ratios)
        spec = "l" + "|cccc" * k
        lines = [
            f"% {latex_escape(block_title(block))}",
            f"\\begin{{tabular}}{{{spec}}}",
            "\\hline",
            f" & \\multicolumn{{{4 * k}}}{{c}}{{Imbalance Ratio}} \\\\",
        ]
        ratio_heads = []
        acc_heads = []
        for i, ratio in enumerate(block.ratios):
            bar = "|" if i < k - 1 else ""
            ratio_heads.append(f"\\multicolumn{{4}}{{c{bar}}}{{{format_ratio(ratio)}}}")
            acc_heads.append("\\multicolumn{2}{c}{Standard Accuracy}")
            rob_head = f"Robust Accuracy [{robust.attack}]" if robust.attack else "Robust Accuracy"
            acc_heads.append(f"\\multicolumn{{2}}{{c{bar}}}{{{latex_escape(rob_head)}}}")
        lines.append(" & " + " & ".join(ratio_heads) + " \\\\")
        lines.append(" & " + " & ".join(acc_heads) + " \\\\")
        lines.append("Method & " + " & ".join(["Overall & Under & Overall & Under"] * k) + " \\\\")
        lines.append("\\hline")
        for row in block.rows:
            cells = [latex_escape(row.label)]
            for ratio in block.ratios:
                cell = row.cells.get(ratio)
                for column in COLUMNS:
                    if cell is None:
                        cells.append("-")
                        continue
                    paper = (cell.paper or {}).get(column)
                    text = cell_text(
                        cell.values.get(column), paper, block.with_paper, digits, pm=" $\\pm$ "
                    )
                    if robust.marked(cell.run_ids, column):
                        text += "$^\\dagger$"
                    cells.append(text)
            lines.append(" & ".join(cells) + " \\\\")
        lines += ["\\hline", "\\end{tabular}"]
        flagged = _block_flagged(block, robust)
        if flagged:
            lines.append(f"% $\\dagger$ {MASK_NOTE}: {latex_escape(', '.join(flagged))}")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


# -- srat runs compare -----------------------------------------------------------------------


@dataclass(frozen=True)
class CompareRun:
    """One run to compare.

    run_id: its id (a column header). doc: its config.json document ({"config": ...,
    "resolved": ...}). metrics: what to show for it, normally `report.pick_metrics(events)`:
    the "final" event of metrics.jsonl, else the latest "epoch" event, else None (no numbers).
    """

    run_id: str
    doc: Mapping[str, Any]
    metrics: Mapping[str, Any] | None = None


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
        table.add_column(run.run_id)
    for key, values in rows:
        table.add_row(Text(key), *(Text(v) for v in _config_row(values)))
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


def _masking(metrics: Mapping[str, Any] | None) -> Text:
    suspected = (metrics or {}).get("masking")
    if suspected is True:
        return Text("SUSPECTED", style="bold red")
    return Text("no" if suspected is False else "-")


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
    for column in COLUMNS:
        table.add_column(robust.title(column), justify="right")
    if with_masking:
        table.add_column("masking")
    for run in runs:
        config = run.doc.get("config", {})
        data = config.get("data", {})
        ratio = data.get("ratio")
        where = f"{data.get('dataset', '?')} {data.get('imbalance', '?')}"
        if ratio is not None and data.get("imbalance") != "none":
            where += f" K={format_ratio(float(ratio))}"
        metrics = run.metrics or {}
        cells = [
            Text(run.run_id),
            Text(str(config.get("method", "?"))),
            Text(where),
            Text(str(config.get("seed", "-"))),
            Text(_source(run.metrics)),
            *(Text(_num(metrics.get(column), digits)) for column in COLUMNS),
        ]
        if with_masking:
            cells.append(_masking(metrics))
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
        table.add_column(f"{run.run_id} std", justify="right")
        rob = f"rob [{robust.attack}]" if robust and robust.attack else "rob"
        table.add_column(f"{run.run_id} {rob}", justify="right")
    for cls in range(num_classes):
        names: list[str] = []
        for run_names in names_per_run:
            if cls < len(run_names) and run_names[cls] not in names:
                names.append(str(run_names[cls]))
        label = " / ".join(names) if names else str(cls)
        if same_under and known_under and cls in known_under[0]:
            label += " *"
        row = [Text(label)]
        for run, under in zip(runs, under_per_run, strict=True):
            metrics = run.metrics or {}
            mark = " *" if not same_under and cls in under else ""
            for key in ("std_class", "rob_class"):
                values = metrics.get(key) or []
                value = values[cls] if cls < len(values) else None
                row.append(Text(_num(value, digits) + mark))
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
    return out
