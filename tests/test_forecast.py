"""When queued local runs should start and end (srat_engine/jobs/forecast.py): the queue
played forward by hand, and read from a slots folder that real `hold_slot` waiters hold."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cli_harness import Srat, make_invoker
from fake_runs import make_fake_run, prepare_from_env
from slot_queue import queue_of_real_waiters

from srat_engine.jobs.forecast import (
    LaunchOutlook,
    Planned,
    Waiter,
    _pace,
    forecast_starts,
    launch_outlook,
    like_paces,
    queue_forecast,
    seconds_per_forward,
    stack_size,
    with_queue_forecast,
)
from srat_engine.jobs.slots import Slot, read_queue, slot_device
from srat_engine.runs.home import Home
from srat_engine.runs.rundir import RunDir
from srat_engine.runs.sync import record_in_index
from srat_tui.render.format import duration, queue_summary
from srat_tui.render.run import like_runs, time_line
from srat_tui.tui.screens.new_run import check_form, form_values

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
IN_100_S = (NOW + timedelta(seconds=100)).isoformat()


def waiter(run_id: str, slots: str, queued_ns: int, seconds: float | None) -> Waiter:
    return Waiter(run_id, frozenset(slots.split(",")), queued_ns, seconds)


def test_the_queue_played_forward_by_hand() -> None:
    # slot A frees in 10 s, B is free, C is free but its first run's length is unknown
    waiters = [
        waiter("w3", "A", 3, 30.0),  # listed out of order: served by queued_ns
        waiter("w1", "A,B", 1, 100.0),  # B now (0 <= 10); B frees at 100
        waiter("w2", "A,B", 2, 50.0),  # A at 10; A frees at 60
        waiter("w4", "C", 4, None),  # C now; then C's end is unknown
        waiter("w5", "C", 5, 20.0),  # so is this start
        waiter("w6", "B", 6, 5.0),  # B at 100, after w1 and w2 started (0, 10)
    ]
    # w3: A frees at 60 (w2's end); older sharers started at 0 and 10
    assert forecast_starts({"A": 10.0, "B": 0.0}, waiters) == {
        "w1": 0.0, "w2": 10.0, "w3": 60.0, "w4": 0.0, "w5": None, "w6": 100.0,
    }  # fmt: skip


def test_a_waiter_defers_to_an_older_one_sharing_a_slot() -> None:
    # B is free now, but the older waiter wants A (free in 50 s) and shares it with the
    # younger, which hold_slot makes wait until the older has started
    waiters = [waiter("old", "A", 1, 10.0), waiter("young", "A,B", 2, 10.0)]
    assert forecast_starts({"A": 50.0, "B": 0.0}, waiters) == {"old": 50.0, "young": 50.0}
    # an unknown slot makes the waiters behind it unknown, not those elsewhere
    assert forecast_starts({"A": None}, [waiter("a", "A", 1, 1.0), waiter("b", "B", 2, 1.0)]) == {
        "a": None,
        "b": 0.0,
    }


def test_pace_is_seconds_per_forward_pass() -> None:
    assert seconds_per_forward({"epoch_seconds": 2.0, "epoch_forwards": 1000}) == 0.002
    for missing in ({"epoch_seconds": 2.0}, {"epoch_seconds": 0, "epoch_forwards": 10},
                    {"epoch_seconds": True, "epoch_forwards": 10}):  # fmt: skip
        assert seconds_per_forward(missing) is None
    assert [slot_device(Slot(d, 1).name) for d in ("cpu", "cuda:0", "cuda:12")] == [
        "cpu",
        "cuda:0",
        "cuda:12",
    ]


def test_a_like_run_s_pace_is_the_latest_per_model_dataset_and_device() -> None:
    timed = {"arch": "resnet18", "dataset": "cifar10", "epoch_forwards": 100}
    records = [
        {**timed, "device": "cuda:0", "epoch_seconds": 1.0, "updated": "2026-12-01T10:00:00"},
        {**timed, "device": "cuda:0", "epoch_seconds": 2.0, "updated": "2026-12-01T11:00:00"},
        {**timed, "device": "cuda:1", "epoch_seconds": 3.0, "updated": "2026-12-01T09:00:00"},
        {**timed, "device": "cuda:1", "epoch_seconds": None, "updated": "2026-12-01T12:00:00"},
        {**timed, "arch": "wrn", "device": "cuda:0", "epoch_seconds": 9.0},
    ]
    assert like_paces(records) == {
        ("resnet18", "cifar10", "cuda:0", 1): 0.02,
        ("resnet18", "cifar10", "cuda:1", 1): 0.03,
        ("wrn", "cifar10", "cuda:0", 1): 0.09,
    }


def record(run_id: str, status: str, **fields: Any) -> dict[str, Any]:
    base = {"id": run_id, "status": status, "arch": "resnet18", "dataset": "cifar10",
            "epochs": 10, "epoch_forwards": 1000, "final_forwards": 5000, "device": None,
            "updated": "2026-12-01T11:00:00+00:00"}  # fmt: skip
    return {**base, **fields}


def test_a_real_queue_forecast_from_the_slots_folder(tmp_path: Path) -> None:
    records = [
        # holds cpu-0; training ends in 100 s, then its final evaluation: 5000 x 2 s / 1000
        record("a", "running", device="cpu", epoch_seconds=2.0, ends=IN_100_S),
        # no pace of its own: a's (same model, dataset, device), 20 s training + 10 s final
        record("b", "queued"),
        record("c", "queued", arch="wrn"),  # no like run: its start is known, its end is not
        record("d", "queued"),  # behind c, whose length is unknown
        record("e", "finished", epoch_seconds=1.0),  # another device: not a's pace
    ]  # fmt: skip
    with queue_of_real_waiters(tmp_path, "a", ["b", "c", "d"]):
        holders, tickets = read_queue(tmp_path)
        assert holders == {"cpu-0": "a"} and [t.run_id for t in tickets] == ["b", "c", "d"]
        forecast = queue_forecast(tmp_path, records, NOW)
    seconds = {
        run_id: tuple(
            None if moment is None else (moment - NOW).total_seconds()
            for moment in (known.starts, known.ends)
        )
        for run_id, known in forecast.items()
    }
    assert seconds == {"b": (110.0, 130.0), "c": (140.0, None), "d": (None, None)}


def test_listings_get_starts_and_ends_for_queued_runs_only(tmp_path: Path) -> None:
    records = [record("a", "running", device="cpu", epoch_seconds=2.0,
                      ends=IN_100_S),
               record("b", "queued"), record("x", "finished")]  # fmt: skip
    with queue_of_real_waiters(tmp_path, "a", ["b"]):
        shown = with_queue_forecast(records, tmp_path, NOW)
    assert shown[0] == records[0] and shown[2] == records[2]
    assert shown[1]["starts"] == (NOW + timedelta(seconds=110)).isoformat()
    assert shown[1]["ends"] == (NOW + timedelta(seconds=130)).isoformat()
    # a ticket left by a dead waiter (its run no longer queued) is nobody's place
    records[1]["status"] = "dead"
    with queue_of_real_waiters(tmp_path, "a", ["b"]):
        assert "starts" not in with_queue_forecast(records, tmp_path, NOW)[1]


def test_the_runs_of_a_stack_wait_on_its_first_run_s_ticket_and_share_its_forecast(
    tmp_path: Path,
) -> None:
    stack = ["b0", "b1", "b2"]
    records = [record("a", "running", device="cpu", epoch_seconds=2.0, ends=IN_100_S),
               *(record(r, "queued") | {"stack": stack} for r in stack),
               record("c", "queued")]  # fmt: skip
    # one worker, one ticket for the stack (its first run's); c queued behind it
    with queue_of_real_waiters(tmp_path, "a", ["b0", "c"]):
        shown = with_queue_forecast(records, tmp_path, NOW)
    starts = {r["id"]: r.get("starts") for r in shown}
    assert (
        starts["b0"] == starts["b1"] == starts["b2"] == (NOW + timedelta(seconds=110)).isoformat()
    )
    assert shown[2]["ends"] == shown[1]["ends"]
    # no like stack of 3: a's lone pace times 3, 3 x (20 s + 10 s), then c
    assert shown[1]["ends"] == (NOW + timedelta(seconds=110 + 60)).isoformat()
    assert starts["c"] == (NOW + timedelta(seconds=200)).isoformat()
    assert queue_summary(shown, NOW) is not None and queue_summary(shown, NOW).startswith(
        "4 waiting"
    )
    # a stack whose first run has ended (its ticket nobody's) gives the others no place
    records[1]["status"] = "finished"
    with queue_of_real_waiters(tmp_path, "a", ["b0"]):
        assert "starts" not in with_queue_forecast(records, tmp_path, NOW)[2]


@pytest.mark.parametrize("content", ["", "{not json", '{"slots": "cpu-0"}'])
def test_unreadable_tickets_and_empty_slots_are_skipped(tmp_path: Path, content: str) -> None:
    (tmp_path / "queue").mkdir()
    (tmp_path / "queue" / "b").write_text(content)
    (tmp_path / "cpu-0.lock").write_text("")
    holders, tickets = read_queue(tmp_path)
    assert holders == {} and tickets == []
    assert read_queue(tmp_path / "missing") == ({}, [])


def test_runs_ls_and_show_say_when_a_queued_run_should_start_and_end(
    srat_home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    home = Home(srat_home)
    running = make_fake_run(home.runs, "run-a", epochs_done=0, epochs=10, index=home.index)
    now = datetime.now(timezone.utc)
    for epoch in (1, 2, 3):  # 30 s epochs, the last written just now: 7 left, 210 s
        at = now - timedelta(seconds=30 * (3 - epoch))
        stamp = at.isoformat(timespec="seconds")
        timed = {"train_seconds": 29.0, "eval_seconds": 1.0, "time": stamp}
        running.append_metrics({"event": "epoch", "epoch": epoch, "epochs": 10, **timed})
    make_fake_run(home.runs, "run-b", epochs_done=0, epochs=10, status="queued", index=home.index)
    make_fake_run(home.runs, "run-c", epochs_done=0, epochs=10, status="queued", index=home.index)
    srat: Srat = make_invoker(capsys, monkeypatch)
    with queue_of_real_waiters(home.slots, "run-a", ["run-b", "run-c"]):
        listed = srat("runs", "ls", "--json")
        table = srat("runs", "ls")
        shown = srat("runs", "show", "run-b")
    assert listed.code == table.code == shown.code == 0, listed.err + table.err + shown.err
    records = {r["id"]: r for r in json.loads(listed.out)}
    a, b, c = records["run-a"], records["run-b"], records["run-c"]
    rate = 30.0 / a["epoch_forwards"]  # each run's pace: run-a's 30 s an epoch
    after_a = (datetime.fromisoformat(a["ends"]) - now).total_seconds() + rate * a["final_forwards"]
    whole = rate * (10 * b["epoch_forwards"] + b["final_forwards"])
    expected = {
        "run-b": (after_a, after_a + 10 * 30.0),
        "run-c": (after_a + whole, after_a + whole + 10 * 30.0),
    }
    for run_id, (start, end) in expected.items():
        starts, ends = (datetime.fromisoformat(records[run_id][k]) for k in ("starts", "ends"))
        assert abs((starts - now).total_seconds() - start) < 2, run_id
        assert abs((ends - now).total_seconds() - end) < 2, run_id
    last_line = f"2 waiting for a slot; the last should end its training ~{c['ends']} (in "
    assert table.out.splitlines()[-1].startswith(last_line)
    assert f"queue    should start ~{b['starts']}" in shown.out
    assert f"training end ~{b['ends']}" in shown.out


def test_the_queue_summary_line_by_hand() -> None:
    ends = [(NOW + timedelta(minutes=m)).isoformat() for m in (30, 90)]
    waiting = [{"status": "queued", "starts": NOW.isoformat(), "ends": end} for end in ends]
    others = [{"status": "running", "ends": ends[1]}, {"status": "queued"}]  # not in the queue
    assert queue_summary(others, NOW) is None
    assert queue_summary([*waiting, *others], NOW) == (
        f"2 waiting for a slot; the last should end its training ~{ends[1]} (in 1h)"
    )
    assert queue_summary(waiting, NOW, short=True) == "2 waiting, the last ends ~1h"
    unknown = [*waiting, {"status": "queued", "starts": None, "ends": None}]
    assert queue_summary(unknown, NOW, short=True) == "3 waiting, 1 not yet estimated"


def planned(slots: str, devices: str = "cpu") -> Planned:
    names = frozenset(slots.split(",")) if slots else frozenset()
    return Planned(record("new", "planned"), names, frozenset(devices.split(",")))


def test_launching_now_goes_behind_the_queue_by_hand(tmp_path: Path) -> None:
    records = [record("a", "running", device="cpu", epoch_seconds=2.0, ends=IN_100_S),
               record("b", "queued")]  # fmt: skip
    with queue_of_real_waiters(tmp_path, "a", ["b"]):
        # a frees cpu-0 at 110 s, b holds it to 140; two new runs of 20 s training (30 s in
        # all) each at a's pace: the first starts at 140, the last ends its training at 190
        queued = launch_outlook([planned("cpu-0"), planned("cpu-0")], tmp_path, records, NOW)
        # a foreground run takes no slot: it starts now
        alone = launch_outlook([planned("")], tmp_path, records, NOW)
        # on a device nobody has timed: no pace, no estimate
        elsewhere = launch_outlook([planned("cuda0-0", "cuda:0")], tmp_path, records, NOW)
    assert queued == LaunchOutlook(
        (20.0, 20.0), NOW + timedelta(seconds=140), NOW + timedelta(seconds=190)
    )
    assert alone == LaunchOutlook((20.0, 20.0), NOW, NOW + timedelta(seconds=20))
    assert elsewhere == LaunchOutlook(None, None, None)


def test_the_outlook_line_by_hand() -> None:
    like = "small_cnn on digits (cpu)"
    soon = LaunchOutlook((90.0, 150.0), NOW, NOW + timedelta(minutes=10))
    assert time_line(soon, like, NOW, queued=True) == (
        "training ~1m-2m a run at the pace of the latest run of small_cnn on digits (cpu); "
        "launched now, the first starts at once and the last ends its training "
        "~2026-12-01T12:10+00:00 (in 10m)"
    )
    later = LaunchOutlook((60.0, 60.0), NOW + timedelta(hours=2), NOW + timedelta(hours=3))
    assert "the first starts in ~2h" in time_line(later, like, NOW, queued=True)
    assert time_line(soon, like, NOW, queued=False) == (
        "training ~1m-2m at the pace of the latest run of small_cnn on digits (cpu), "
        "then the final evaluation"
    )
    blocked = LaunchOutlook((60.0, 60.0), None, None)
    assert time_line(blocked, like, NOW, queued=True).endswith("the queue ahead has no estimate")
    assert time_line(LaunchOutlook(None, None, None), like, NOW, queued=True) == (
        "no estimate yet: no timed run of small_cnn on digits (cpu) in this home"
    )
    assert like_runs([planned("cpu-0")]) == "resnet18 on cifar10 (cpu)"
    mixed = [
        planned("cpu-0"),
        Planned(record("x", "planned", arch="wrn"), frozenset(), frozenset({"cpu"})),
    ]
    assert like_runs(mixed) == "their model, data and device"


def timed_finished_run(home: Home, run_id: str, seconds: float) -> dict[str, Any]:
    """A finished digits run (the demo's model and data) whose epochs took `seconds` each,
    in the index; returns its record."""
    run = make_fake_run(
        home.runs, run_id, preset="demo", epochs_done=0, epochs=3, status="finished"
    )
    for epoch in (1, 2, 3):
        run.append_metrics({"event": "epoch", "epoch": epoch, "epochs": 3,
                            "train_seconds": seconds - 1, "eval_seconds": 1.0})  # fmt: skip
    record_in_index(run, home.index)
    found = home.index.get(run_id)
    assert found is not None
    return found


def test_dry_run_and_the_new_run_form_say_how_long_a_run_should_train(
    srat_home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    home = Home(srat_home)
    srat: Srat = make_invoker(capsys, monkeypatch)
    args = ("run", "--preset", "demo", "--device", "cpu", "--dry-run")
    empty = srat(*args)
    assert empty.code == 0, empty.err
    like = "small_cnn on digits (cpu)"
    assert f"time     no estimate yet: no timed run of {like} in this home" in empty.out
    timed = timed_finished_run(home, "run-t", 6.0)
    prepared = prepare_from_env("demo", ("device=cpu",))
    work = prepared.workload
    assert work is not None
    # the demo's 30 epochs of forward passes at run-t's pace: 6 s for each of its epochs
    training = 6.0 / timed["epoch_forwards"] * (work.train + work.per_epoch_eval)
    shown = srat(*args)
    pace = f"time     training ~{duration(training)} at the pace of the latest run of {like}"
    assert pace in shown.out
    queued = srat(*args, "--detach", "--seeds", "0-1", "--slots", "1")
    assert "launched now, the first starts at once" in queued.out
    # a dry run still validates, and prints, where no estimate can be made
    home.index.path.write_text("{not json")
    corrupt = srat(*args)
    assert corrupt.code == 0 and "time     no estimate: run index" in corrupt.out, corrupt.err
    home.index.path.unlink()
    record_in_index(RunDir(home.runs / "run-t"), home.index)
    # the form: the same count for each of its seeds, one after the other on one CPU slot
    base = form_values(prepare_from_env("demo").config)
    values = replace(base, seeds="0-1", devices="cpu", per_device="1")
    checked = check_form(1, "demo", values, base, home, NOW)
    assert checked.ok and checked.outlook is not None, checked.error
    assert checked.outlook.training_seconds == pytest.approx((training, training))
    assert checked.outlook.first_start == NOW
    assert checked.outlook.last_end is not None
    whole = 6.0 / timed["epoch_forwards"] * work.total
    assert (checked.outlook.last_end - NOW).total_seconds() == pytest.approx(
        whole + training, abs=1e-3
    )
    # stacked, the two seeds are one stack: with no like stack of 2 timed, two lone runs' time
    stacked = check_form(1, "demo", replace(values, stack="true"), base, home, NOW)
    assert stacked.ok and stacked.outlook is not None, stacked.error
    assert stacked.outlook.training_seconds == pytest.approx((2 * training, 2 * training))
    both = srat(*args, "--seeds", "0-1", "--stack")
    assert f"time     training ~{duration(2 * training)} at the pace" in both.out, both.out


@pytest.mark.parametrize(
    "damage",
    [{"arch": ["resnet18"]}, {"epochs": float("inf")}, {"epoch_seconds": float("nan")},
     {"epochs": 1e300}, {"final_forwards": "lots"}, {"ends": ["soon"]}, {"device": {}}],
)  # fmt: skip
def test_a_hand_edited_record_gives_no_estimate_and_no_error(
    tmp_path: Path, damage: dict[str, Any]
) -> None:
    """A listing must never fail on what a person wrote into a run directory: the damaged
    run and what depends on it get no estimate, the rest keep theirs."""
    records = [record("a", "running", device="cpu", epoch_seconds=2.0, ends=IN_100_S),
               record("b", "queued"), record("c", "queued")]  # fmt: skip
    records[0] = {**records[0], **damage}
    with queue_of_real_waiters(tmp_path, "a", ["b", "c"]):
        shown = with_queue_forecast(records, tmp_path, NOW)
    for queued in shown[1:]:
        assert "starts" in queued  # each is placed in the queue, with or without times
        assert queued["ends"] is None or queued["ends"] > queued["starts"]


def test_a_stack_s_pace_is_a_like_stack_s_of_its_size_else_scaled_from_another_size() -> None:
    """A stacked run's epoch_seconds are its stack's (K runs at once): a stack of K borrows a
    like stack of K's r, else another size K''s scaled by K / K' (`jobs.forecast._pace`)."""
    timed = {"arch": "resnet18", "dataset": "cifar10", "device": "cuda:0", "epoch_forwards": 100}
    lone = {**timed, "epoch_seconds": 1.0}
    pair = {**timed, "epoch_seconds": 1.5, "stack": ["p0", "p1"]}
    assert [stack_size(r) for r in (lone, pair, {"stack_size": 4}, {"stack": ["x"]})] == [
        1, 2, 4, 1,
    ]  # fmt: skip
    paces = like_paces([lone, pair])
    assert paces == {("resnet18", "cifar10", "cuda:0", 1): 0.01,
                     ("resnet18", "cifar10", "cuda:0", 2): 0.015}  # fmt: skip
    untimed = {key: value for key, value in timed.items() if key != "device"}
    devices = {"cuda:0"}
    assert _pace({**untimed, "stack": ["a", "b"]}, paces, devices) == 0.015  # a like pair
    assert _pace(untimed, paces, devices) == 0.01  # a lone run: a lone run's, not the pair's
    # a stack of 4: the slower of 4 x the lone r and 2 x the pair's
    assert _pace({**untimed, "stack_size": 4}, paces, devices) == pytest.approx(0.04)
    assert _pace(untimed, {("resnet18", "cifar10", "cuda:0", 2): 0.015}, devices) == 0.0075
    assert _pace({**untimed, "stack_size": 4}, paces, {"cuda:1"}) is None  # no like device
