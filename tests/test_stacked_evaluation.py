"""A stack's evaluation in one stacked pass counts what each run's own evaluation counts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from fake_runs import TINY_RUN, prepare_from_env
from graph_emulation import EmulatedGraphs

from srat_engine.config.prepare import create_run
from srat_engine.evaluation.classwise import (
    AttackParams,
    count_correct,
    evaluation_mode,
    feature_hits,
    pgd_hits,
)
from srat_engine.evaluation.stacked import StackedEvaluation
from srat_engine.graph_capture import CUDA_GRAPHS
from srat_engine.tf32 import strict_fp32
from srat_engine.training.stacked_trainer import StackEvaluator
from srat_engine.training.trainer import Trainer

ATTACK = AttackParams(eps=8 / 255, step_size=2 / 255, steps=3)


# the same reduction order alone and stacked, whatever the box's core count
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def trainers(root: Path, seeds: list[int], *extra: str, device: str = "cpu") -> list[Trainer]:
    """Trainers of digits-ce for `seeds`, each trained alone for a few epochs: models that
    classify above chance, with BatchNorm statistics of their own."""
    built = []
    for seed in seeds:
        prepared = prepare_from_env(
            "digits-ce",
            (
                *TINY_RUN,
                "method=Natural",
                "train.batch_size=32",
                "train.epochs=6",
                *extra,
                f"seed={seed}",
            ),
        )
        trainer = Trainer(create_run(prepared, root=root), torch.device(device))
        trainer.begin_run(resume=False)
        for epoch in range(trainer.config.train.epochs):
            plan = trainer.plan_epoch(epoch)
            for index in range(len(plan.batches)):
                trainer.train_batch(plan, index)
            trainer.end_epoch(plan)
        built.append(trainer)
    return built


def evaluation_of(runs: list[Trainer], **options: Any) -> StackedEvaluation:
    return StackedEvaluation(
        [t.eval_model for t in runs], runs[0].device, attack=ATTACK, clip=runs[0].data.clip,
        channels_last=runs[0].train_step.channels_last, **options,
    )  # fmt: skip


def alone(trainer: Trainer, robust: bool, features: list[torch.Tensor] | None = None) -> Any:
    """The run's own count, as `Trainer._evaluate` makes it."""
    data, model = trainer.data, trainer.eval_model
    x, y = (data.robust_x, data.robust_y) if robust else (data.test_x, data.test_y)
    hits = (
        pgd_hits(model, ATTACK, data.clip)
        if robust
        else feature_hits(model, [] if features is None else features)
    )
    with strict_fp32(), evaluation_mode(model):
        return count_correct(
            x, y, trainer.resolved.num_classes, batch_size=64, hits=hits,
            seed=trainer.evaluation_seed,
        )  # fmt: skip


def stacked(
    evaluation: StackedEvaluation, runs: list[Trainer], members: list[int], robust: bool,
    features: list[list[torch.Tensor]] | None = None,
) -> torch.Tensor:  # fmt: skip
    data = runs[0].data
    x, y = (data.robust_x, data.robust_y) if robust else (data.test_x, data.test_y)
    with strict_fp32():
        return evaluation.count(
            members, x, y, runs[0].resolved.num_classes, batch_size=64, robust=robust,
            seeds=[runs[k].evaluation_seed for k in members], features_into=features,
        )  # fmt: skip


@pytest.mark.parametrize(
    "extra",
    [(), ("eval.posthoc_tau=1.0",), ("train.channels_last=off",)],
    ids=["plain", "posthoc", "contiguous"],
)
def test_stacked_counts_are_each_runs_own(tmp_path: Path, extra: tuple[str, ...]) -> None:
    runs = trainers(tmp_path, [0, 1, 2], *extra)
    evaluation = evaluation_of(runs)
    features: list[list[torch.Tensor]] = [[] for _ in runs]
    clean = stacked(evaluation, runs, [0, 1, 2], robust=False, features=features)
    robust = stacked(evaluation, runs, [0, 1, 2], robust=True)
    for k, trainer in enumerate(runs):
        own_features: list[torch.Tensor] = []
        assert torch.equal(clean[k], alone(trainer, robust=False, features=own_features))
        assert torch.equal(robust[k], alone(trainer, robust=True))
        torch.testing.assert_close(torch.cat(features[k]), torch.cat(own_features))
    # the attack did bite, and the runs differ: neither the clean pass nor copies of one run
    data = runs[0].data
    with strict_fp32():
        clean_subset = evaluation.count(
            [0, 1, 2], data.robust_x, data.robust_y, 10, batch_size=64, robust=False,
            seeds=[0, 0, 0],
        )  # fmt: skip
    assert robust.sum() < clean_subset.sum()
    assert not torch.equal(clean[0], clean[1])


