"""End-to-end runs on digits: every method, resume equivalence, failure records."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from fake_runs import TINY_RUN, prepare_from_env

from srat_engine.config.methods import METHODS
from srat_engine.config.prepare import create_run
from srat_engine.errors import SratError
from srat_engine.runs.rundir import RunDir
from srat_engine.training.trainer import RunInterrupted, execute

# Small enough for a 2-core CI box: ~200 training digits, PGD-2, 4 epochs.
TINY = ("train.epochs=4", *TINY_RUN)


def tiny_run(tmp_path: Path, method: str, *extra: str) -> RunDir:
    prepared = prepare_from_env("digits-ce", (*TINY, f"method={method}", *extra))
    return create_run(prepared, root=tmp_path / "runs")


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_trains_on_digits(tmp_path: Path, method: str) -> None:
    run = tiny_run(tmp_path, method)
    final = execute(run)
    records = run.metrics()
    epochs = [r for r in records if r["event"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2, 3, 4]
    assert records[-1]["event"] == "final" and records[-1] == final
    assert run.exit_record()["status"] == "finished"
    assert run.state()["status"] == "finished"
    for column in ("std_overall", "std_under", "rob_overall", "rob_under"):
        assert 0.0 <= final[column] <= 100.0
    assert len(final["std_class"]) == len(final["rob_class"]) == 10
    assert final["rob_n"] == 500  # the full balanced digits test set at the end
    assert run.checkpoint_path.is_file()

    spec = METHODS[method]
    # 4 epochs on the 200-epoch scale: DRCB/SRAT reweight from round(160 * 4/200) = 3 (0-based)
    expected_reweighting = {
        "none": [False] * 4,
        "cb": [True] * 4,
        "drcb": [False, False, False, True],
    }[spec.reweight]
    assert [r["reweighting"] for r in epochs] == expected_reweighting
    assert all((r["sep_loss"] is not None) == spec.separation for r in epochs)
    # GAIRAT weights from its 1-based begin epoch round(100 * 4/200) = 2, 0-based 1
    expected_gair = [False, True, True, True] if spec.gair else [False] * 4
    assert [r["gair"] for r in epochs] == expected_gair


def test_adversarial_training_lowers_robust_gap_vs_natural(tmp_path: Path) -> None:
    """Natural training learns digits; PGD robust accuracy stays below standard accuracy."""
    run = tiny_run(tmp_path, "Natural", "train.epochs=8", "data.n_max=124", "data.ratio=1")
    final = execute(run)
    assert final["std_overall"] > 70.0
    assert final["rob_overall"] < final["std_overall"]


def _interrupt_after(epoch: int) -> Any:
    def handler(record: dict[str, Any]) -> None:
        if record["event"] == "epoch" and record["epoch"] == epoch:
            raise RunInterrupted("test")

    return handler


def _finals(run: RunDir) -> dict[str, Any]:
    final = [r for r in run.metrics() if r["event"] == "final"][-1]
    return {k: v for k, v in final.items() if k != "time"}


@pytest.mark.parametrize("method", ["SRAT-LDAM", "GAIRAT"])
def test_resume_gives_the_same_final_metrics(tmp_path: Path, method: str) -> None:
    straight = tiny_run(tmp_path / "a", method)
    execute(straight)

    resumed = tiny_run(tmp_path / "b", method)
    with pytest.raises(RunInterrupted):
        execute(resumed, on_event=_interrupt_after(2))
    assert resumed.exit_record()["status"] == "killed"
    execute(resumed, resume=True)

    assert _finals(resumed) == _finals(straight)
    events = [r["event"] for r in resumed.metrics()]
    assert "resume" in events
    epochs = [r["epoch"] for r in resumed.metrics() if r["event"] == "epoch"]
    assert epochs == [1, 2, 3, 4]
    assert resumed.exit_record()["status"] == "finished"


def test_nan_loss_stops_the_run_with_a_clear_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import srat_engine.training.trainer as train_module

    def poisoned(config: Any, margins: Any, log_prior: Any = None) -> Any:
        return lambda logits, y: logits.sum(dim=1) * math.nan

    monkeypatch.setattr(train_module, "per_sample_loss", poisoned)
    run = tiny_run(tmp_path, "CE")
    with pytest.raises(SratError, match=r"nan/inf in epoch 1"):
        execute(run)
    assert run.exit_record()["status"] == "failed"
    assert "nan" in run.exit_record()["error"]
    assert not run.checkpoint_path.exists()  # a diverged model is never checkpointed


def test_corrupt_checkpoint_refuses_to_resume(tmp_path: Path) -> None:
    run = tiny_run(tmp_path, "CE")
    with pytest.raises(RunInterrupted):
        execute(run, on_event=_interrupt_after(1))
    run.checkpoint_path.write_bytes(b"not a checkpoint")
    with pytest.raises(SratError, match="corrupt"):
        execute(run, resume=True)


def test_checkpoint_is_loadable_with_weights_only(tmp_path: Path) -> None:
    run = tiny_run(tmp_path, "SRAT-CE", "train.epochs=1")
    execute(run)
    state = torch.load(run.checkpoint_path, weights_only=True)
    assert state["epoch"] == 1
    assert set(state) >= {"model", "optimizer", "generator", "torch_rng"}


def test_config_json_records_the_resolved_run(tmp_path: Path) -> None:
    run = tiny_run(tmp_path, "DRCB-LDAM", "train.epochs=1")
    doc = run.config()
    resolved = doc["resolved"]
    assert resolved["class_counts"] == [40, 30, 23, 18, 14, 11, 8, 6, 5, 4]
    assert resolved["under_classes"] == [5, 6, 7, 8, 9]
    assert len(resolved["class_weights"]) == 10 and len(resolved["ldam_margins"]) == 10
    assert resolved["head"] == "cosine"
    assert doc["config"]["seed"] == 0 and "torch" in resolved["versions"]


def test_ctrl_c_before_the_stop_handlers_is_recorded_as_a_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A KeyboardInterrupt (Python's SIGINT) while the run is being marked running, before
    execute's own handlers take SIGINT over: recorded "killed", as a moment later, and raised
    as RunInterrupted for the CLI's "stopped by SIGINT; resume it" (it read "dead", unsaid)."""
    import srat_engine.training.trainer as trainer

    run = tiny_run(tmp_path, "CE")
    real = trainer.mark_running

    def interrupted(*args: Any, **kwargs: Any) -> None:
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "mark_running", interrupted)
    with pytest.raises(RunInterrupted, match="SIGINT"):
        execute(run)
    assert run.state()["status"] == "killed"
    assert run.exit_record()["error"] == "stopped by SIGINT"  # type: ignore[index]
