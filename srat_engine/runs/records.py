"""Which metrics record is a run's result: one rule for the index, reports, `srat runs show`
and the TUI.

metrics.jsonl is a log in file order: an `epoch` record per epoch (robust accuracy maybe only
every N epochs, eval.robust_every), a `resume` record when a run continues from a checkpoint,
and a `final` record with the full evaluation after the last epoch. A final record describes the
weights it evaluated: an epoch or a resume after it means the run trained further (resumed with
more epochs), so it is stale and the run's result is its latest epoch again.

A record that a hand edit or another tool damaged (`damage`: a number that is not one, a
per-class list of the wrong length) is never a result: readers skip it and say so once per run
(`damage_note`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

R = TypeVar("R", bound=Mapping[str, Any])

# The paper's four columns (Tables 1-4): standard and robust accuracy, overall and on the
# under-represented classes; every table, export and index record uses them in this order.
METRIC_COLUMNS: tuple[str, ...] = ("std_overall", "std_under", "rob_overall", "rob_under")

# Per-class accuracies: one number per class, in class order.
CLASS_COLUMNS: tuple[str, ...] = ("std_class", "rob_class")

# What every final record srat writes holds (the robust ones None without an attack).
FINAL_FIELDS: tuple[str, ...] = (*METRIC_COLUMNS, *CLASS_COLUMNS)

# Events after which an earlier final record no longer describes the run's weights.
_TRAINED_FURTHER = ("epoch", "resume")
_RESULTS = ("epoch", "final")


def is_number(value: Any) -> bool:
    """An int or a float, not a bool (JSON true must not count, or print, as 1)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def metric_damage(record: Mapping[str, Any]) -> str | None:
    """Which of the four columns (METRIC_COLUMNS) of a metrics or index record holds something
    other than a number or None, and what, or None when none does."""
    for column in METRIC_COLUMNS:
        value = record.get(column)
        if value is not None and not is_number(value):
            return f"{column} is {_shown(value)}, not a number"
    return None


def damage(record: Mapping[str, Any], num_classes: int | None = None) -> str | None:
    """Why an `epoch` or `final` record cannot be a run's result, or None when it can.

    Damaged: a metric column (METRIC_COLUMNS) that is neither a number nor None; a per-class
    column (CLASS_COLUMNS) that is neither None nor a list of numbers, one per class
    (`num_classes` when the run's config says it, else the two lists agree); a final record
    without a number for std_overall (the standard evaluation every final carries). Any other
    missing column is not damage: epoch records leave out what they did not measure.
    """
    if record.get("event") not in _RESULTS:
        return None
    wrong = metric_damage(record)
    if wrong is not None:
        return wrong
    lengths: list[int] = []
    for column in CLASS_COLUMNS:
        values = record.get(column)
        if values is None:
            continue
        if not isinstance(values, list) or not all(is_number(v) for v in values):
            return f"{column} is {_shown(values)}, not a list of numbers"
        if num_classes is not None and len(values) != num_classes:
            return f"{column} has {len(values)} values for {num_classes} classes"
        lengths.append(len(values))
    if len(set(lengths)) > 1:
        return f"std_class and rob_class differ in length ({lengths[0]} and {lengths[1]})"
    if record.get("event") == "final" and not is_number(record.get("std_overall")):
        return "std_overall missing"
    return None


def current_final(records: Iterable[R], num_classes: int | None = None) -> R | None:
    """The last undamaged `final` record (`damage`), unless an `epoch` or `resume` record comes
    after it."""
    final: R | None = None
    for record in records:
        event = record.get("event")
        if event == "final":
            if damage(record, num_classes) is None:
                final = record
        elif event in _TRAINED_FURTHER:
            final = None
    return final


def epoch_summary(record: Mapping[str, Any]) -> str:
    """One plain line for an `epoch` record, as `srat run` prints it and log.txt keeps it:
    readable, greppable, no TTY needed ("epoch  3/30  lr 0.1  loss 1.2345  std 56.78/45.67
    rob 34.56/23.45  12.3s"; std and rob: overall/under, "-" where not evaluated)."""

    def pct(value: Any) -> str:
        return f"{value:.2f}" if is_number(value) else "-"

    def number(key: str, fmt: str) -> str:
        value = record.get(key)
        return format(value, fmt) if is_number(value) else "-"

    epochs = record.get("epochs")
    parts = [
        f"epoch {record.get('epoch', '?'):>{len(str(epochs))}}/{epochs}",
        f"lr {number('lr', '.4g')}",
        f"loss {number('loss', '.4f')}",
    ]
    if is_number(record.get("sep_loss")):
        parts.append(f"sep {number('sep_loss', '.4f')}")
    parts.append(f"std {pct(record.get('std_overall'))}/{pct(record.get('std_under'))}")
    if is_number(record.get("rob_overall")):
        parts.append(f"rob {pct(record.get('rob_overall'))}/{pct(record.get('rob_under'))}")
    flags = [flag for flag in ("reweighting", "gair") if record.get(flag)]
    if flags:
        parts.append("+" + "+".join(flags))
    seconds = [record.get(key) for key in ("train_seconds", "eval_seconds")]
    if all(is_number(value) for value in seconds):
        parts.append(f"{sum(seconds):.1f}s")
    return "  ".join(parts)


