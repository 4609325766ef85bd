"""The SRAT paper's reported numbers (Tables 1-4), packaged as `srat_engine/data/paper_results.csv`.

Keys use the names of a run's metrics (std_overall, ...), so a cell of ours and the paper's cell
line up without renaming.
"""

from __future__ import annotations

import csv
import functools
import io
from importlib import resources

# Metric key -> CSV column.
_CSV_COLUMNS: dict[str, str] = {
    "std_overall": "standard_overall",
    "std_under": "standard_under",
    "rob_overall": "robust_overall",
    "rob_under": "robust_under",
}

PaperKey = tuple[str, str, float, str]


@functools.cache
def paper_results() -> dict[PaperKey, dict[str, float]]:
    """Every row of the packaged table, keyed by (dataset, imbalance, ratio, method), lower-cased
    dataset/imbalance/method so look-ups are case-insensitive."""
    text = (resources.files("srat_engine.reporting") / "paper_results.csv").read_text(
        encoding="utf-8"
    )
    table: dict[PaperKey, dict[str, float]] = {}
    for row in csv.DictReader(io.StringIO(text)):
        key = _key(row["dataset"], row["imbalance"], float(row["ratio"]), row["method"])
        table[key] = {name: float(row[column]) for name, column in _CSV_COLUMNS.items()}
    return table


def _key(dataset: str, imbalance: str, ratio: float, method: str) -> PaperKey:
    return (
        dataset.strip().lower(),
        imbalance.strip().lower(),
        float(ratio),
        method.strip().lower(),
    )


def paper_result(
    dataset: str, imbalance: str, ratio: float, method: str
) -> dict[str, float] | None:
    """The paper's four numbers (std_overall, std_under, rob_overall, rob_under) for one cell, or
    None when the paper has no such cell (other datasets, ratios or methods such as GAIRAT)."""
    try:
        key = _key(dataset, imbalance, ratio, method)
    except (TypeError, ValueError):
        return None
    found = paper_results().get(key)
    # A copy: callers may annotate it, and the cache must stay as packaged.
    return dict(found) if found is not None else None
