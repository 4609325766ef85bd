"""`key=value` run selection, the one rule of `srat runs ls -f`, `srat report -f` and the TUI."""

from __future__ import annotations

import pytest

from srat_engine.errors import SratError
from srat_engine.reporting.selection import field_filter, is_field_filter, select_records

RECORDS = [
    {"id": "b", "method": "CE", "ratio": 100.0, "seed": 1, "tags": ["best"], "status": "finished"},
    {"id": "a", "method": "SRAT-LDAM", "ratio": 10.0, "seed": 0, "tags": [], "status": "running"},
    {"id": "c", "method": "GAIRAT", "ratio": 100.0, "seed": 2, "tags": [], "status": "failed"},
]


def ids(records: list[dict[str, object]]) -> list[str]:
    return [str(r["id"]) for r in records]


def test_field_filters() -> None:
    assert ids(select_records(RECORDS, None, ["ratio=100"], None)) == ["b", "c"]  # 100.0
    assert ids(select_records(RECORDS, None, ["seed=1"], None)) == ["b"]
    assert ids(select_records(RECORDS, None, ["tag=best"], None)) == ["b"]
    assert ids(select_records(RECORDS, None, ["method=pgd-at,gairat"], None)) == ["b", "c"]
    assert ids(select_records(RECORDS, None, ["method=srat-ldam"], None)) == ["a"]
    assert ids(select_records(RECORDS, None, ["ratio=100", "status=failed"], None)) == ["c"]
    assert ids(select_records(RECORDS, "running", [], None)) == ["a"]
    assert ids(select_records(RECORDS, None, [], "-seed")) == ["c", "b", "a"]
    assert field_filter("ratio=x")(RECORDS[0]) is False


def test_what_is_a_field_filter() -> None:
    assert is_field_filter("status=running") and not is_field_filter("exp10")
    assert not is_field_filter("=x")
    for bad in ("method", "=CE"):
        with pytest.raises(SratError, match="key=value"):
            field_filter(bad)
