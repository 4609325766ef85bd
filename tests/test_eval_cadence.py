"""Which epochs are evaluated (`eval.every`, `eval.robust_every`) and the best epoch's weights
(`train.keep_best`: checkpoints/best.pt) on tiny digits runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fake_runs import TINY_RUN, prepare_from_env

from srat_engine.config.prepare import create_run
from srat_engine.config.schema import EvalConfig
from srat_engine.config.workload import evaluation_due
from srat_engine.runs.records import best_epoch
from srat_engine.runs.rundir import RunDir
from srat_engine.runs.summary import config_key, summarize_run
from srat_engine.training.checkpoint import load_checkpoint, save_checkpoint
from srat_engine.training.trainer import RunInterrupted, execute


def tiny_run(root: Path, *extra: str) -> RunDir:
    prepared = prepare_from_env("digits-ce", ("train.epochs=4", *TINY_RUN, *extra))
    return create_run(prepared, root=root / "runs")


@pytest.mark.parametrize(
    ("every", "robust_every", "expected"),
    [
        # 7 epochs; entries: (evaluated, robust) after epochs 1..7; the last one always both
        (1, 1, [(True, True)] * 7),
        (2, 1, [(False, False), (True, True)] * 3 + [(True, True)]),
        (1, 3, [(True, False), (True, False), (True, True)] * 2 + [(True, True)]),
        # robust where both cadences meet: epoch 6 of 7 (and 7, the last)
        (2, 3, [(False, False), (True, False), (False, False), (True, False), (False, False),
                (True, True), (True, True)]),
    ],
)  # fmt: skip
def test_evaluation_due_hand_computed(
    every: int, robust_every: int, expected: list[tuple[bool, bool]]
) -> None:
    config = EvalConfig(every=every, robust_every=robust_every)
    assert [evaluation_due(done, 7, config) for done in range(1, 8)] == expected


def _final(run: RunDir) -> dict[str, object]:
    final = [r for r in run.metrics() if r["event"] == "final"][-1]
    return {k: v for k, v in final.items() if k != "time"}


def test_eval_every_skips_epochs_without_changing_training(tmp_path: Path) -> None:
    every_epoch = tiny_run(tmp_path / "a")
    execute(every_epoch)
    sparse = tiny_run(tmp_path / "b", "eval.every=3")
    execute(sparse)
    epochs = {r["epoch"]: r for r in sparse.metrics() if r["event"] == "epoch"}
    assert sorted(epochs) == [1, 2, 3, 4]
    for number in (1, 2):  # not evaluated: nothing measured, no evaluation time
        assert epochs[number]["std_overall"] is None and epochs[number]["rob_overall"] is None
        assert epochs[number]["eval_seconds"] < 0.01
    assert epochs[3]["std_overall"] is not None and epochs[3]["rob_overall"] is not None
    assert epochs[4]["rob_overall"] is not None  # the last epoch always
    # evaluation draws from its own generator: the weights, hence the final numbers, agree
    assert _final(sparse) == _final(every_epoch)
    # a cadence is bookkeeping: both runs are seeds of one configuration
    assert config_key(sparse.config()["config"]) == config_key(every_epoch.config()["config"])
    assert summarize_run(sparse)["std_overall"] == summarize_run(every_epoch)["std_overall"]


def test_best_pt_holds_the_best_epoch_and_keep_best_false_keeps_none(tmp_path: Path) -> None:
    run = tiny_run(tmp_path / "a", "train.epochs=5")
    execute(run)
    best = best_epoch(run.metrics(), 10)
    assert best is not None
    saved = load_checkpoint(run.best_checkpoint_path)
    assert saved["epoch"] == best["epoch"] and saved["rob_overall"] == best["rob_overall"]
    assert set(saved) == {"model", "epoch", "rob_overall"}  # weights only: no optimizer state
    if best["epoch"] == 5:  # the last epoch's weights are last.pt's
        last = load_checkpoint(run.checkpoint_path)["model"]
        assert all((last[k] == saved["model"][k]).all() for k in last)

    without = tiny_run(tmp_path / "b", "train.epochs=2", "train.keep_best=false")
    execute(without)
    assert without.checkpoint_path.is_file() and not without.best_checkpoint_path.exists()


def _interrupt_after(epoch: int) -> Callable[[dict[str, object]], None]:
    def handler(record: dict[str, object]) -> None:
        if record["event"] == "epoch" and record["epoch"] == epoch:
            raise RunInterrupted("test")

    return handler


def test_resume_drops_a_best_pt_that_ran_ahead_of_the_checkpoint(tmp_path: Path) -> None:
    """A kill between an epoch's best.pt and its checkpoint: the resume trains that epoch
    again, so the best.pt of the dropped record must not stand for it."""
    run = tiny_run(tmp_path, "train.checkpoint_every=2")
    with pytest.raises(RunInterrupted):
        execute(run, on_event=_interrupt_after(3))  # last.pt holds epoch 2
    assert load_checkpoint(run.checkpoint_path)["epoch"] == 2
    ahead = load_checkpoint(run.best_checkpoint_path)
    save_checkpoint(run.best_checkpoint_path, {**ahead, "epoch": 3, "rob_overall": 100.0})
    execute(run, resume=True)
    assert "removed best.pt of epoch 3" in run.log_path.read_text()
    best = best_epoch(run.metrics(), 10)
    assert best is not None and best["rob_overall"] != 100.0
    if run.best_checkpoint_path.exists():  # kept only for an epoch trained after the resume
        assert load_checkpoint(run.best_checkpoint_path)["epoch"] == best["epoch"] >= 3


def test_latest_classwise_falls_back_to_the_last_measured_epoch_for_each_list() -> None:
    from srat_engine.analysis.sweeps import latest_classwise

    records = [
        {"event": "epoch", "epoch": 1, "std_class": [1.0], "rob_class": [0.5]},
        {"event": "epoch", "epoch": 2, "std_class": [2.0], "rob_class": None},
        {"event": "epoch", "epoch": 3, "std_class": None, "rob_class": None},  # eval.every
    ]
    latest = latest_classwise(records)
    assert (latest["epoch"], latest["std_class"], latest["rob_class"]) == (3, [2.0], [0.5])


def test_a_corrupt_best_pt_does_not_stop_a_resume(tmp_path: Path) -> None:
    run = tiny_run(tmp_path)
    with pytest.raises(RunInterrupted):
        execute(run, on_event=_interrupt_after(2))
    run.best_checkpoint_path.write_bytes(b"not a checkpoint")
    execute(run, resume=True)
    assert run.exit_record()["status"] == "finished"
    (aside,) = run.best_checkpoint_path.parent.glob("best.pt.corrupt-*")
    assert aside.read_bytes() == b"not a checkpoint"  # set aside, not deleted
    assert "corrupt or unsafe" in run.log_path.read_text()


def test_every_evaluation_runs_without_tf32_and_training_keeps_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Per-epoch and final evaluation, clean and robust, in strict fp32 (`srat eval`'s own
    precision, so it reproduces the recorded numbers on a GPU too); training's setting is the
    user's and comes back after each evaluation."""
    import torch

    import srat_engine.training.trainer as trainer

    seen: dict[str, set[tuple[bool, bool]]] = {"clean": set(), "robust": set()}

    def flags() -> tuple[bool, bool]:
        return torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32

    def recording(kind: str, make: Callable[..., Callable[..., object]]) -> Callable[..., object]:
        def build(*args: object, **kwargs: object) -> Callable[..., object]:
            hits = make(*args, **kwargs)

            def recorded(*batch: object) -> object:
                seen[kind].add(flags())
                return hits(*batch)

            return recorded

        return build

    monkeypatch.setattr(trainer, "feature_hits", recording("clean", trainer.feature_hits))
    monkeypatch.setattr(trainer, "pgd_hits", recording("robust", trainer.pgd_hits))
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", True)
    execute(tiny_run(tmp_path, "train.epochs=2"))
    assert seen == {"clean": {(False, False)}, "robust": {(False, False)}}
    assert flags() == (True, True)
