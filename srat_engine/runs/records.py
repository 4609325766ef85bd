"""Which metrics record is a run's result: one rule for the index, reports, `srat runs show`
and the TUI.

metrics.jsonl is a log in file order: an `epoch` record per epoch (robust accuracy maybe only
every N epochs, eval.robust_every), a `resume` record when a run continues from a checkpoint,
and a `final` record with the full evaluation after the last epoch. A final record describes the
weights it evaluated: an epoch or a resume after it means the run trained further (resumed with
more epochs), so it is stale and the run's result is its latest epoch again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

R = TypeVar("R", bound=Mapping[str, Any])

# The paper's four columns (Tables 1-4): standard and robust accuracy, overall and on the
# under-represented classes; every table, export and index record uses them in this order.
METRIC_COLUMNS: tuple[str, ...] = ("std_overall", "std_under", "rob_overall", "rob_under")

# Events after which an earlier final record no longer describes the run's weights.
_TRAINED_FURTHER = ("epoch", "resume")


def current_final(records: Iterable[R]) -> R | None:
    """The last `final` record, unless an `epoch` or `resume` record comes after it."""
    final: R | None = None
    for record in records:
        event = record.get("event")
        if event == "final":
            final = record
        elif event in _TRAINED_FURTHER:
            final = None
    return final


def latest_epoch(records: Sequence[R]) -> R | None:
    """The last `epoch` record with an integer epoch, in file order: after a resume that re-runs
    epochs, the last one written is the run's progress, not the one with the largest number."""
    for record in reversed(records):
        if record.get("event") == "epoch" and isinstance(record.get("epoch"), int):
            return record
    return None


def result_record(records: Sequence[R]) -> tuple[R | None, bool]:
    """The whole record to show as the run's result, and whether it is a final evaluation:
    the current final record (`current_final`), else the latest epoch record (`latest_epoch`,
    whose robust fields are missing on epochs that did not measure them), else None."""
    final = current_final(records)
    if final is not None:
        return final, True
    return latest_epoch(records), False


def result_columns(
    records: Iterable[Mapping[str, Any]], columns: Sequence[str]
) -> tuple[dict[str, Any], bool]:
    """`columns` of the run's result, and whether they come from a final evaluation.

    The current final record's values if there is one; else, per column, the latest value any
    epoch record holds: with robust accuracy measured every N epochs the latest epoch has
    standard accuracy only, and the robust columns come from the last epoch that measured them.
    A column no record holds is None.
    """
    records = list(records)
    final = current_final(records)
    if final is not None:
        return {column: final.get(column) for column in columns}, True
    latest: dict[str, Any] = dict.fromkeys(columns)
    for record in records:
        if record.get("event") == "epoch":
            for column in columns:
                if record.get(column) is not None:
                    latest[column] = record[column]
    return latest, False