def epoch_records(records: Iterable[R]) -> list[R]:
    """The `epoch` events, one per epoch in epoch order: what every curve of a run plots.

    A resumed run repeats the epochs after its last checkpoint; the later record is what the
    run went on from, so it replaces the earlier one.
    """
    latest: dict[int, R] = {}
    for record in records:
        if record.get("event") == "epoch" and isinstance(record.get("epoch"), int):
            latest[record["epoch"]] = record
    return [latest[epoch] for epoch in sorted(latest)]


def latest_epoch(records: Sequence[R]) -> R | None:
    """The last `epoch` record with an integer epoch, in file order: after a resume that re-runs
    epochs, the last one written is the run's progress, not the one with the largest number."""
    for record in reversed(records):
        if record.get("event") == "epoch" and isinstance(record.get("epoch"), int):
            return record
    return None


def best_epoch(
    records: Sequence[R], num_classes: int | None = None, column: str = "rob_overall"
) -> R | None:
    """The undamaged epoch record with the highest `column` among those that measured it (the
    earliest of equals), or None: "the best epoch by PGD on the test set", the checkpoint
    AT-BSL's and REAT's code report. The per-epoch robust accuracy is measured on the test
    set's balanced robust subset, so a choice by it is a choice on the test set."""
    best: R | None = None
    for record in records:
        value = record.get(column)
        if record.get("event") != "epoch" or not is_number(value):
            continue
        if damage(record, num_classes) is not None:
            continue
        if best is None or value > best[column]:
            best = record
    return best


def result_record(records: Sequence[R], num_classes: int | None = None) -> tuple[R | None, bool]:
    """The whole record to show as the run's result, and whether it is a final evaluation:
    the current final record (`current_final`), else the latest undamaged epoch record
    (`latest_epoch`, whose robust fields are missing on epochs that did not measure them),
    else None."""
    final = current_final(records, num_classes)
    if final is not None:
        return final, True
    usable = [r for r in records if r.get("event") == "epoch" and damage(r, num_classes) is None]
    return latest_epoch(usable), False


def result_columns(
    records: Iterable[Mapping[str, Any]], columns: Sequence[str], num_classes: int | None = None
) -> tuple[dict[str, Any], bool]:
    """`columns` of the run's result, and whether they come from a final evaluation.

    The current final record's values if there is one; else, per column, the latest value any
    undamaged epoch record holds: with robust accuracy measured every N epochs the latest epoch
    has standard accuracy only, and the robust columns come from the last epoch that measured
    them. A column no record holds is None.
    """
    records = list(records)
    final = current_final(records, num_classes)
    if final is not None:
        return {column: final.get(column) for column in columns}, True
    sources = measured_at(records, columns, num_classes)
    return {c: None if r is None else r[c] for c, r in sources.items()}, False


def measured_at(
    records: Iterable[Mapping[str, Any]], columns: Sequence[str], num_classes: int | None = None
) -> dict[str, Mapping[str, Any] | None]:
    """Per column, the latest undamaged epoch record that holds a value of it (None if none
    does): where a training run's result columns come from (`result_columns`)."""
    latest: dict[str, Mapping[str, Any] | None] = dict.fromkeys(columns)
    for record in records:
        if record.get("event") == "epoch" and damage(record, num_classes) is None:
            for column in columns:
                if record.get(column) is not None:
                    latest[column] = record
    return latest


def damage_note(records: Iterable[Mapping[str, Any]], num_classes: int | None = None) -> str | None:
    """One line saying what of a run's metrics.jsonl readers left out or could not show, or
    None when nothing: its damaged records (`damage`: how many, and the last one's reason), and
    the fields its result's final record lacks (shown as "-")."""
    records = list(records)
    damaged = [(r, why) for r in records if (why := damage(r, num_classes)) is not None]
    parts: list[str] = []
    if damaged:
        record, why = damaged[-1]
        where = "final" if record.get("event") == "final" else f"epoch {record.get('epoch')}"
        count = f"{len(damaged)} damaged records" if len(damaged) > 1 else "a damaged record"
        parts.append(f"{count} left out (last: {where}, {why})")
    final = current_final(records, num_classes)
    missing = [f for f in FINAL_FIELDS if f not in final] if final is not None else []
    if missing:
        parts.append(f"the final record lacks {', '.join(missing)}")
    return f"metrics.jsonl: {'; '.join(parts)}" if parts else None


def class_count(doc: Mapping[str, Any]) -> int | None:
    """The number of classes a run's config.json document resolved, None when it says none:
    the length every per-class list of its records must have."""
    resolved = doc.get("resolved")
    count = resolved.get("num_classes") if isinstance(resolved, Mapping) else None
    return count if isinstance(count, int) and not isinstance(count, bool) else None