def test_a_subset_of_the_stack_counts_as_alone_and_draws_its_own_starts(tmp_path: Path) -> None:
    """After a run leaves, the others' counts are still their own; an evaluation re-seeds each
    run's generator, so evaluating twice counts the same."""
    runs = trainers(tmp_path, [0, 1, 2])
    evaluation = evaluation_of(runs)
    first = stacked(evaluation, runs, [0, 2], robust=True)
    again = stacked(evaluation, runs, [0, 2], robust=True)
    assert torch.equal(first, again)
    assert torch.equal(first[0], alone(runs[0], robust=True))
    assert torch.equal(first[1], alone(runs[2], robust=True))
    with pytest.raises(ValueError, match="2 runs but 1 seeds"):
        evaluation.count([0, 1], runs[0].data.test_x, runs[0].data.test_y, 10,
                         batch_size=64, robust=False, seeds=[0])  # fmt: skip


@pytest.mark.parametrize(
    "where", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)], ids=["emulated", "cuda"]
)
def test_graphed_stacked_attacks_replay_the_eager_ones(tmp_path: Path, where: str) -> None:
    """One warm-up, a capture, replays per batch shape and set of runs (the last partial batch
    is a shape of its own; a run leaving makes new graphs); the counts are the eager pass's
    (bit for bit emulated, to rounding on a GPU with cuDNN's deterministic kernels)."""
    runs = trainers(tmp_path, [0, 1, 2], device=where)
    backend: Any = EmulatedGraphs() if where == "cpu" else CUDA_GRAPHS
    eager = evaluation_of(runs, capture=False)
    graphed = evaluation_of(runs, backend=backend)
    torch.backends.cudnn.deterministic = where == "cuda"
    try:
        for members in ([0, 1, 2],) * 3 + ([0, 2],) * 2:
            expected = stacked(eager, runs, members, robust=True)
            counted = stacked(graphed, runs, members, robust=True)
            if where == "cpu":
                assert torch.equal(counted, expected)
            else:
                assert (counted - expected).abs().sum() <= 2
    finally:
        torch.backends.cudnn.deterministic = False
    batches = len(runs[0].data.robust_y) // 64 + 1  # 50 robust examples: 1 (partial) batch
    assert graphed.graphs.failed is None and graphed.graphs.captured == 2 * batches
    if where == "cpu":
        assert backend.side_stream_runs == 2 * batches
        assert [graph.replays for graph in backend.graphs] == [2, 1]


@pytest.mark.cuda
def test_a_stacked_cuda_evaluation_never_syncs_with_the_host(tmp_path: Path) -> None:
    runs = trainers(tmp_path, [0, 1], device="cuda")
    evaluation = evaluation_of(runs)
    for _ in range(2):  # the warm-up, then the capture (which synchronises)
        stacked(evaluation, runs, [0, 1], robust=True)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        stacked(evaluation, runs, [0, 1], robust=True)
        stacked(evaluation, runs, [0, 1], robust=False)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_a_stacks_evaluations_are_what_each_run_evaluates_alone(tmp_path: Path) -> None:
    """`StackEvaluator` against each run's own `evaluate` (per epoch and final), with the
    config's attack, posthoc adjustment and `eval.every`: the passes due, their results."""
    runs = trainers(tmp_path, [0, 1], "eval.posthoc_tau=0.5", "eval.every=2")
    evaluate = StackEvaluator(runs)
    for epoch in (0, 1, None):  # not due, due (clean and robust), final
        together = evaluate(runs, epoch)
        for trainer in runs:
            own = trainer.evaluate(epoch)
            got = together[trainer.run.id]
            for mine, theirs in ((got.std, own.std), (got.rob, own.rob)):
                assert (mine is None) == (theirs is None) == (epoch == 0)
                if mine is None or theirs is None:
                    continue
                separability = mine.pop("separability", None)
                assert separability == pytest.approx(theirs.pop("separability", None), rel=1e-5)
                assert mine == theirs
    assert {t.run.id for t in runs} == set(together)
