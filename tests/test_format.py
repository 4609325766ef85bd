"""The one way each value is written on a terminal (srat_tui.render.format), by hand."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from srat_tui.render.format import (
    age,
    counted,
    data_text,
    masking_flag,
    pct,
    runs_cell,
    status_style,
)

NOW = datetime(2026, 11, 21, 12, 0, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("value", "digits", "expected"),
    [
        (63.256, 2, "63.26"),
        (63.254, 2, "63.25"),
        (100, 2, "100.00"),
        (0.0, 2, "0.00"),
        (41.5, 1, "41.5"),
        (None, 2, "-"),
        (True, 2, "-"),  # a JSON flag is not a percentage
        ("63.2", 2, "-"),
    ],
)
def test_pct(value: Any, digits: int, expected: str) -> None:
    assert pct(value, digits) == expected


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2026-11-21T11:59:18+00:00", "42s"),
        ("2026-11-21T11:57:00+00:00", "3m"),
        ("2026-11-21T11:57:01+00:00", "2m"),  # whole units, rounded down
        ("2026-11-21T09:30:00+00:00", "2h"),
        ("2026-11-16T11:00:00+00:00", "5d"),
        ("2026-11-21T13:00:00+01:00", "0s"),  # same instant in another zone
        ("2026-11-21T11:00:00", "1h"),  # no zone: UTC
        ("2026-11-21T12:05:00+00:00", "0s"),  # a clock ahead of ours
        ("yesterday", "-"),
        ("", "-"),
        (None, "-"),
    ],
)
def test_age(stamp: Any, expected: str) -> None:
    assert age(stamp, NOW) == expected


def test_status_style_is_one_palette() -> None:
    assert status_style("running") == "bold green"
    assert status_style("finished") == "green"
    assert status_style("queued") == "yellow"
    assert status_style("failed") == "bold red"
    assert status_style("dead") == "red"
    assert status_style("killed") == "magenta"
    assert status_style("created") == "dim"
    assert status_style("unheard-of") == ""


def test_masking_flag() -> None:
    suspected = masking_flag(True)
    assert suspected.plain == "SUSPECTED" and str(suspected.style) == "bold red"
    assert masking_flag(False).plain == "no"
    assert masking_flag(None).plain == "-"


RECORD: dict[str, Any] = {
    "id": "261121-abcd",
    "status": "finished",
    "method": "SRAT-LDAM",
    "dataset": "cifar10",
    "imbalance": "step",
    "ratio": 100.0,
    "epoch": 200,
    "epochs": 200,
    "std_overall": 63.256,
    "std_under": 40.0,
    "rob_overall": None,
    "rob_under": 18.891,
    "aa_overall": 12.0,
    "masking": True,
    "device": "cuda:0",
    "created": "2026-11-21T09:30:00+00:00",
}


@pytest.mark.parametrize(
    ("column", "changes", "expected"),
    [
        ("id", {}, "261121-abcd"),
        ("imbalance", {}, "step100"),
        ("imbalance", {"imbalance": "exp", "ratio": 10}, "exp10"),
        ("imbalance", {"imbalance": "none", "ratio": 100.0}, "none"),  # balanced: no ratio
        ("imbalance", {"ratio": None}, "step"),
        ("imbalance", {"imbalance": None}, "-"),
        ("epoch", {}, "200/200"),
        ("epoch", {"epoch": None, "epochs": None}, "0/?"),
        ("std_overall", {}, "63.26"),
        ("rob_overall", {}, "-"),
        ("rob_under", {}, "18.89"),
        ("aa_overall", {}, "12.00!"),  # masking suspected
        ("aa_overall", {"masking": False}, "12.00"),
        ("aa_overall", {"aa_overall": None}, "-"),
        ("device", {}, "cuda:0"),
        ("device", {"device": ""}, "-"),
        ("age", {}, "2h"),
        ("age", {"created": None}, "-"),
        ("tags", {}, "-"),
    ],
)
def test_runs_cell(column: str, changes: dict[str, Any], expected: str) -> None:
    assert runs_cell({**RECORD, **changes}, column, NOW) == expected


def test_wrap_chips_breaks_between_chips_never_inside_one() -> None:
    from rich.text import Text

    from srat_tui.render.format import wrap_chips

    chips = [Text("abcd"), Text("ef"), Text("(1d ago)", style="dim")]
    assert wrap_chips(chips, 40).plain == "abcd  ef  (1d ago)"  # 18 cells: one line
    assert wrap_chips(chips, 18).plain == "abcd  ef  (1d ago)"  # exactly the width
    assert wrap_chips(chips, 17).plain == "abcd  ef\n(1d ago)"  # the chip moves down whole
    assert wrap_chips(chips, 5).plain == "abcd\nef\n(1d ago)"  # too wide alone: its own line
    assert wrap_chips(chips, 0).plain == "abcd  ef  (1d ago)"  # not laid out yet
    assert wrap_chips(chips, 17, separator=" | ").plain == "abcd | ef\n(1d ago)"
    styled = wrap_chips(chips, 17)
    assert [styled.plain[span.start : span.end] for span in styled.spans] == ["(1d ago)"]
    assert wrap_chips([], 10).plain == ""


def test_counted_is_plural_unless_one() -> None:
    assert counted(1, "epoch") == "1 epoch"  # the dry run said "1 epochs"
    assert counted(0, "epoch") == "0 epochs"
    assert counted(200, "epoch") == "200 epochs"
    assert counted(12000, "run") == "12,000 runs"


def test_data_text_leaves_out_the_ratio_of_a_balanced_set() -> None:
    assert data_text({"dataset": "digits", "imbalance": "exp", "ratio": 10.0}) == "digits exp K=10"
    assert data_text({"dataset": "cifar10", "imbalance": "step", "ratio": 100}) == (
        "cifar10 step K=100"
    )
    # the ratio is unused without imbalance: "none K=10" read as an imbalance of 10
    assert data_text({"dataset": "digits", "imbalance": "none", "ratio": 10.0}) == "digits none"
    assert data_text({"dataset": "digits", "imbalance": "exp", "ratio": "x"}) == "digits exp"
    assert data_text({}) == "? ?"
