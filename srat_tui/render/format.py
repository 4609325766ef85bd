"""How a value reads on a terminal: one rule each for a percentage, an age, a run status and
a runs-table cell, shared by the CLI (`srat runs ls`, the tables it prints) and the Textual app
(runs screen, run screen), so a run reads the same in both; and `inert`, the one rule for
showing a string that a person or a file supplied (tags, notes, paths, class names, logs);
`wrap_chips`, how a line of facts breaks in a narrow terminal.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from rich.text import Text

from srat_engine.runs.records import METRIC_COLUMNS, is_number
from srat_engine.text import escape_controls

# One palette for run statuses, wherever a status is shown in colour.
STATUS_STYLES: dict[str, str] = {
    "running": "bold green",
    "queued": "yellow",
    "finished": "green",
    "failed": "bold red",
    "dead": "red",
    "lost": "dark_orange",  # silent on another host: perhaps dead, perhaps only cut off
    "killed": "magenta",
    "created": "dim",
}

MASKING_STYLE = "bold red"


def inert(value: Any, *, newlines: bool = False) -> str:
    """`value` as text a terminal shows rather than obeys: every control character written as
    its escape ("\\x1b", "\\t", "\\u202e"), everything else (non-ASCII letters included) as is.

    newlines: keep line breaks (a multi-line message) instead of writing them as "\\n". The
    result is plain text: print it with markup off, or as a `rich.text.Text` (`inert_text`), so
    that "[/]" in it is shown, not read as markup.
    """
    return escape_controls(value, newlines=newlines)


def inert_text(value: Any, style: str = "", *, newlines: bool = False) -> Text:
    """`inert(value)` as a Rich Text: never parsed for markup or emoji codes, in `style`."""
    return Text(inert(value, newlines=newlines), style=style)


def pct(value: Any, digits: int = 2) -> str:
    """An accuracy in percent with fixed decimals: 63.256 -> "63.26"; "-" for no number."""
    return f"{value:.{digits}f}" if is_number(value) else "-"


def _stamp(stamp: Any) -> datetime | None:
    """An ISO-8601 stamp (or a datetime) as an aware datetime; no zone: UTC, as every srat
    timestamp is."""
    if isinstance(stamp, datetime):
        return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=timezone.utc)
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        then = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    return then if then.tzinfo is not None else then.replace(tzinfo=timezone.utc)


def counted(count: int, noun: str) -> str:
    """A count and its noun, plural unless one: "1 epoch", "200 epochs"."""
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


def duration(seconds: float) -> str:
    """A span in its largest whole unit: "42s", "3m", "2h", "5d" (negative reads "0s")."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def age(stamp: Any, now: datetime) -> str:
    """Time from an ISO-8601 stamp to `now` (`duration`): "42s", "3m", "2h", "5d".

    A stamp without a zone is UTC (every srat timestamp is); one after `now` reads "0s"; a
    missing or unreadable one "-".
    """
    then = _stamp(stamp)
    return "-" if then is None else duration((now - then).total_seconds())


def time_left(stamp: Any, now: datetime) -> str | None:
    """Time from `now` to a stamp (ISO-8601 or datetime) still ahead ("6m"); None for one that
    has passed or is missing: an expected end that is late says nothing rather than "0s"."""
    then = _stamp(stamp)
    if then is None or then <= now:
        return None
    return duration((then - now).total_seconds())


def status_style(status: str) -> str:
    """The Rich style of a run status ("" for a status srat does not know)."""
    return STATUS_STYLES.get(status, "")


def masking_flag(suspected: Any) -> Text:
    """The gradient-masking verdict as a cell: "SUSPECTED" (bold red), "no", or "-" without
    an AutoAttack result."""
    if suspected is True:
        return Text("SUSPECTED", style=MASKING_STYLE)
    return Text("no" if suspected is False else "-")


def tag_report(run_id: str, tag: str, tags: Sequence[str], *, removed: bool, changed: bool) -> str:
    """The line a tag change reports (`srat runs tag`, the runs screen's `t`): the run's tags
    now, after saying so when nothing changed, so a mistyped tag to remove is not missed."""
    now = f"tags: {', '.join(tags) or '-'}"
    if changed:
        return inert(f"{run_id} {now}")
    why = f"had no tag {tag!r}" if removed else f"already had the tag {tag!r}"
    return inert(f"{run_id} {why}; {now}")


