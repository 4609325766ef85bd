"""Stacked runs: K seeds of one configuration in one process train as each would alone."""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from fake_runs import TINY_RUN, prepare_from_env
from graph_emulation import EmulatedGraphs
from step_requests import request_after_steps

import srat_engine.training.stacked_trainer as stacked_trainer
from srat_engine.config.prepare import create_run
from srat_engine.config.stacking import check_stackable, stack_refusal
from srat_engine.errors import RunInterrupted, RunPreempted, SratError
from srat_engine.graph_capture import CUDA_GRAPHS
from srat_engine.runs.rundir import RunDir
from srat_engine.training.graphs import GraphedStackedStep
from srat_engine.training.stacked_step import StackedTrainStep
from srat_engine.training.stacked_trainer import StackedTrainer, execute_stacked
from srat_engine.training.trainer import EpochPlan, Trainer, execute

# digits, PGD-2, a step or two an epoch (fake_runs.TINY_RUN), crop augmentation and both
# the separation term and DRCB's deferred weights acting within 3 epochs
STACKABLE = ("train.epochs=3", "train.reweight_epoch=100", *TINY_RUN)
CLOSE = {"rel": 1e-4, "abs": 1e-4}  # records, pytest.approx
TIGHT = {"rtol": 1e-4, "atol": 1e-4}  # tensors, torch.testing.assert_close


# the same reduction order alone and stacked, whatever the box's core count
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def seed_runs(root: Path, preset: str, seeds: list[int], *extra: str) -> list[RunDir]:
    runs = []
    for seed in seeds:
        prepared = prepare_from_env(preset, (*STACKABLE, *extra, f"seed={seed}"))
        runs.append(create_run(prepared, root=root))
    return runs


def epoch_columns(run: RunDir) -> list[dict[str, Any]]:
    keep = (
        "loss",
        "sep_loss",
        "train_acc",
        "std_overall",
        "rob_overall",
        "separability",
        "reweighting",
    )
    return [{k: r[k] for k in keep} for r in run.metrics() if r["event"] == "epoch"]


