"""Damaged result records (a hand edit, a half-written file from another tool) are never a run's
result: `srat runs show`, `compare` and `export` skip them with one warning line, and every
reader (index summary, reports, TUI) goes through the same rule, `runs.records.damage`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cli_harness import Srat, make_invoker
from fake_runs import make_fake_run

from srat_engine.fsutil import read_jsonl
from srat_engine.reporting.report import group_seeds, has_final_metrics, pick_metrics
from srat_engine.runs.home import Home
from srat_engine.runs.records import (
    current_final,
    damage,
    damage_note,
    metric_damage,
    result_columns,
    result_record,
)
from srat_engine.runs.rundir import RunDir
from srat_engine.runs.summary import summarize_run
from srat_engine.runs.sync import record_in_index

COLUMNS = ("std_overall", "std_under", "rob_overall", "rob_under")


def final(**fields: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"event": "final", "std_overall": 70.0, "std_under": 60.0,
                              "rob_overall": 40.0, "rob_under": 30.0, "std_class": [70.0, 70.0],
                              "rob_class": [40.0, 40.0]}  # fmt: skip
    record.update(fields)
    return {k: v for k, v in record.items() if v is not ...}


EPOCH = {"event": "epoch", "epoch": 1, "std_overall": 50.0, "rob_overall": 20.0}


# -- the rule ---------------------------------------------------------------------------------


def test_damage_names_what_is_wrong() -> None:
    assert damage(final()) is None and damage(final(), num_classes=2) is None
    assert damage(final(rob_overall=None, rob_class=None)) is None  # natural training
    assert damage({"event": "epoch", "epoch": 3, "std_overall": 1.0}) is None  # robust not measured
    assert damage(final(std_under="60.0")) == "std_under is '60.0', not a number"
    assert damage(final(rob_overall=True)) == "rob_overall is True, not a number"
    assert damage(final(std_overall=...)) == "std_overall missing"
    assert damage(final(std_class="70,70")) == "std_class is '70,70', not a list of numbers"
    assert damage(final(rob_class=[40.0, "x"])) == (
        "rob_class is [40.0, 'x'], not a list of numbers"
    )
    assert damage(final(), num_classes=3) == "std_class has 2 values for 3 classes"
    assert damage(final(rob_class=[1.0])) == ("std_class and rob_class differ in length (2 and 1)")
    assert damage({"event": "note", "std_overall": "x"}) is None  # only results are checked
    assert metric_damage({"id": "r", "std_overall": "abc"}) == "std_overall is 'abc', not a number"


def test_a_damaged_final_is_not_the_result() -> None:
    bad = final(std_under="n/a")
    records = [EPOCH, bad]
    assert current_final(records) is None
    assert result_record(records) == (EPOCH, False)
    assert result_columns(records, COLUMNS) == (
        {"std_overall": 50.0, "std_under": None, "rob_overall": 20.0, "rob_under": None},
        False,
    )
    assert pick_metrics(records) == EPOCH
    # an earlier good final stands when a later one is damaged; a class count too many fails it
    good = final()
    assert result_record([EPOCH, good, bad]) == (good, True)
    assert result_record([EPOCH, good], num_classes=10) == (EPOCH, False)
    # a damaged epoch is skipped as a result, but still says the run trained further
    records = [EPOCH, good, {"event": "epoch", "epoch": 2, "std_overall": "?"}]
    assert result_record(records) == (EPOCH, False)


def test_damage_note_is_one_line_per_run() -> None:
    assert damage_note([EPOCH, final()]) is None
    note = damage_note([EPOCH, final(std_under="n/a")])
    assert note == (
        "metrics.jsonl: a damaged record left out (last: final, std_under is 'n/a', not a number)"
    )
    two = damage_note([{**EPOCH, "std_overall": "x"}, final(std_class=[1.0])], num_classes=2)
    assert two is not None and two.startswith("metrics.jsonl: 2 damaged records left out")
    assert "\n" not in two
    lacking = damage_note([EPOCH, final(std_class=..., rob_under=...)])
    assert lacking == "metrics.jsonl: the final record lacks rob_under, std_class"


def test_index_records_with_damaged_numbers_are_left_out_of_tables() -> None:
    good = {"id": "a", "final": True, "config_key": "k", "seed": 0, "method": "CE",
            "dataset": "cifar10", "imbalance": "step", "ratio": 10.0, "std_overall": 50.0,
            "std_under": 40.0, "rob_overall": 30.0, "rob_under": 20.0}  # fmt: skip
    bad = {**good, "id": "b", "seed": 1, "rob_under": "20"}
    assert has_final_metrics(good) and not has_final_metrics(bad)
    groups = group_seeds([good, bad])
    assert groups.skipped == ["b"] and groups[0].run_ids == ["a"]


# -- the commands -----------------------------------------------------------------------------


def _missing_std_overall(record: dict[str, Any], classes: int) -> None:
    del record["std_overall"]


def _missing_std_class(record: dict[str, Any], classes: int) -> None:
    del record["std_class"]


def _string_number(record: dict[str, Any], classes: int) -> None:
    record["std_overall"] = "69.4"


def _short_class_list(record: dict[str, Any], classes: int) -> None:
    record["std_class"] = record["std_class"][:-1]


def _class_list_of_strings(record: dict[str, Any], classes: int) -> None:
    record["rob_class"] = [str(v) for v in record["rob_class"]]


def _class_list_for_other_classes(record: dict[str, Any], classes: int) -> None:
    record["std_class"] = record["std_class"] + [1.0]
    record["rob_class"] = record["rob_class"] + [1.0]


DAMAGES: dict[str, Callable[[dict[str, Any], int], None]] = {
    "missing std_overall": _missing_std_overall,
    "missing std_class": _missing_std_class,
    "string for a number": _string_number,
    "short per-class list": _short_class_list,
    "per-class strings": _class_list_of_strings,
    "per-class list for another class count": _class_list_for_other_classes,
}


@pytest.fixture
def srat(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Srat:
    return make_invoker(capsys, monkeypatch)


def _damage_final(run: RunDir, change: Callable[[dict[str, Any], int], None]) -> None:
    records = read_jsonl(run.metrics_path)
    classes = int(run.config()["resolved"]["num_classes"])
    change(records[-1], classes)
    assert records[-1]["event"] == "final"
    lines = [json.dumps(record) for record in records]
    run.metrics_path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(params=sorted(DAMAGES))
def damaged(request: pytest.FixtureRequest, srat_home: Path) -> tuple[Home, str]:
    """Two finished runs of one config (seeds 0 and 1), `bad` with a damaged final record,
    indexed after the damage (as `srat runs reindex` or the other tool's run would leave it)."""
    home = Home(srat_home)
    make_fake_run(home.runs, "good", status="finished", epochs_done=10, index=home.index)
    bad = make_fake_run(home.runs, "bad", status="finished", epochs_done=10, overrides=("seed=1",))
    _damage_final(bad, DAMAGES[request.param])
    record_in_index(bad, home.index)
    return home, request.param


def _warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("warning:")]