def data_text(data: Mapping[str, Any]) -> str:
    """A config's data section as every header says it: "digits exp K=10", and "digits none"
    for a balanced set, whose ratio is unused."""
    where = f"{data.get('dataset', '?')} {data.get('imbalance', '?')}"
    ratio = data.get("ratio")
    if is_number(ratio) and data.get("imbalance") != "none":
        where += f" K={float(ratio):g}"
    return inert(where)


def runs_cell(record: Mapping[str, Any], column: str, now: datetime) -> str:
    """One cell of the runs table (`srat runs ls`, the TUI runs screen) from an index record.

    imbalance: kind and ratio ("step100"), the bare kind for a balanced run ("none"). epoch:
    "done/total", with the time until a running or queued run's training should end ("37/200
    ~6m", from its `ends`, a queued run's wait included: `jobs.forecast`; nothing once that
    has passed). age: since creation. backend: local or slurm, with
    what Slurm's queue says of an active run's job when a listing asked it (`slurm_state`:
    "slurm PENDING (Priority)").
    aa_overall: the AutoAttack accuracy, "!" appended when gradient masking is suspected. The
    four metric columns: `pct`. Anything else as stored, "-" when missing; every string `inert`.
    """
    if column == "imbalance":
        imbalance, ratio = record.get("imbalance"), record.get("ratio")
        if imbalance in (None, "none") or not is_number(ratio):
            return inert(imbalance or "-")
        return inert(f"{imbalance}{ratio:g}")
    if column == "epoch":
        done = f"{record.get('epoch') or 0}/{record.get('epochs') or '?'}"
        ahead = record.get("status") in ("running", "queued")
        left = time_left(record.get("ends"), now) if ahead else None
        return done if left is None else f"{done} ~{left}"
    if column == "age":
        return age(record.get("created"), now)
    if column == "backend":
        backend = str(record.get("backend") or "local")
        state = record.get("slurm_state")
        return inert(f"{backend} {state}" if backend == "slurm" and state else backend)
    value = record.get(column)
    if column == "aa_overall":
        masked = is_number(value) and record.get("masking") is True
        return pct(value) + ("!" if masked else "")
    if column in METRIC_COLUMNS:
        return pct(value)
    return "-" if value in (None, "") else inert(value)


def queue_summary(
    records: Iterable[Mapping[str, Any]], now: datetime, *, short: bool = False
) -> str | None:
    """How many listed runs wait in the local queue and when the last of them should end its
    training (the records' `starts`/`ends`, `jobs.forecast`); None when none waits. `srat runs
    ls` prints it under the table, the runs screen (`short`) beside its count."""
    waiting = [r for r in records if r.get("status") == "queued" and "starts" in r]
    if not waiting:
        return None
    unknown = sum(time_left(r.get("ends"), now) is None for r in waiting)
    if unknown:
        if short:
            return f"{len(waiting)} waiting, {unknown} not yet estimated"
        return (
            f"{len(waiting)} waiting for a slot; {unknown} without an estimate yet (no timed "
            "run of its model and data)"
        )
    last = max(str(r["ends"]) for r in waiting)
    if short:
        return f"{len(waiting)} waiting, the last ends ~{time_left(last, now)}"
    return (
        f"{len(waiting)} waiting for a slot; the last should end its training ~{last} "
        f"(in {time_left(last, now)})"
    )


def wrap_chips(chips: Sequence[Text], width: int, separator: str = "  ") -> Text:
    """`chips` in order, `separator` between them, on as few lines of `width` cells as they
    fit: a line breaks between two chips, never inside one ("(1d ago)" stays whole), and only
    a chip wider than `width` wraps itself. `width` <= 0 (not laid out yet): one line."""
    out = Text()
    used = 0
    for chip in chips:
        if used and width > 0 and used + len(separator) + chip.cell_len > width:
            out.append("\n")
            used = 0
        elif used:
            out.append(separator)
            used += len(separator)
        out.append_text(chip)
        used += chip.cell_len
    return out
