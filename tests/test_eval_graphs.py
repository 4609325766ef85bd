"""The evaluation attack replayed as CUDA graphs (srat_engine/evaluation/graphs.py) and the one
capture rule it shares with training (srat_engine/graph_capture.py).

Off CUDA a graphed evaluation is the eager one, checked everywhere; the replay-equals-eager
tests need a CUDA device (`cuda` marker: benchmarks/gpu_check.py runs them on the GPU machine).
"""

from __future__ import annotations

import pytest
import torch

from srat_engine.bench.benchmark import bench_config
from srat_engine.evaluation.classwise import (
    AttackParams,
    classwise_correct,
    count_correct,
    evaluation_mode,
    pgd_hits,
)
from srat_engine.evaluation.graphs import GraphedHits
from srat_engine.graph_capture import GraphCache
from srat_engine.models import build_model

CPU = torch.device("cpu")
ATTACK = AttackParams(eps=8 / 255, step_size=2 / 255, steps=3)


def _model_and_data(
    device: torch.device, n: int = 20
) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = build_model("small_cnn", 10, (3, 32, 32)).to(device)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8).to(device)
    y = torch.randint(0, 10, (n,), generator=g).to(device)
    return model, x, y


def _count(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, hits: object, seed: int
) -> list[int]:
    generator = hits.generator if isinstance(hits, GraphedHits) else None
    with evaluation_mode(model):
        return count_correct(
            x, y, 10, batch_size=8, hits=hits, seed=seed, generator=generator
        ).tolist()


def test_off_cuda_a_graphed_evaluation_is_the_eager_one() -> None:
    model, x, y = _model_and_data(CPU)
    graphed = GraphedHits(pgd_hits(model, ATTACK), CPU)
    for seed in (3, 3, 4):  # the same seed twice: the generator is re-seeded, not continued
        expected = classwise_correct(model, x, y, 10, batch_size=8, attack=ATTACK, seed=seed)
        assert _count(model, x, y, graphed, seed) == expected.tolist()
    assert graphed.graphs.captured == 0 and graphed.graphs.failed is None


def test_count_correct_reseeds_the_generator_it_is_given() -> None:
    """A generator handed in (a graphed attack's) draws what a new one of that seed draws,
    whatever it drew before: each evaluation's random starts depend on its seed alone."""

    def coin(xb: torch.Tensor, yb: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return torch.rand(len(yb), generator=generator) < 0.5  # hits read off the draws alone

    y = torch.arange(40) % 4
    x = torch.zeros(40, 2)
    used = torch.Generator().manual_seed(99)
    torch.rand(1000, generator=used)
    fresh = count_correct(x, y, 4, batch_size=8, hits=coin, seed=5)
    reused = count_correct(x, y, 4, batch_size=8, hits=coin, seed=5, generator=used)
    other = count_correct(x, y, 4, batch_size=8, hits=coin, seed=6, generator=used)
    expected = torch.zeros(4, dtype=torch.long)
    draws = torch.Generator().manual_seed(5)
    for start in range(0, 40, 8):
        expected.index_add_(0, y[start : start + 8], (torch.rand(8, generator=draws) < 0.5).long())
    assert fresh.tolist() == reused.tolist() == expected.tolist()
    assert other.tolist() != fresh.tolist()


def test_a_foreign_generator_runs_the_attack_itself() -> None:
    calls: list[torch.Generator] = []

    def hits(xb: torch.Tensor, yb: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        calls.append(generator)
        return yb == 0

    graphed = GraphedHits(hits, CPU)
    own, foreign = graphed.generator, torch.Generator()
    y = torch.tensor([0, 1, 0])
    assert graphed(torch.zeros(3, 2), y, foreign).tolist() == [True, False, True]
    assert graphed(torch.zeros(3, 2), y, own).tolist() == [True, False, True]
    assert calls == [foreign, own]


def test_pgd_hits_without_a_budget_is_the_clean_prediction() -> None:
    model, x, y = _model_and_data(CPU)
    clean = classwise_correct(model, x, y, 10, batch_size=8, attack=None)
    for no_attack in (AttackParams(0.0, 2 / 255, 3), AttackParams(8 / 255, 2 / 255, 0)):
        assert torch.equal(
            classwise_correct(model, x, y, 10, batch_size=8, attack=no_attack), clean
        )
    with pytest.raises(ValueError, match="clean pass"):
        classwise_correct(model, x, y, 10, batch_size=8, attack=ATTACK, features_into=[])


def test_graph_cache_runs_eagerly_when_switched_off_or_off_cuda() -> None:
    ran: list[str] = []
    for device, capture in ((CPU, True), (torch.device("cuda"), False)):
        cache: GraphCache[None] = GraphCache(
            device, None, warmup=0, keep=1, what="tests", capture=capture
        )
        replay = cache.prepare(
            "key", lambda: ran.append("eager"), build=lambda: None, body=lambda _: None
        )
        assert replay is None and not cache.enabled and cache.captured == 0
    assert ran == ["eager", "eager"]


def test_eval_cuda_graphs_defaults_on_and_can_be_turned_off() -> None:
    assert bench_config("small_cnn", 8, 2).eval.cuda_graphs is True
    assert bench_config("small_cnn", 8, 2, ("eval.cuda_graphs=false",)).eval.cuda_graphs is False


@pytest.mark.cuda
def test_cuda_graphed_evaluation_counts_exactly_like_the_eager_one() -> None:
    """Four evaluations of 20 examples at batch 8 (two full batches and a partial one each):
    each shape's first batch is eager (warm-up), its next is captured, the rest replay; the
    weights change between evaluations (as training changes them), and every count is the
    eager one."""
    device = torch.device("cuda")
    torch.backends.cudnn.deterministic = True  # the same kernels both ways: bitwise comparable
    try:
        model, x, y = _model_and_data(device)
        graphed = GraphedHits(pgd_hits(model, ATTACK), device)
        for round_ in range(4):
            with torch.no_grad():
                for param in model.parameters():
                    param.mul_(1.0 + 0.05 * round_)
            eager = _count(model, x, y, pgd_hits(model, ATTACK), seed=round_)
            assert _count(model, x, y, graphed, seed=round_) == eager, round_
    finally:
        torch.backends.cudnn.deterministic = False
    assert graphed.graphs.failed is None
    assert graphed.graphs.captured == 2  # the full batch of 8 and the last one of 4


@pytest.mark.cuda
def test_cuda_graphed_evaluation_waits_for_the_device_only_at_the_end() -> None:
    device = torch.device("cuda")
    model, x, y = _model_and_data(device)
    graphed = GraphedHits(pgd_hits(model, ATTACK), device)
    for seed in (0, 1):  # warm-up, then capture
        _count(model, x, y, graphed, seed)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with evaluation_mode(model):
            correct = count_correct(
                x, y, 10, batch_size=8, hits=graphed, seed=2, generator=graphed.generator
            )
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert graphed.graphs.captured == 2 and int(correct.sum()) <= len(y)