def test_runs_show_compare_export_warn_once_and_do_not_crash(
    damaged: tuple[Home, str], srat: Srat
) -> None:
    _, kind = damaged
    for command in (
        ("runs", "show", "bad"),
        ("runs", "compare", "good", "bad"),
        ("runs", "export"),
        ("runs", "export", "--format", "csv"),
    ):
        outcome = srat(*command)
        assert outcome.code == 0, (kind, command, outcome)
        assert "Traceback" not in outcome.err, (kind, command)
        warnings = _warnings(outcome.err)
        if command[1] == "export" and kind == "missing std_class":
            # the final still holds the four columns the tables use: nothing is left out
            assert warnings == [], (kind, command, outcome.err)
            continue
        assert len(warnings) == 1, (kind, command, outcome.err)
        assert warnings[0].startswith("warning: run bad: metrics.jsonl: "), warnings


def test_a_damaged_final_does_not_reach_the_index(damaged: tuple[Home, str]) -> None:
    home, kind = damaged
    record = summarize_run(RunDir(home.runs / "bad"))
    assert metric_damage(record) is None
    if kind != "missing std_class":
        assert record["final"] is False  # the latest epoch is the run's result


def test_show_prints_the_latest_epoch_when_the_final_is_damaged(
    damaged: tuple[Home, str], srat: Srat
) -> None:
    _, kind = damaged
    outcome = srat("runs", "show", "bad")
    if kind == "missing std_class":
        assert "(final)" in outcome.out  # shown, its per-class column as "-"
    else:
        assert "(epoch 10)" in outcome.out
