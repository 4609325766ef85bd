"""`srat_engine.runs.records`: which metrics record is a run's result, on hand-built logs."""

from __future__ import annotations

from typing import Any

from srat_engine.runs.records import (
    current_final,
    epoch_summary,
    latest_epoch,
    result_columns,
    result_record,
)

COLUMNS = ("std_overall", "rob_overall")


def epoch(n: int, std: float, rob: float | None) -> dict[str, Any]:
    return {"event": "epoch", "epoch": n, "std_overall": std, "rob_overall": rob}


FINAL: dict[str, Any] = {"event": "final", "std_overall": 70.0, "rob_overall": 40.0}


def test_an_empty_log_has_no_result() -> None:
    assert current_final([]) is None and latest_epoch([]) is None
    assert result_record([]) == (None, False)
    assert result_columns([], COLUMNS) == ({"std_overall": None, "rob_overall": None}, False)


def test_the_final_record_is_the_result() -> None:
    records = [epoch(1, 50.0, 30.0), epoch(2, 55.0, 31.0), FINAL, {"event": "note"}]
    assert current_final(records) is FINAL  # a note after it changes nothing
    assert result_record(records) == (FINAL, True)
    assert result_columns(records, COLUMNS) == ({"std_overall": 70.0, "rob_overall": 40.0}, True)


def test_a_final_followed_by_more_epochs_is_stale() -> None:
    records = [epoch(1, 50.0, 30.0), FINAL, {"event": "resume", "from_epoch": 1}]
    # trained further: the resume alone makes the final stale, the epoch before it is the result
    assert current_final(records) is None
    assert result_record(records) == (records[0], False)
    records.append(epoch(2, 60.0, None))
    assert result_record(records) == (records[-1], False)
    assert result_columns(records, COLUMNS) == ({"std_overall": 60.0, "rob_overall": 30.0}, False)
    # finishing again makes the new final the result
    final = {**FINAL, "std_overall": 75.0}
    assert result_record([*records, final]) == (final, True)


def test_robust_measured_every_n_epochs_comes_from_the_last_epoch_that_measured_it() -> None:
    records = [epoch(1, 10.0, 5.0), epoch(2, 20.0, None), epoch(3, 30.0, 8.0), epoch(4, 40.0, None)]
    assert result_columns(records, COLUMNS) == ({"std_overall": 40.0, "rob_overall": 8.0}, False)
    # the whole record is the latest epoch as written, robust field missing
    assert result_record(records) == (records[3], False)


def test_after_a_resume_that_reruns_epochs_the_latest_is_in_file_order() -> None:
    rerun = epoch(2, 21.0, 6.0)
    records = [
        epoch(1, 10.0, 5.0),
        epoch(2, 20.0, 5.5),
        epoch(3, 30.0, 7.0),
        {"event": "resume", "from_epoch": 1},
        rerun,
        {"event": "epoch", "epoch": "three"},  # malformed: no integer epoch
    ]
    assert latest_epoch(records) is rerun
    assert result_record(records) == (rerun, False)
    assert result_columns(records, COLUMNS) == ({"std_overall": 21.0, "rob_overall": 6.0}, False)


def test_epoch_summary_is_one_plain_line_of_the_record() -> None:
    record = {"event": "epoch", "epoch": 3, "epochs": 30, "lr": 0.1, "loss": 1.23456,
              "sep_loss": 0.5, "std_overall": 56.781, "std_under": 45.674, "rob_overall": 34.5,
              "rob_under": 23.456, "reweighting": True, "gair": False, "train_seconds": 10.0,
              "eval_seconds": 2.25}  # fmt: skip
    assert epoch_summary(record) == (
        "epoch  3/30  lr 0.1  loss 1.2346  sep 0.5000  std 56.78/45.67  rob 34.50/23.46  "
        "+reweighting  12.2s"
    )
    # an epoch without robust evaluation (eval.robust_every) and a damaged value: no crash
    sparse = {**record, "rob_overall": None, "sep_loss": None, "loss": "x", "reweighting": False}
    assert epoch_summary(sparse) == "epoch  3/30  lr 0.1  loss -  std 56.78/45.67  12.2s"
