"""Which runs a `key=value` filter selects: one rule for `srat runs ls -f`, `srat report -f`
and the TUI's `/` filter.

`key=value` matches a run record's field (`tag=NAME` its tags); `key=a,b` matches either. A
method is found by any of its names (`method=PGD-AT` finds CE's runs); numbers compare as
numbers (`ratio=100` finds 100.0); other values compare case-insensitively.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import Any

from srat_engine.config.methods import canonical_method
from srat_engine.errors import SratError

Record = dict[str, Any]
KEY_ALIASES = {"tag": "tags"}


def _method_name(name: str) -> str:
    """The registered name of a method (an alias resolved), or `name` when it is none."""
    try:
        return canonical_method(name)
    except SratError:
        return name


def _matches(record: Record, key: str, wanted: str) -> bool:
    value = record.get(key)
    if isinstance(value, list):
        return wanted in [str(v) for v in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(value) == float(wanted)
        except ValueError:
            return False
    return str(value).lower() == wanted.lower()


def is_field_filter(word: str) -> bool:
    """Whether a filter word is `key=value` rather than free text."""
    key, sep, _ = word.partition("=")
    return bool(sep and key.strip())


def field_filter(item: str) -> Callable[[Record], bool]:
    """The predicate of one `key=value` filter; SratError for anything else."""
    key, sep, wanted = item.partition("=")
    if not sep or not key.strip():
        raise SratError(f"a filter is key=value (got {item!r})")
    key = KEY_ALIASES.get(key.strip(), key.strip())
    choices = [w.strip() for w in wanted.split(",")]
    if key == "method":
        choices = [_method_name(w) for w in choices]
    return lambda record: any(_matches(record, key, w) for w in choices)


def _check_filter_keys(records: list[Record], filters: list[str]) -> None:
    """SratError for a filter on a field no record has (`-f nosuch=1`, `-f methd=CE`): it
    would select nothing, and "no runs" reads as if there were none. Said only where there
    are records to judge by."""
    if not records or not filters:  # no key to check: `runs ls` reads no record's keys
        return
    known = set().union(*(record.keys() for record in records)) | set(KEY_ALIASES)
    for item in filters:
        key = item.partition("=")[0].strip()
        if key not in known:
            near = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
            hint = f"; did you mean {near[0]}?" if near else " (see `srat runs ls --json`)"
            raise SratError(f"no run has a field {key!r} to filter by{hint}")


def select_records(
    records: Iterable[Record], status: str | None, filters: list[str], sort: str | None
) -> list[Record]:
    """Records with `status` (if given) passing every filter, sorted by a field (`-field`
    descending; runs without it last) or else by id."""
    records = list(records)
    predicates = [field_filter(item) for item in filters]
    _check_filter_keys(records, filters)
    selected = [
        r
        for r in records
        if (not status or r.get("status") == status) and all(p(r) for p in predicates)
    ]
    if sort:
        key = sort.lstrip("-")
        present = [r for r in selected if r.get(key) is not None]
        missing = [r for r in selected if r.get(key) is None]
        try:
            present.sort(key=lambda r: r[key], reverse=sort.startswith("-"))
        except TypeError:
            present.sort(key=lambda r: str(r[key]), reverse=sort.startswith("-"))
        return present + missing
    return sorted(selected, key=lambda r: r.get("id", ""))