def assert_records_close(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> None:
    assert len(a) == len(b) > 0
    for left, right in zip(a, b, strict=True):
        assert left.keys() == right.keys()
        for key, value in left.items():
            if isinstance(value, float):
                assert right[key] == pytest.approx(value, **CLOSE), key
            else:
                assert right[key] == value, key


def train_one_epoch_both_ways(
    runs: list[RunDir], device: torch.device
) -> tuple[list[Trainer], list[Trainer], list[EpochPlan], list[EpochPlan]]:
    """The runs' last epoch, trained stacked and (from the same start) alone: the trainers
    and epoch plans of both."""
    stacked = [Trainer(run, device) for run in runs]
    alone = [Trainer(run, device) for run in runs]
    for trainer in (*stacked, *alone):
        trainer.begin_run(resume=False)
    step = StackedTrainStep([t.train_step for t in stacked])
    # the attack folds BatchNorm into the convolutions where a lone run's does
    config = stacked[0].config
    folds = config.spec.adversarial and config.train.fold_bn and config.attack.bn_mode == "eval"
    assert (stacked[0].train_step.folded is not None) == folds
    epoch = stacked[0].config.train.epochs - 1  # the last: every part of the method acts
    plans = [t.plan_epoch(epoch) for t in stacked]
    alone_plans = [t.plan_epoch(epoch) for t in alone]
    lead = plans[0]
    for index in range(len(lead.batches)):
        step(
            [t.train_step for t in stacked],
            [t.data.train_x[p.batches[index]] for t, p in zip(stacked, plans, strict=True)],
            [t.data.train_y[p.batches[index]] for t, p in zip(stacked, plans, strict=True)],
            class_w=lead.class_w,
            use_gair=lead.use_gair,
            lam=lead.lam,
            sums=[p.position.sums for p in plans],
        )
        for trainer, plan in zip(alone, alone_plans, strict=True):
            trainer.train_batch(plan, index)
    return stacked, alone, plans, alone_plans


def assert_trained_alike(
    stacked: list[Trainer], alone: list[Trainer], plans: list[EpochPlan],
    alone_plans: list[EpochPlan], tolerance: dict[str, float],
) -> None:  # fmt: skip
    for s, a, sp, ap in zip(stacked, alone, plans, alone_plans, strict=True):
        torch.testing.assert_close(sp.position.sums, ap.position.sums, **tolerance)
        for (name, ps), (_, pa) in zip(
            s.model.state_dict().items(), a.model.state_dict().items(), strict=True
        ):
            torch.testing.assert_close(ps, pa, **tolerance, msg=lambda m, k=name: f"{k}: {m}")
        # each run's generator has drawn what it draws alone: the next draws agree
        assert torch.equal(s.generator.get_state(), a.generator.get_state())
    # and the two runs did train differently: seeds, not copies
    first, second = (t.model.state_dict() for t in stacked)
    assert any(not torch.equal(first[k], second[k]) for k in first)


# a pre-activation block's first BN sees a sum and stays unfolded, so the attack must put it in
# eval mode as alone; 18 layers of rounding through PGD's sign move a few weights by ~3e-4
DEEP = {"rtol": 1e-3, "atol": 1e-3}


@pytest.mark.parametrize(
    ("preset", "extra", "tolerance"),
    [
        ("digits-srat-ldam", (), TIGHT),
        ("digits-ce", ("method=AT-BSL", "attack.loss=training"), TIGHT),
        ("digits-ce", ("method=GAIRAT", "train.epochs=3", "gair.begin_epoch=0"), TIGHT),
        ("digits-ce", ("attack.bn_mode=train",), TIGHT),
        ("digits-ce", ("train.fold_bn=false", "train.channels_last=off"), TIGHT),
        ("digits-ce", ("method=Natural",), TIGHT),
        ("digits-ce", ("method=AT-BSL",), TIGHT),
        ("digits-ce", ("method=CB-Focal",), TIGHT),
        ("digits-ce", ("model.arch=preact_resnet18", "data.n_max=20", "train.epochs=2"), DEEP),
    ],
)
def test_one_stacked_epoch_equals_each_run_alone(
    tmp_path: Path, preset: str, extra: tuple[str, ...], tolerance: dict[str, float]
) -> None:
    runs = seed_runs(tmp_path / "runs", preset, [0, 1], *extra)
    stacked, alone, plans, alone_plans = train_one_epoch_both_ways(runs, torch.device("cpu"))
    if preset == "digits-srat-ldam":  # DRCB's weights and the separation term both acted
        assert plans[0].class_w is not None and plans[0].lam > 0
    assert_trained_alike(stacked, alone, plans, alone_plans, tolerance)


@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_one_stacked_epoch_on_cuda_trains_as_each_run_alone(tmp_path: Path, precision: str) -> None:
    """On a GPU within rounding: fp32 tightly (cuDNN picks its kernels per shape), bf16
    loosely (a bf16 input gradient near 0 may change its sign, and PGD steps by the sign)."""
    runs = seed_runs(tmp_path / "runs", "digits-srat-ldam", [0, 1], f"train.precision={precision}")
    result = train_one_epoch_both_ways(runs, torch.device("cuda"))
    tolerance = {"rtol": 1e-3, "atol": 1e-3} if precision == "fp32" else {"rtol": 0.1, "atol": 0.05}
    assert_trained_alike(*result, tolerance)


@pytest.mark.parametrize(
    "where", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)], ids=["emulated", "cuda"]
)
def test_graphed_stacked_steps_replay_exactly_the_eager_stacked_steps(
    tmp_path: Path, where: str
) -> None:
    """The CUDA-graph bookkeeping of a stack, on the CPU stand-in (`tests/graph_emulation.py`)
    and on a GPU for real: 3 warm-ups, a capture, replays; a run leaving the stack makes a new
    graph of the others; every replay copies each run's batch in and adds its sums out, so
    training is the eager stacked step's (bit for bit emulated; to rounding on a GPU, with
    cuDNN's deterministic kernels both ways)."""
    runs = seed_runs(tmp_path / "runs", "digits-srat-ldam", [0, 1, 2], "train.precision=fp32")
    device = torch.device(where)
    backend: Any = EmulatedGraphs() if where == "cpu" else CUDA_GRAPHS
    torch.backends.cudnn.deterministic = where == "cuda"
    try:
        eager, graphed = ([Trainer(run, device) for run in runs] for _ in range(2))
        for trainer in (*eager, *graphed):
            trainer.begin_run(resume=False)
        eager_step = StackedTrainStep([t.train_step for t in eager])
        graphed_step = GraphedStackedStep(
            StackedTrainStep([t.train_step for t in graphed]),
            [t.train_step for t in graphed],
            backend=backend,
        )
        last = eager[0].config.train.epochs - 1
        plans = {"eager": [t.plan_epoch(last) for t in eager],
                 "graphed": [t.plan_epoch(last) for t in graphed]}  # fmt: skip
        batch = plans["eager"][0].batches[0]  # the same indices every step: one shape, one key

        def train(trainers: list[Trainer], step: Any, kind: str, members: list[int]) -> None:
            chosen = [trainers[k] for k in members]
            step(
                [t.train_step for t in chosen],
                [t.data.train_x[batch] for t in chosen],
                [t.data.train_y[batch] for t in chosen],
                class_w=plans[kind][0].class_w,
                use_gair=False,
                lam=plans[kind][0].lam,
                sums=[plans[kind][k].position.sums for k in members],
            )

        schedule = [[0, 1, 2]] * 6 + [[0, 2]] * 5  # run 1 leaves the stack after 6 steps
        for members in schedule:
            train(eager, eager_step, "eager", members)
            train(graphed, graphed_step, "graphed", members)
        if where == "cuda":
            torch.cuda.synchronize()
    finally:
        torch.backends.cudnn.deterministic = False
    assert graphed_step.graphs.failed is None and graphed_step.graphs.captured == 2
    if where == "cpu":
        assert backend.side_stream_runs == 6
        assert [graph.replays for graph in backend.graphs] == [3, 2]
    tolerance = {"rtol": 0.0, "atol": 0.0} if where == "cpu" else {"rtol": 1e-5, "atol": 1e-5}
    for e, g, pe, pg in zip(eager, graphed, plans["eager"], plans["graphed"], strict=True):
        torch.testing.assert_close(pe.position.sums, pg.position.sums, **tolerance)
        for (name, we), (_, wg) in zip(
            e.model.state_dict().items(), g.model.state_dict().items(), strict=True
        ):
            torch.testing.assert_close(wg, we, **tolerance, msg=lambda m, k=name: f"{k}: {m}")
        # each generator advanced by the same draws, replayed or not
        assert torch.equal(e.generator.get_state(), g.generator.get_state())


