"""When a run's training should end, read off its epoch records alone (torch-free): what the
runs table, `srat runs show` and the run screen print beside a running run's epoch.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from srat_engine.runs.records import is_number, latest_epoch

# Epoch records the rate is averaged over: enough to span an `eval.every` cycle of up to 10,
# few enough to follow a change of pace (the lr drop does not change it; DRW's reweighting
# and AWP's warm-up do, a little)
RATE_WINDOW = 10

# Further ahead than this is no forecast: an estimate of years is no estimate, and a datetime
# cannot hold what an absurd epoch count gives (it overflows past the year 9999)
HORIZON_S = 10 * 365 * 86400.0


def epoch_seconds(records: Sequence[Mapping[str, Any]]) -> float | None:
    """Mean seconds of one epoch, training and per-epoch evaluation: ``(1/n) sum (train_s +
    eval_s)`` over the last `RATE_WINDOW` epoch records as written, leaving out the run's first
    epoch while a later one is there (cuDNN autotuning, CUDA-graph capture); None without any
    timed epoch record."""
    epochs = [
        r
        for r in records
        if r.get("event") == "epoch"
        and is_number(r.get("train_seconds"))
        and is_number(r.get("eval_seconds"))
    ]
    window = epochs[-RATE_WINDOW:]
    if len(window) > 1 and window[0] is epochs[0]:
        window = window[1:]
    if not window:
        return None
    return statistics.fmean(float(r["train_seconds"]) + float(r["eval_seconds"]) for r in window)


def training_ends(records: Sequence[Mapping[str, Any]], epochs: int) -> datetime | None:
    """When training should reach epoch `epochs`: ``t_e + (E - e) s``, the last epoch record's
    epoch e written at t_e, and s = `epoch_seconds` (UTC; the final evaluation comes after).
    None without a timed, time-stamped epoch record, or past `HORIZON_S`."""
    last, seconds = latest_epoch(records), epoch_seconds(records)
    if last is None or seconds is None or not isinstance(last.get("time"), str):
        return None
    try:
        written = datetime.fromisoformat(last["time"])
    except ValueError:
        return None
    if written.tzinfo is None:
        written = written.replace(tzinfo=timezone.utc)
    left = max(0, epochs - int(last["epoch"]))
    return moment_after(written, left * seconds)


def moment_after(start: datetime, seconds: float | None) -> datetime | None:
    """`start` plus `seconds`; None for a span that is missing, negative, not finite or
    beyond `HORIZON_S`."""
    if seconds is None or not 0 <= seconds <= HORIZON_S:
        return None
    return start + timedelta(seconds=seconds)


def forwards(workload: Any, epochs: Any) -> tuple[float, float] | None:
    """(F_e, F_f) from a run's workload block (config.json's `workload`: `train`,
    `per_epoch_eval`, `final_eval`, as `config.workload.Workload` counts them): the forward
    passes of an average epoch, (train + per_epoch_eval) / E, and of the final evaluation;
    None when the block is missing (a run made before it was recorded) or malformed."""
    if not isinstance(workload, Mapping) or not (isinstance(epochs, int) and epochs > 0):
        return None
    train, per_epoch, final = (workload.get(k) for k in ("train", "per_epoch_eval", "final_eval"))
    if not all(is_number(v) and v >= 0 for v in (train, per_epoch, final)):
        return None
    return (train + per_epoch) / epochs, float(final)
