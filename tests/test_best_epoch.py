"""`srat runs export --checkpoint best`: each run's best epoch by PGD on the test set, as
AT-BSL's and REAT's code report, marked as selected on the test set wherever it appears."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from cli_harness import Srat, make_invoker
from fake_runs import make_fake_run

from srat_engine.runs.evaluations import store_result
from srat_engine.runs.home import Home
from srat_engine.runs.records import best_epoch
from srat_engine.runs.rundir import RunDir


def epoch(number: int, rob: float | None, std: float = 50.0) -> dict[str, object]:
    return {"event": "epoch", "epoch": number, "std_overall": std, "std_under": std - 10,
            "rob_overall": rob, "rob_under": None if rob is None else rob - 5}  # fmt: skip


def test_best_epoch_is_the_highest_robust_accuracy_measured() -> None:
    records = [epoch(1, 10.0), epoch(2, 30.0), epoch(3, None), epoch(4, 30.0), epoch(5, 20.0)]
    records.append({"event": "final", "std_overall": 1.0, "rob_overall": 99.0})
    chosen = best_epoch(records)
    assert chosen is not None and chosen["epoch"] == 2  # the earliest of equals; finals ignored
    assert best_epoch([epoch(1, None)]) is None
    damaged = {**epoch(6, 80.0), "rob_overall": "80"}  # a string: not a measurement
    assert best_epoch([*records, damaged])["epoch"] == 2  # type: ignore[index]


@pytest.fixture
def srat(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Srat:
    return make_invoker(capsys, monkeypatch)


def peaked_run(home: Path) -> RunDir:
    """A finished run whose robust accuracy peaks at epoch 3 of 5, then overfits."""
    run = make_fake_run(home / "runs", "run-peak", status="finished", epochs_done=5, epochs=5,
                        index=Home(home).index)  # fmt: skip
    records = run.metrics()
    robust = {1: 20.0, 2: 30.0, 3: 41.0, 4: 35.0, 5: 33.0}
    lines = []
    for record in records:
        if record.get("event") == "epoch":
            record = {**record, "rob_overall": robust[record["epoch"]], "std_overall": 60.0 +
                      record["epoch"]}  # fmt: skip
        lines.append(json.dumps(record))
    run.metrics_path.write_text("\n".join(lines) + "\n")
    return run


def test_export_best_reports_the_peak_epoch_and_says_it_was_chosen_on_the_test_set(
    srat: Srat, srat_home: Path
) -> None:
    run = peaked_run(srat_home)
    last = srat("runs", "export", "--format", "csv")
    best = srat("runs", "export", "--format", "csv", "--checkpoint", "best")
    assert last.code == best.code == 0, (last.err, best.err)
    (row_last,) = csv.DictReader(io.StringIO(last.out))
    (row_best,) = csv.DictReader(io.StringIO(best.out))
    final = next(r for r in run.metrics() if r["event"] == "final")
    assert float(row_last["rob_overall"]) == pytest.approx(final["rob_overall"])
    assert (float(row_best["rob_overall"]), float(row_best["std_overall"])) == (41.0, 63.0)
    assert "selection" not in row_last and row_best["selection"].startswith("selected on the test")
    md = srat("runs", "export", "--format", "md", "--checkpoint", "best").out
    assert "[best epoch]" in md and "selected on the test set" in md
    latex = srat("runs", "export", "--format", "latex", "--checkpoint", "best").out
    assert "% [best epoch] selected on the test set" in latex
    blocks = json.loads(srat("runs", "export", "--format", "json", "--checkpoint", "best").out)
    assert blocks[0]["selection"].startswith("selected on the test set")


def test_export_best_refuses_what_it_cannot_honour(srat: Srat, srat_home: Path) -> None:
    peaked_run(srat_home)
    bad = srat("runs", "export", "--checkpoint", "middle")
    assert bad.code == 2 and bad.err_lines == ["error: --checkpoint is last or best (got 'middle')"]


def test_export_best_with_an_attack_reads_only_the_best_epochs_own_evaluation(
    srat: Srat, srat_home: Path
) -> None:
    """`--checkpoint best --attack A`: A's result on best.pt (`A@best`), never the last
    checkpoint's, and none that evaluated another epoch than the best one."""
    run = peaked_run(srat_home)
    entry = {"attack": "pgd20", "overall": 39.5, "under": 30.0, "class": None, "n": 50}
    store_result(run, "pgd20", {**entry, "overall": 33.0, "checkpoint_epoch": 5})
    store_result(run, "pgd20", {**entry, "checkpoint_epoch": 3}, checkpoint="best")

    def robust(*args: str) -> str:
        result = srat("runs", "export", "--format", "csv", *args)
        assert result.code == 0, result.err
        (row,) = csv.DictReader(io.StringIO(result.out))
        return row["rob_overall"]

    assert float(robust("--attack", "pgd20")) == 33.0  # the last checkpoint's
    assert float(robust("--attack", "pgd20", "--checkpoint", "best")) == 39.5
    assert robust("--attack", "cw", "--checkpoint", "best") == ""  # never evaluated: no number
    # a best-epoch result of another epoch (the run trained on and found a new best): none
    store_result(run, "pgd20", {**entry, "checkpoint_epoch": 2}, checkpoint="best")
    assert robust("--attack", "pgd20", "--checkpoint", "best") == ""


def test_compare_best_shows_the_peak_epoch_and_says_so(srat: Srat, srat_home: Path) -> None:
    peak = peaked_run(srat_home)
    other = make_fake_run(srat_home / "runs", "run-other", status="finished", epochs_done=5,
                          epochs=5, index=Home(srat_home).index)  # fmt: skip
    last = srat("runs", "compare", peak.id, other.id)
    best = srat("runs", "compare", peak.id, other.id, "--checkpoint", "best")
    assert last.code == best.code == 0, (last.err, best.err)
    assert "selected on the test set" not in last.out and "final" in last.out
    assert "[best epoch]" in best.out and "selected on the test set" in best.out
    assert "Rob overall [best epoch]" in best.out  # every robust header says so, not only a note
    row = next(line for line in best.out.splitlines() if "run-peak" in line and "epoch" in line)
    assert "epoch 3/5" in row and "41.00" in row  # the peak, not the final evaluation
    bad = srat("runs", "compare", peak.id, other.id, "--checkpoint", "first")
    assert bad.code == 2 and "--checkpoint is last or best" in bad.err