def test_stacked_runs_record_what_each_records_alone(tmp_path: Path) -> None:
    stacked = seed_runs(tmp_path / "stacked", "digits-srat-ldam", [0, 1])
    alone = seed_runs(tmp_path / "alone", "digits-srat-ldam", [0, 1])
    events: list[tuple[str, str]] = []
    finals = execute_stacked(
        stacked, on_event=lambda run, record: events.append((run.id, record["event"]))
    )
    for run in alone:
        execute(run)
    assert set(finals) == {run.id for run in stacked}
    for s, a in zip(stacked, alone, strict=True):
        assert s.exit_record()["status"] == "finished"
        assert s.state()["status"] == "finished"
        assert "stacked with 1 other run(s)" in s.log_path.read_text()
        assert_records_close(epoch_columns(s), epoch_columns(a))
        final = [r for r in s.metrics() if r["event"] == "final"][-1]
        alone_final = [r for r in a.metrics() if r["event"] == "final"][-1]
        assert final["rob_overall"] == pytest.approx(alone_final["rob_overall"], abs=0.5)
        assert s.checkpoint_path.is_file()
    assert events.count((stacked[0].id, "epoch")) == 3
    assert events.count((stacked[1].id, "final")) == 1


def test_a_stacked_checkpoint_resumes_alone(tmp_path: Path) -> None:
    """A stack stopped after epoch 1; one of its runs resumed alone ends as it would have."""
    stacked = seed_runs(tmp_path / "stacked", "digits-srat-ldam", [0, 1])
    (reference,) = seed_runs(tmp_path / "alone", "digits-srat-ldam", [1])

    def stop_after_first(run: RunDir, record: dict[str, Any]) -> None:
        if record["event"] == "epoch" and record["epoch"] == 1 and run.id == stacked[1].id:
            raise RunInterrupted("test")

    with pytest.raises(RunInterrupted):
        execute_stacked(stacked, on_event=stop_after_first)
    assert [run.exit_record()["status"] for run in stacked] == ["killed", "killed"]
    execute(stacked[1], resume=True)
    execute(reference)
    assert_records_close(epoch_columns(stacked[1]), epoch_columns(reference))


