"""Damaged result records (a hand edit, a half-written file from another tool) are never a run's
result: `srat runs show`, `compare` and `export` skip them with one warning line, and every
reader (index summary, reports, TUI) goes through the same rule, `runs.records.damage`.

A damaged meta.json or config.json is one error line (exit 2) in every command that needs it,
loses nothing (a damaged meta.json is never rewritten, nor are the index's tags and notes of
the run erased), and leaves every other command working.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cli_harness import Result, Srat, make_invoker
from fake_runs import make_fake_run

from srat_engine.errors import SratError
from srat_engine.fsutil import DamagedFile, read_json, read_jsonl
from srat_engine.reporting.report import group_seeds, has_final_metrics, pick_metrics
from srat_engine.runs.evaluations import store_result
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


# -- damaged meta.json and config.json ----------------------------------------------------------


def _one_error_line(outcome: Result, *needles: str) -> str:
    """The single stderr line of a refused command (exit 2, no traceback), holding `needles`."""
    assert outcome.code == 2, outcome
    assert "Traceback" not in outcome.err, outcome.err
    assert len(outcome.err_lines) == 1, outcome.err
    line = outcome.err_lines[0]
    assert line.startswith("error: "), line
    for needle in needles:
        assert needle in line, (needle, line)
    return line


def test_read_json_names_the_file_and_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    cases = {
        b"\xff{": "not UTF-8 text: byte 0xff at offset 0",
        b'{"a": [1,': "not valid JSON: Expecting value at line 1 column 10",
        b"": "empty file",
        b"[" * 100_000: "JSON nested too deeply to read",
    }
    for data, problem in cases.items():
        path.write_bytes(data)
        with pytest.raises(DamagedFile) as caught:
            read_json(path)
        assert str(caught.value) == f"{path} is damaged ({problem})"
        # a user error for the CLI, and still what tolerant readers (`except ValueError`) catch
        assert isinstance(caught.value, SratError) and isinstance(caught.value, ValueError)
    with pytest.raises(FileNotFoundError):  # "none yet" stays the caller's to decide
        read_json(tmp_path / "absent.json")


META_DAMAGES: dict[str, Callable[[bytes], bytes]] = {
    "truncated": lambda data: data[:-5],
    "not UTF-8": lambda data: b"\xff" + data,
    "a list": lambda _data: b'["a", "x"]',
    "tags not a list": lambda _data: b'{"tags": "a", "notes": ["a note"]}',
}


@pytest.mark.parametrize("kind", sorted(META_DAMAGES))
def test_a_damaged_meta_json_is_refused_and_its_tags_stay_listed(
    kind: str, srat_home: Path, srat: Srat
) -> None:
    home = Home(srat_home)
    run = make_fake_run(home.runs, "tagged", status="finished", epochs_done=10, index=home.index)
    assert srat("runs", "tag", "tagged", "a").code == 0
    assert srat("runs", "note", "tagged", "a note").code == 0
    meta = run.path / "meta.json"
    damaged = META_DAMAGES[kind](meta.read_bytes())
    meta.write_bytes(damaged)

    # reading: the run is shown and listed, with the index's copy of its tags and notes
    shown = srat("runs", "show", "tagged")
    assert shown.code == 0 and "Traceback" not in shown.err, shown
    assert "tags     a" in shown.out and "note     a note" in shown.out, shown.out
    assert len(shown.err_lines) == 1, shown.err
    assert shown.err_lines[0].startswith("warning: run tagged: meta.json is damaged (")
    listed = srat("runs", "ls", "--filter", "tag=a")
    assert listed.code == 0 and "tagged" in listed.out, listed
    assert srat("runs", "reindex").code == 0
    assert home.index.get("tagged") is not None
    assert (home.index.get("tagged") or {})["tags"] == ["a"]
    assert (home.index.get("tagged") or {})["notes"] == ["a note"]

    # writing: refused, one line naming the file; meta.json as it was, a copy kept once
    for command in (("runs", "tag", "tagged", "new"), ("runs", "note", "tagged", "more")):
        line = _one_error_line(srat(*command), str(meta), "is damaged", "fix it")
        assert meta.read_bytes() == damaged, command
        copies = sorted(run.path.glob("meta.json.corrupt-*"))
        assert [c.read_bytes() for c in copies] == [damaged], command
        assert copies[0].name in line
    assert (home.index.get("tagged") or {})["tags"] == ["a"]
    assert (home.index.get("tagged") or {})["notes"] == ["a note"]

    # removing it, as the line says, starts afresh; the copy stays
    meta.unlink()
    assert srat("runs", "tag", "tagged", "new").code == 0
    assert run.meta() == {"tags": ["new"], "notes": []}
    assert (home.index.get("tagged") or {})["tags"] == ["new"]
    assert len(list(run.path.glob("meta.json.corrupt-*"))) == 1


def test_a_meta_json_write_keeps_fields_it_does_not_know(srat_home: Path, srat: Srat) -> None:
    home = Home(srat_home)
    run = make_fake_run(home.runs, "extra", status="finished", index=home.index)
    meta = run.path / "meta.json"
    meta.write_text('{"tags": ["a"], "notes": [], "owner": "kim"}', encoding="utf-8")
    assert srat("runs", "tag", "extra", "b").code == 0
    assert json.loads(meta.read_text()) == {
        "tags": ["a", "b"],
        "notes": [],
        "owner": "kim",
    }


CONFIG_DAMAGES: dict[str, tuple[bytes, str]] = {
    "not UTF-8": (b"\xff{", "not UTF-8 text: byte 0xff at offset 0"),
    "truncated": (b'{"config": {"seed": 1', "not valid JSON: Expecting ',' delimiter"),
    "a list": (b"[]", "a JSON list, not a run's config"),
    "no config object": (b'{"resolved": {}}', 'no "config" object'),
}


@pytest.mark.parametrize("kind", sorted(CONFIG_DAMAGES))
def test_a_damaged_config_json_is_one_line_in_every_command(
    kind: str, srat_home: Path, srat: Srat
) -> None:
    home = Home(srat_home)
    make_fake_run(home.runs, "good", status="finished", epochs_done=10, index=home.index)
    bad = make_fake_run(home.runs, "bad", status="finished", epochs_done=10, index=home.index)
    bad.checkpoint_path.touch()  # what eval and tsne check before they read the config
    data, problem = CONFIG_DAMAGES[kind]
    (bad.path / "config.json").write_bytes(data)
    where = f"{bad.path / 'config.json'} is damaged ({problem}"

    for command in (
        ("runs", "show", "bad"),
        ("runs", "show", "bad", "--json"),
        ("runs", "compare", "good", "bad"),
        ("eval", "bad"),
        ("tsne", "bad"),
        ("runs", "resume", "bad"),
        ("figure1", "good", "bad"),
    ):
        _one_error_line(srat(*command), where, "srat runs rm bad")

    # listings and the index go on: both runs, the damaged one with what is known of it
    for command in (("runs", "ls"), ("runs", "reindex"), ("runs", "ls")):
        outcome = srat(*command)
        assert outcome.code == 0 and "Traceback" not in outcome.err, (command, outcome)
    assert "good" in outcome.out and "bad" in outcome.out
    record = home.index.get("bad") or {}
    assert record["method"] is None and "config.json" in str(record["error"])
    assert record["final"] is False  # its numbers are no table's row
    assert (home.index.get("good") or {})["method"] is not None
    exported = srat("runs", "export", "--format", "json")
    assert exported.code == 0, exported.err
    tables = json.loads(exported.out)
    cells = [cell for table in tables for row in table["rows"] for cell in row["cells"]]
    assert [cell["run_ids"] for cell in cells] == [["good"]]


@pytest.mark.parametrize(
    "damaged", [b"\xff{", b'{"results": [1, 2]}', b'{"results": {"cw": "x"}}', b"[]"]
)
def test_a_damaged_or_misshapen_eval_json_is_set_aside_not_overwritten(
    damaged: bytes, srat_home: Path
) -> None:
    run = make_fake_run(Home(srat_home).runs, "evaluated", status="finished")
    (run.path / "eval.json").write_bytes(damaged)
    (run.path / "eval.json.corrupt-1").write_bytes(b"an older damaged copy")
    store_result(run, "pgd20", {"overall": 40.0})
    copies = {p.name: p.read_bytes() for p in run.path.glob("eval.json.corrupt-*")}
    assert sorted(copies.values()) == sorted([damaged, b"an older damaged copy"])
    assert json.loads((run.path / "eval.json").read_text())["results"] == {
        "pgd20": {"overall": 40.0}
    }
