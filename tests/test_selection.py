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


def test_a_filter_on_a_field_no_run_has_is_refused_not_an_empty_list() -> None:
    with pytest.raises(SratError, match=r"no run has a field 'methd' .*did you mean method\?"):
        select_records(RECORDS, None, ["methd=CE"], None)
    with pytest.raises(SratError, match=r"no run has a field 'nosuch'"):
        select_records(RECORDS, None, ["seed=1", "nosuch=1"], None)
    # a field some run has selects the others out, as before; tag is the alias of tags
    assert ids(select_records([*RECORDS, {"id": "d", "aa": 40.0}], None, ["aa=40"], None)) == ["d"]
    assert ids(select_records(RECORDS, None, ["tag=nobody"], None)) == []
    assert select_records([], None, ["nosuch=1"], None) == []  # no run to judge by