def test_a_run_that_diverges_leaves_the_stack_and_the_others_finish(tmp_path: Path) -> None:
    runs = seed_runs(tmp_path / "runs", "digits-ce", [0, 1, 2])
    trainers = [Trainer(run, torch.device("cpu")) for run in runs]
    begin = trainers[1].begin_run

    def begin_diverged(resume: bool) -> None:
        begin(resume)
        with torch.no_grad():
            next(trainers[1].model.parameters()).fill_(math.nan)

    trainers[1].begin_run = begin_diverged  # type: ignore[method-assign]
    failures: list[tuple[str, str]] = []
    finals = StackedTrainer(
        trainers, on_failure=lambda t, err: failures.append((t.run.id, str(err)))
    ).train()
    assert set(finals) == {runs[0].id, runs[2].id}
    assert [run_id for run_id, _ in failures] == [runs[1].id]
    assert "nan/inf in epoch 1" in failures[0][1]
    assert len(epoch_columns(runs[0])) == 3 and epoch_columns(runs[1]) == []


def test_what_does_not_stack_is_refused_with_its_reason(tmp_path: Path) -> None:
    def config(*overrides: str) -> Any:
        return prepare_from_env("digits-ce", (*STACKABLE, *overrides)).config

    assert stack_refusal(config()) is None
    assert "trades" in (stack_refusal(config("method=TRADES")) or "")
    assert "AWP" in (stack_refusal(config("method=AWP")) or "")
    assert "compile" in (stack_refusal(config("train.compile=true")) or "")
    with pytest.raises(SratError, match=r"train\.lr"):
        check_stackable([config("seed=0"), config("seed=1", "train.lr=0.05")])
    with pytest.raises(SratError, match="different seeds"):
        check_stackable([config("seed=3"), config("seed=3")])
    with pytest.raises(SratError, match="two runs or more"):
        check_stackable([config()])
    with pytest.raises(SratError, match="TRADES"):
        check_stackable([config("method=TRADES", "seed=0"), config("method=TRADES", "seed=1")])


@pytest.mark.cuda
def test_a_stacked_cuda_step_never_syncs_with_the_host(tmp_path: Path) -> None:
    runs = seed_runs(tmp_path / "runs", "digits-srat-ldam", [0, 1, 2])
    trainers = [Trainer(run, torch.device("cuda")) for run in runs]
    for trainer in trainers:
        trainer.begin_run(resume=False)
    step = StackedTrainStep([t.train_step for t in trainers])
    plans = [t.plan_epoch(t.config.train.epochs - 1) for t in trainers]

    def one_step() -> None:
        step(
            [t.train_step for t in trainers],
            [t.data.train_x[p.batches[0]] for t, p in zip(trainers, plans, strict=True)],
            [t.data.train_y[p.batches[0]] for t, p in zip(trainers, plans, strict=True)],
            class_w=plans[0].class_w,
            use_gair=plans[0].use_gair,
            lam=plans[0].lam,
            sums=[p.position.sums for p in plans],
        )

    one_step()  # warm-up: cuDNN autotuning may synchronise
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        one_step()
    finally:
        torch.cuda.set_sync_debug_mode("default")


_TIMING = ("time", "train_seconds", "eval_seconds")


