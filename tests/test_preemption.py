"""A checkpoint request (Slurm's warning before a time limit or a preemption) stops training at
a safe point with a checkpoint of its exact position; resuming gives an uninterrupted run's
results, to the bit, on the CPU."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from fake_runs import TINY_RUN, prepare_from_env
from step_requests import request_after_steps

import srat_engine.training.trainer as trainer_module
from srat_engine.config.prepare import create_run
from srat_engine.errors import RunPreempted, SratError
from srat_engine.runs.rundir import RunDir
from srat_engine.training.trainer import execute

# 3 epochs of 4 batches (159 training digits: 40, 40, 40 and a partial 39); SRAT-LDAM, so the
# separation loss, DRCB's reweighting (from epoch 3) and PGD's random starts all take part.
BATCHES = 4
CONFIG = (*TINY_RUN, "train.epochs=3", "train.batch_size=40", "method=SRAT-LDAM")
_TIMING = ("time", "train_seconds", "eval_seconds")


def _create(root: Path) -> RunDir:
    return create_run(prepare_from_env("digits-ce", CONFIG), root=root / "runs")


def _results(run: RunDir) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The epoch records and the one final record, without their timings."""
    records = [{k: v for k, v in r.items() if k not in _TIMING} for r in run.metrics()]
    finals = [r for r in records if r["event"] == "final"]
    assert len(finals) == 1
    return [r for r in records if r["event"] == "epoch"], finals[0]


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, Any]], Any]:
    """The uninterrupted run's results (once for the module: it is what every test matches)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SRAT_HOME", str(tmp_path_factory.mktemp("srat-home")))
        env.delenv("SRAT_PRESETS", raising=False)
        env.delenv("SRAT_DATA", raising=False)
        run = _create(tmp_path_factory.mktemp("straight"))
        execute(run, heartbeat_s=None)
    epochs, final = _results(run)
    assert [r["epoch"] for r in epochs] == [1, 2, 3]
    return epochs, final


@pytest.fixture
def request_after(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], threading.Event]:
    """`request_after(k)`: an event the next execute's trainer sets itself right after its k-th
    training batch (counted from the start of that execute), as a signal handler would."""

    def make(k: int) -> threading.Event:
        return request_after_steps(monkeypatch, trainer_module, "graphed_step", k)

    return make


def _preempt(run: RunDir, event: threading.Event, **kwargs: Any) -> RunPreempted:
    with pytest.raises(RunPreempted) as caught:
        execute(run, checkpoint_request=event, heartbeat_s=None, **kwargs)
    return caught.value


def _resumes(run: RunDir) -> list[tuple[int, int]]:
    return [(r["from_epoch"], r["from_batch"]) for r in run.metrics() if r["event"] == "resume"]


@pytest.mark.parametrize(
    ("k", "epoch", "batch"),
    [
        (2, 0, 2),  # mid-epoch 1
        (BATCHES, 0, BATCHES),  # after epoch 1's last batch, before its evaluation
        (BATCHES + 3, 1, 3),  # in epoch 2, before its partial last batch
    ],
)
def test_a_run_stopped_mid_epoch_resumes_to_the_uninterrupted_results(
    tmp_path: Path,
    straight: tuple[list[dict[str, Any]], Any],
    request_after: Callable[[int], threading.Event],
    k: int,
    epoch: int,
    batch: int,
) -> None:
    run = _create(tmp_path)
    stop = _preempt(run, request_after(k))
    assert (stop.epoch, stop.batch) == (epoch, batch)
    assert str(stop) == f"checkpointed at epoch {epoch}, batch {batch} of epoch {epoch + 1}"
    assert [r["epoch"] for r in run.metrics() if r["event"] == "epoch"] == list(range(1, epoch + 1))

    final = execute(run, resume=True, heartbeat_s=None)
    assert _results(run) == straight
    assert final == run.metrics()[-1]
    assert _resumes(run) == [(epoch, batch)]
    assert run.exit_record()["status"] == "finished"


def test_a_run_stopped_at_an_epoch_boundary_resumes_to_the_uninterrupted_results(
    tmp_path: Path, straight: tuple[list[dict[str, Any]], Any]
) -> None:
    run = _create(tmp_path)
    event = threading.Event()

    def after_epoch_1(record: dict[str, Any]) -> None:
        if record["event"] == "epoch" and record["epoch"] == 1:
            event.set()  # during the epoch's end: the check after it stops the run

    stop = _preempt(run, event, on_event=after_epoch_1)
    assert (stop.epoch, stop.batch) == (1, 0)
    assert str(stop) == "checkpointed after epoch 1, at the epoch boundary"
    state = torch.load(run.checkpoint_path, weights_only=True)
    assert state["epoch"] == 1 and "batch" not in state and "order" not in state

    execute(run, resume=True, heartbeat_s=None)
    assert _results(run) == straight
    assert _resumes(run) == [(1, 0)]


def test_a_request_after_the_last_epoch_stops_before_the_final_evaluation(
    tmp_path: Path, straight: tuple[list[dict[str, Any]], Any]
) -> None:
    run = _create(tmp_path)
    event = threading.Event()

    def after_last(record: dict[str, Any]) -> None:
        if record["event"] == "epoch" and record["epoch"] == 3:
            event.set()

    stop = _preempt(run, event, on_event=after_last)
    assert (stop.epoch, stop.batch) == (3, 0)
    assert not [r for r in run.metrics() if r["event"] == "final"]
    execute(run, resume=True, heartbeat_s=None)
    assert _results(run) == straight


def test_a_run_stopped_twice_resumes_to_the_uninterrupted_results(
    tmp_path: Path,
    straight: tuple[list[dict[str, Any]], Any],
    request_after: Callable[[int], threading.Event],
) -> None:
    run = _create(tmp_path)
    first = _preempt(run, request_after(3))
    assert (first.epoch, first.batch) == (0, 3)
    # the resumed execute counts from its first batch: 1 to finish epoch 1, 4 of epoch 2, 1 more
    second = _preempt(run, request_after(6), resume=True)
    assert (second.epoch, second.batch) == (2, 1)
    execute(run, resume=True, heartbeat_s=None)
    assert _results(run) == straight
    assert _resumes(run) == [(0, 3), (2, 1)]
    assert [r["epoch"] for r in run.metrics() if r["event"] == "epoch"] == [1, 2, 3]


def test_a_preempted_run_records_no_end_and_leaves_a_safe_checkpoint(
    tmp_path: Path, request_after: Callable[[int], threading.Event]
) -> None:
    run = _create(tmp_path)
    stop = _preempt(run, request_after(BATCHES + 2))
    assert (stop.epoch, stop.batch) == (1, 2)
    assert not isinstance(stop, SratError)
    assert run.exit_record() is None and not (run.path / "exit.json").exists()
    assert run.state()["status"] == "running"  # the caller decides what it becomes
    assert run.state()["epoch"] == 1
    log = run.log_path.read_text().splitlines()
    assert log[-1].endswith("preempted: checkpointed at epoch 1, batch 2 of epoch 2 "
                            "(not ended: resume continues from there)")  # fmt: skip

    state = torch.load(run.checkpoint_path, weights_only=True)
    assert (state["epoch"], state["batch"]) == (1, 2)
    n = sum(run.config()["resolved"]["class_counts"])
    assert sorted(state["order"].tolist()) == list(range(n))
    assert state["sums"].shape == (4,)
    assert state["sums"][0] > 0 and state["sums"][3] == 0  # 2 batches' loss, all finite
    assert set(state) >= {"model", "optimizer", "generator", "torch_rng"}


def test_a_diverged_model_is_not_checkpointed_on_request(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request_after: Callable[[int], threading.Event],
) -> None:
    def poisoned(config: Any, margins: Any, log_prior: Any = None) -> Any:
        return lambda logits, y: logits.sum(dim=1) * math.nan

    monkeypatch.setattr(trainer_module, "per_sample_loss", poisoned)
    run = _create(tmp_path)
    with pytest.raises(SratError, match=r"nan/inf in epoch 1"):
        execute(run, checkpoint_request=request_after(1), heartbeat_s=None)
    assert not run.checkpoint_path.exists()
    assert run.exit_record()["status"] == "failed"


def test_a_checkpoint_whose_position_does_not_fit_refuses_to_resume(
    tmp_path: Path, request_after: Callable[[int], threading.Event]
) -> None:
    run = _create(tmp_path)
    _preempt(run, request_after(1))
    state = torch.load(run.checkpoint_path, weights_only=True)
    torch.save({**state, "batch": BATCHES + 1}, run.checkpoint_path)
    with pytest.raises(SratError, match="does not fit: batch 5 of epoch 1 is not in this run"):
        execute(run, resume=True, heartbeat_s=None)
