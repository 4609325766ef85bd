"""When a running run's training should end (srat_engine/runs/progress.py), and how the runs
table, `srat runs show` and the run screen say it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cli_harness import Srat, make_invoker
from fake_runs import make_fake_run

from srat_engine.runs.progress import (
    HORIZON_S,
    RATE_WINDOW,
    epoch_seconds,
    moment_after,
    training_ends,
)
from srat_engine.runs.summary import summarize_run
from srat_tui.render.format import duration, runs_cell, time_left

START = datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc)


def timed(epoch: int, train: float, evaluate: float, at: float) -> dict[str, Any]:
    time = (START + timedelta(seconds=at)).isoformat(timespec="seconds")
    return {"event": "epoch", "epoch": epoch, "epochs": 10, "train_seconds": train,
            "eval_seconds": evaluate, "time": time}  # fmt: skip


def test_epoch_seconds_leave_the_first_epoch_out_and_average_the_rest() -> None:
    records = [timed(1, 10.0, 5.0, 15), timed(2, 2.0, 1.0, 18), timed(3, 2.0, 0.5, 21),
               timed(4, 2.5, 0.5, 24)]  # fmt: skip
    # (3 + 2.5 + 3) / 3: epoch 1's autotuning and capture left out
    assert epoch_seconds(records) == pytest.approx(8.5 / 3)
    assert epoch_seconds(records[:1]) == pytest.approx(15.0)  # alone, it is all there is
    assert epoch_seconds([{"event": "final", "train_seconds": 1.0}]) is None
    # last epoch 4 written at 10:00:24; 6 epochs left at 8.5 / 3 s each = 17 s
    assert training_ends(records, 10) == START + timedelta(seconds=24 + 17)
    assert training_ends(records, 4) == START + timedelta(seconds=24)  # nothing left
    untimed = [{k: v for k, v in r.items() if k != "time"} for r in records]
    assert training_ends(untimed, 10) is None


def test_an_end_beyond_the_horizon_is_no_estimate() -> None:
    records = [timed(1, 10.0, 5.0, 15), timed(2, 2.0, 1.0, 18), timed(3, 2.0, 1.0, 21)]
    # 3 s an epoch: the horizon holds HORIZON_S / 3 epochs more, and not one past it
    within = 3 + int(HORIZON_S // 3)
    assert training_ends(records, within) == START + timedelta(seconds=21 + HORIZON_S)
    assert training_ends(records, within + 1) is None
    # epochs a TOML integer can hold: past what a datetime can, which raised OverflowError
    assert training_ends(records, 2**63 - 1) is None
    assert moment_after(START, float("nan")) is None
    assert moment_after(START, -1.0) is None


def test_a_huge_epoch_count_leaves_a_running_runs_summary_without_its_end(
    tmp_path: Path,
) -> None:
    # the OverflowError this raised also broke `srat runs ls` and the runs table for every run
    run = make_fake_run(tmp_path / "home", "huge", status="running", epochs_done=3, epochs=2**62)
    summary = summarize_run(run)
    assert summary["epochs"] == 2**62
    assert summary["ends"] is None
    like = make_fake_run(tmp_path / "home", "like", status="running", epochs_done=3, epochs=10)
    assert summarize_run(like)["ends"] is not None  # the same records, a reachable end


def test_the_rate_follows_the_last_epochs_written() -> None:
    slow = [timed(e, 10.0, 0.0, 10 * e) for e in range(1, 6)]
    fast = [timed(e, 1.0, 1.0, 50 + 2 * e) for e in range(6, 6 + RATE_WINDOW)]
    assert epoch_seconds(slow + fast) == pytest.approx(2.0)  # the window holds fast ones only
    # a resume re-runs epochs 4-5 after epoch 5: the file's last record is the progress
    resumed = [*slow, timed(4, 3.0, 0.0, 60), timed(5, 3.0, 0.0, 63)]
    ends = training_ends(resumed, 10)
    assert ends is not None
    seconds = epoch_seconds(resumed)
    assert seconds is not None
    assert ends == START + timedelta(seconds=63 + 5 * seconds)


def test_the_epoch_cell_says_the_time_left_of_a_running_run() -> None:
    now = START
    record = {"status": "running", "epoch": 37, "epochs": 200,
              "ends": (START + timedelta(minutes=6, seconds=30)).isoformat()}  # fmt: skip
    assert runs_cell(record, "epoch", now) == "37/200 ~6m"
    # a queued run's expected end (`jobs.forecast`), its wait included
    assert runs_cell({**record, "status": "queued"}, "epoch", now) == "37/200 ~6m"
    assert runs_cell({**record, "status": "finished"}, "epoch", now) == "37/200"
    late = {**record, "ends": (START - timedelta(seconds=5)).isoformat()}
    assert runs_cell(late, "epoch", now) == "37/200"  # late says nothing, not "0s"
    assert runs_cell({**record, "ends": None}, "epoch", now) == "37/200"
    assert time_left("not a time", now) is None
    assert [duration(s) for s in (-3, 42, 61, 7200, 90000)] == ["0s", "42s", "1m", "2h", "1d"]


def test_a_running_run_s_record_and_show_say_when_training_ends(
    srat_home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run = make_fake_run(srat_home / "runs", "run-a", epochs_done=5, epochs=10)
    now = datetime.now(timezone.utc)
    for epoch in range(6, 8):  # two epochs of 30 s each, the last written just now
        record = timed(epoch, 29.0, 1.0, 0)
        at = now - timedelta(seconds=30 * (7 - epoch))
        run.append_metrics({**record, "epochs": 10, "time": at.isoformat(timespec="seconds")})
    summary = summarize_run(run)
    seconds = epoch_seconds(run.metrics())
    assert seconds is not None
    ends = datetime.fromisoformat(summary["ends"])
    assert abs((ends - now).total_seconds() - 3 * seconds) < 1.5  # 3 epochs left
    srat: Srat = make_invoker(capsys, monkeypatch)
    shown = srat("runs", "show", "run-a")
    assert shown.code == 0, shown.err
    assert f"pace     {seconds:.1f} s an epoch" in shown.out and "training ends ~" in shown.out
    finished = make_fake_run(srat_home / "runs", "run-b", status="finished")
    assert summarize_run(finished)["ends"] is None
    assert "pace" not in srat("runs", "show", "run-b").out