def trained_records(run: RunDir) -> list[dict[str, Any]]:
    """The run's epoch and final records without their timings."""
    return [
        {k: v for k, v in record.items() if k not in _TIMING}
        for record in run.metrics()
        if record["event"] in ("epoch", "final")
    ]


@pytest.mark.parametrize("after", [3, 4], ids=["mid-epoch", "last-batch"])
def test_a_stack_stopped_on_request_resumes_to_the_uninterrupted_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, after: int
) -> None:
    """A checkpoint request (a Slurm job's warning signal) after stacked step `after` (of 2
    an epoch): every run checkpoints that one position, no end is recorded, and the stack
    resumed ends with the records, to the bit, of a stack never stopped."""
    straight = seed_runs(tmp_path / "straight", "digits-srat-ldam", [0, 1])
    execute_stacked(straight, heartbeat_s=None)
    stopped = seed_runs(tmp_path / "stopped", "digits-srat-ldam", [0, 1])
    real = stacked_trainer.graphed_stacked_step
    request = request_after_steps(monkeypatch, stacked_trainer, "graphed_stacked_step", after)
    with pytest.raises(RunPreempted) as stop:
        execute_stacked(stopped, heartbeat_s=None, checkpoint_request=request)
    assert (stop.value.epoch, stop.value.batch) == (1, after - 2)
    for run in stopped:
        assert run.exit_record() is None and run.state()["status"] == "running"
        assert "preempted" in run.log_path.read_text()
        assert torch.load(run.checkpoint_path, weights_only=True)["batch"] == after - 2
    monkeypatch.setattr(stacked_trainer, "graphed_stacked_step", real)  # no request now
    execute_stacked(stopped, resume=True, heartbeat_s=None)
    for s, t in zip(straight, stopped, strict=True):
        assert trained_records(t) == trained_records(s)
        assert t.exit_record()["status"] == "finished"


def test_a_stack_stopped_after_an_epoch_record_resumes_from_that_epoch(tmp_path: Path) -> None:
    runs = seed_runs(tmp_path / "runs", "digits-srat-ldam", [0, 1], "train.checkpoint_every=5")
    request = threading.Event()

    def after_first_epoch(run: RunDir, record: dict[str, Any]) -> None:
        if record["event"] == "epoch" and record["epoch"] == 1 and run.id == runs[0].id:
            request.set()  # the second run closes its epoch before the stack stops

    with pytest.raises(RunPreempted) as stop:
        execute_stacked(runs, on_event=after_first_epoch, checkpoint_request=request)
    assert (stop.value.epoch, stop.value.batch) == (1, 0)
    for run in runs:  # checkpoint_every=5 saved none after epoch 1: the request did
        assert torch.load(run.checkpoint_path, weights_only=True)["epoch"] == 1
        assert [r["epoch"] for r in run.metrics() if r["event"] == "epoch"] == [1]


def test_a_stack_whose_checkpoints_differ_ends_failed_and_each_resumes_alone(
    tmp_path: Path,
) -> None:
    """`srat runs resume ID --stack` after one run trained on alone: the stack cannot resume
    in lockstep, so both end `failed` with the reason, their checkpoints as they were."""
    runs = seed_runs(tmp_path / "runs", "digits-srat-ldam", [0, 1])

    def stop_after(epoch: int, who: list[str]) -> Any:
        def handler(run: RunDir, record: dict[str, Any]) -> None:
            if record["event"] == "epoch" and record["epoch"] == epoch and run.id in who:
                raise RunInterrupted("test")

        return handler

    with pytest.raises(RunInterrupted):
        execute_stacked(runs, on_event=stop_after(1, [runs[1].id]))
    with pytest.raises(RunInterrupted):  # the second run alone, one epoch further
        execute(runs[1], resume=True, on_event=lambda r: stop_after(2, [runs[1].id])(runs[1], r))
    with pytest.raises(SratError, match="resume from different points"):
        execute_stacked(runs, resume=True)
    for run in runs:
        assert run.exit_record()["status"] == "failed"
        assert "resume them one by one" in run.exit_record()["error"]
    execute(runs[0], resume=True)  # and alone it does
    assert runs[0].exit_record()["status"] == "finished"
