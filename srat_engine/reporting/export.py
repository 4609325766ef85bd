"""The paper-layout tables as files: csv, Markdown, LaTeX and JSON text.

Pure functions over `srat_engine.reporting.report` structures (`TableBlock`); `srat runs
export` and the TUI's export dialog write what they return. No terminal formatting here: the
Rich tables of `srat runs compare` live in `srat_tui.render.compare`.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from srat_engine.reporting.report import Stat, TableBlock, TableRow
from srat_engine.runs.evaluations import check_checkpoint
from srat_engine.runs.records import METRIC_COLUMNS

EXPORT_FORMATS: tuple[str, ...] = ("csv", "md", "latex", "json")
# Other names a format answers to, as --format and as a file name's extension
_ALIASES: dict[str, str] = {"markdown": "md", "tex": "latex"}
# What srat names a file of each format
EXTENSIONS: dict[str, str] = {"csv": "csv", "md": "md", "latex": "tex", "json": "json"}
DEFAULT_FORMAT = "md"

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
    """A block's heading: "CIFAR-10, Step imbalance"."""
    dataset = _DATASET_TITLES.get(block.dataset, block.dataset)
    return f"{dataset}, {block.imbalance.capitalize()} imbalance"


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def cell_text(
    stat: Stat | None,
    paper: float | None,
    with_paper: bool,
    digits: int = 2,
    pm: str = " ± ",
    runs: int | None = None,
) -> str:
    """One table cell: mean ± sample std (std only when n > 1), "-" without a value, " (n=1)"
    when the value comes from fewer than the cell's `runs` (a run without the `srat eval`
    result the robust columns show), and " (paper 63.13)" appended when with_paper and the
    paper has the cell."""
    if stat is None or stat.mean is None:
        text = "-"
    elif stat.std is None:
        text = _num(stat.mean, digits)
    else:
        text = f"{_num(stat.mean, digits)}{pm}{_num(stat.std, digits)}"
    if stat is not None and stat.mean is not None and runs is not None and stat.n < runs:
        text += f" (n={stat.n})"
    if with_paper and paper is not None:
        text += f" (paper {paper:.{digits}f})"
    return text


# Said under every md and LaTeX table: what a cell's two numbers are, what "(n=k)" means
STATS_NOTE = (
    "cells: mean and sample std (n - 1) over each configuration's seeds; (n=k): a cell "
    "averaged over k of its runs, the others having no such result"
)


# -- robust columns ----------------------------------------------------------------------


@dataclass(frozen=True)
class RobustSource:
    """Where the robust columns come from, for headers and marks.

    attack: None for the training-time PGD-20 columns, else the title of the `srat eval`
    attack whose stored results replaced them ("AutoAttack"). flagged: ids of runs whose
    AutoAttack evaluation suspects gradient masking; cells holding one get MASK_MARK.
    selection: None for each run's last checkpoint, else how another epoch was chosen
    (SELECTED_ON_TEST): every column is then marked, and every table says so.
    """

    attack: str | None = None
    flagged: frozenset[str] = frozenset()
    selection: str | None = None
    # the training-time columns' attack, the runs' own evaluation PGD (`training_title`)
    training: str = "PGD-20 (training)"

    def title(self, column: str) -> str:
        title = COLUMN_TITLES[column]
        if self.attack and column.startswith("rob"):
            title = f"{title} [{self.attack}]"
        return f"{title} [best epoch]" if self.selection else title

    def at_checkpoint(self, checkpoint: str) -> RobustSource:
        """These columns for each run's `checkpoint` (`runs.evaluations.CHECKPOINTS`): as they
        are for "last", marked as selected on the test set for "best"; SratError otherwise."""
        check_checkpoint(checkpoint)
        return self if checkpoint == "last" else replace(self, selection=SELECTED_ON_TEST)

    def marked(self, run_ids: Collection[str], column: str) -> bool:
        return column.startswith("rob") and any(r in self.flagged for r in run_ids)


def training_title(records: Sequence[Mapping[str, Any]]) -> str:
    """What the training-time robust columns of `records` (with their `config`, as the
    exports attach it) ran: "PGD-20 (training)", the step counts joined when runs differ."""
    steps = set()
    for record in records:
        config = record.get("config")
        evaluation = config.get("eval") if isinstance(config, Mapping) else None
        if isinstance(evaluation, Mapping) and isinstance(evaluation.get("steps"), int):
            steps.add(int(evaluation["steps"]))
    if not steps:
        return "PGD-20 (training)"
    return " / ".join(f"PGD-{n}" for n in sorted(steps, reverse=True)) + " (training)"


# What `--checkpoint best` reports, said wherever its numbers appear: the epoch is chosen by the
# test set, as AT-BSL's and REAT's code choose it, so its numbers are optimistic.
SELECTED_ON_TEST = (
    "selected on the test set: each run's epoch with the best per-epoch PGD robust accuracy "
    "(on the test set's balanced robust subset), its standard accuracy on the full test set"
)

MASK_MARK = "(!)"
MASK_NOTE = (
    "gradient masking suspected: AutoAttack or logit-scaled PGD more than 10 points below "
    "PGD-20 (srat eval --attack autoattack)"
)


def format_export(
    blocks: Sequence[TableBlock], fmt: str, digits: int = 2, robust: RobustSource | None = None
) -> str:
    """The blocks as csv | md | latex | json text. digits: decimals in md and latex (csv and
    json keep full precision for further processing). robust: the robust columns' source and
    the runs to mark for gradient masking (csv/json get extra fields, md/latex a mark and a
    note). Unknown fmt -> ValueError."""
    key = canonical_format(fmt)
    robust = robust or RobustSource()
    if key == "csv":
        return _export_csv(blocks, robust)
    if key == "md":
        return _export_md(blocks, digits, robust)
    if key == "latex":
        return _export_latex(blocks, digits, robust)
    return json.dumps([_json_block(block, robust) for block in blocks], indent=2) + "\n"


def canonical_format(fmt: str) -> str:
    """One of EXPORT_FORMATS for a format's name or alias (`markdown`, `tex`), any case.
    Unknown -> ValueError."""
    key = fmt.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r} (known: {', '.join(EXPORT_FORMATS)})")
    return key


def format_of_path(path: Path) -> str | None:
    """The format a file name's extension names (`table.tex` -> latex), None for another
    (or none)."""
    try:
        return canonical_format(path.suffix.lstrip("."))
    except ValueError:
        return None


def export_format(fmt: str | None, path: Path | None) -> str:
    """What an export writes: `fmt` when given, else the format `path`'s extension names,
    else md. A given format that another format's extension contradicts (`--format csv -o
    table.tex`) is a ValueError: one of the two is a slip, and the file would mislead."""
    named = format_of_path(path) if path is not None else None
    if fmt is None:
        return named or DEFAULT_FORMAT
    key = canonical_format(fmt)
    if named is not None and named != key:
        raise ValueError(
            f"the format is {key} but {path} is named as {named}: leave one out, or make them agree"
        )
    return key


def _block_flagged(block: TableBlock, robust: RobustSource) -> list[str]:
    ids = {r for row in block.rows for cell in row.cells.values() for r in cell.run_ids}
    return sorted(ids & robust.flagged)


def _json_block(block: TableBlock, robust: RobustSource) -> dict[str, Any]:
    data = block.to_dict()
    if robust.attack or robust.flagged:
        data["robust_attack"] = robust.attack or robust.training
        data["masking_suspected_runs"] = _block_flagged(block, robust)
    if robust.selection:
        data["selection"] = robust.selection
    return data


def _csv_number(value: float | None) -> str:
    # Round off float noise (62.00000000001) but keep more than the tables show.
    return "" if value is None else repr(round(value, 6))


def _export_csv(blocks: Sequence[TableBlock], robust: RobustSource) -> str:
    with_paper = any(block.with_paper for block in blocks)
    extra = bool(robust.attack or robust.flagged)
    header = ["dataset", "imbalance", "ratio", "method", "label", "config_key", "n", "seeds"]
    for column in METRIC_COLUMNS:
        header += [column, f"{column}_std", f"{column}_n"]
    if with_paper:
        header += [f"paper_{column}" for column in METRIC_COLUMNS]
    if extra:
        header += ["robust_attack", "masking_suspected"]
    if robust.selection:
        header += ["selection"]
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
                for column in METRIC_COLUMNS:
                    stat = cell.values.get(column)
                    line += [
                        _csv_number(stat.mean if stat else None),
                        _csv_number(stat.std if stat else None),
                        str(stat.n if stat else 0),
                    ]
                if with_paper:
                    paper = cell.paper or {}
                    line += [_csv_number(paper.get(column)) for column in METRIC_COLUMNS]
                if extra:
                    flagged = sum(r in robust.flagged for r in cell.run_ids)
                    line += [robust.attack or robust.training, str(flagged)]
                if robust.selection:
                    line += [robust.selection]
                writer.writerow(line)
    return out.getvalue()


def value_cells(
    block: TableBlock, row: TableRow, digits: int, robust: RobustSource, pm: str, mark: str
) -> list[str]:
    """A row's value cells for md and latex: four per ratio (`cell_text`, "-" where the row
    has no run at that ratio), `mark` after a robust cell that holds a flagged run."""
    cells: list[str] = []
    for ratio in block.ratios:
        cell = row.cells.get(ratio)
        for column in METRIC_COLUMNS:
            if cell is None:
                cells.append("-")
                continue
            paper = (cell.paper or {}).get(column)
            stat = cell.values.get(column)
            text = cell_text(stat, paper, block.with_paper, digits, pm=pm, runs=cell.n)
            cells.append(text + (mark if robust.marked(cell.run_ids, column) else ""))
    return cells


def _md_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|")


def _export_md(blocks: Sequence[TableBlock], digits: int, robust: RobustSource) -> str:
    parts: list[str] = []
    for block in blocks:
        header = ["Method"]
        for ratio in block.ratios:
            header += [f"K={format_ratio(ratio)} {robust.title(c)}" for c in METRIC_COLUMNS]
        lines = [
            f"### {_md_escape(block_title(block))}",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "---|" + "---:|" * (len(header) - 1),
        ]
        for row in block.rows:
            values = value_cells(block, row, digits, robust, pm=" ± ", mark=f" {MASK_MARK}")
            lines.append("| " + " | ".join([_md_escape(row.label), *values]) + " |")
        lines += ["", STATS_NOTE]
        flagged = _block_flagged(block, robust)
        if flagged:
            lines += ["", f"{MASK_MARK} {MASK_NOTE}: {', '.join(flagged)}"]
        if robust.selection:
            lines += ["", f"[best epoch] {robust.selection}"]
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
            values = value_cells(block, row, digits, robust, pm=" $\\pm$ ", mark="$^\\dagger$")
            lines.append(" & ".join([latex_escape(row.label), *values]) + " \\\\")
        lines += ["\\hline", "\\end{tabular}", f"% {latex_escape(STATS_NOTE)}"]
        flagged = _block_flagged(block, robust)
        if flagged:
            lines.append(f"% $\\dagger$ {MASK_NOTE}: {latex_escape(', '.join(flagged))}")
        if robust.selection:
            lines.append(f"% [best epoch] {robust.selection}")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"
