"""The evaluation attack replayed as CUDA graphs (srat_engine/evaluation/graphs.py) and the one
capture rule it shares with training (srat_engine/graph_capture.py).

Off CUDA a graphed evaluation is the eager one, checked everywhere; the replay-equals-eager
tests need a CUDA device (`cuda` marker: benchmarks/gpu_check.py runs them on the GPU machine).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from graph_emulation import EmulatedGraphs

from srat_engine.bench.benchmark import bench_config
from srat_engine.data.resident import to_inputs
from srat_engine.evaluation.classwise import (
    AttackParams,
    BatchHits,
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


@dataclass
class Case:
    """A model, 20 examples labelled with the model's own clean answers, and an attack that
    breaks some of them: the counts depend on every input, label and random start, so a
    replay that read a stale batch or an old draw would count differently."""

    model: torch.nn.Module
    x: torch.Tensor
    y: torch.Tensor
    attack: AttackParams
    clip: tuple[float, float] | None

    def hits(self) -> BatchHits:
        return pgd_hits(self.model, self.attack, self.clip)


def _case(device: torch.device, arch: str = "linear") -> Case:
    """arch "linear": 16-d vectors, whose answers vary from input to input (7 of 20 survive
    eps 0.2); "small_cnn": CIFAR-shaped images, cuDNN's kernels (an untrained CNN gives every
    noise image one answer: its counts say little, its capture says much on a GPU)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    if arch == "linear":
        model = build_model("linear", 10, (16,)).to(device)
        x = torch.randn(20, 16, generator=g).to(device)
        attack, clip = AttackParams(eps=0.2, step_size=0.1, steps=3), None
    else:
        model = build_model("small_cnn", 10, (3, 32, 32)).to(device)
        x = torch.randint(0, 256, (20, 3, 32, 32), generator=g, dtype=torch.uint8).to(device)
        attack, clip = ATTACK, (0.0, 1.0)
    with torch.no_grad(), evaluation_mode(model):
        y = model(to_inputs(x)).argmax(dim=1)
    return Case(model, x, y, attack, clip)


def _count(case: Case, hits: BatchHits, seed: int) -> list[int]:
    generator = hits.generator if isinstance(hits, GraphedHits) else None
    with evaluation_mode(case.model):
        return count_correct(
            case.x, case.y, 10, batch_size=8, hits=hits, seed=seed, generator=generator
        ).tolist()


def test_off_cuda_a_graphed_evaluation_is_the_eager_one() -> None:
    case = _case(CPU)
    graphed = GraphedHits(case.hits(), CPU)
    counts = []
    for seed in (3, 3, 4):  # the same seed twice: the generator is re-seeded, not continued
        expected = classwise_correct(
            case.model, case.x, case.y, 10, batch_size=8, attack=case.attack, clip=None,
            seed=seed,
        )  # fmt: skip
        counts.append(_count(case, graphed, seed))
        assert counts[-1] == expected.tolist()
    assert 0 < sum(counts[0]) < len(case.y)  # the attack broke some, not all
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
    case = _case(CPU)
    clean = classwise_correct(case.model, case.x, case.y, 10, batch_size=8, attack=None)
    assert int(clean.sum()) == len(case.y)  # labelled with its own answers
    for no_attack in (AttackParams(0.0, 0.1, 3), AttackParams(0.2, 0.1, 0)):
        assert _count(case, pgd_hits(case.model, no_attack, None), seed=0) == clean.tolist()
    with pytest.raises(ValueError, match="clean pass"):
        classwise_correct(
            case.model, case.x, case.y, 10, batch_size=8, attack=ATTACK, features_into=[]
        )


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


def _weights_changed(model: torch.nn.Module, round_: int) -> None:
    """Move every parameter by seeded noise, in place, as training moves them between two
    evaluations (a uniform rescaling would leave a linear model's answers as they were)."""
    g = torch.Generator().manual_seed(round_)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.3 * torch.randn(param.shape, generator=g).to(param.device))


def test_emulated_graphs_evaluate_exactly_like_eager() -> None:
    """Four evaluations of 20 examples at batch 8 (8, 8, 4): each shape's first batch is the
    warm-up, its next is captured and replayed, later ones replay; inputs are copied in and
    hits read out at every replay, so the counts are the eager ones as the weights change."""
    case = _case(CPU)
    backend = EmulatedGraphs()
    graphed = GraphedHits(case.hits(), CPU, backend=backend)
    for round_ in range(4):
        _weights_changed(case.model, round_)
        eager = _count(case, case.hits(), seed=round_)
        assert _count(case, graphed, seed=round_) == eager, round_
    assert graphed.graphs.captured == 2 and graphed.graphs.failed is None
    assert backend.side_stream_runs == 2  # one warm-up batch per shape
    # batch 8: captured at the 2nd batch, then 2 a round; batch 4: captured in round 2
    assert [graph.replays for graph in backend.graphs] == [7, 3]


def test_emulated_graphs_dropped_for_room_are_captured_again() -> None:
    case = _case(CPU)
    backend = EmulatedGraphs()
    graphed = GraphedHits(case.hits(), CPU, keep=1, backend=backend)
    for round_ in range(3):
        _weights_changed(case.model, round_)
        eager = _count(case, case.hits(), seed=round_)
        assert _count(case, graphed, seed=round_) == eager, round_
    # one graph at a time: round 0 captures batch 8; round 1 replays it and captures batch 4
    # (dropping 8); round 2 captures 8 again (dropping 4), then 4 again
    assert graphed.graphs.captured == 4 and len(backend.graphs) == 4
    assert [graph.replays for graph in backend.graphs] == [3, 1, 2, 1]


def test_a_failed_capture_says_so_once_and_evaluates_eagerly() -> None:
    case = _case(CPU)
    said: list[str] = []
    backend = EmulatedGraphs(fail="operation not permitted when stream is capturing")
    graphed = GraphedHits(case.hits(), CPU, on_fallback=said.append, backend=backend)
    for seed in (0, 1):
        eager = _count(case, case.hits(), seed=seed)
        assert _count(case, graphed, seed=seed) == eager
    assert said == [
        "CUDA graph capture failed, evaluation attacks stay eager: "
        "RuntimeError: operation not permitted when stream is capturing"
    ]
    assert graphed.graphs.captured == 0 and not graphed.graphs.enabled


def test_eval_cuda_graphs_defaults_on_and_can_be_turned_off() -> None:
    assert bench_config("small_cnn", 8, 2).eval.cuda_graphs is True
    assert bench_config("small_cnn", 8, 2, ("eval.cuda_graphs=false",)).eval.cuda_graphs is False


@pytest.mark.cuda
@pytest.mark.parametrize("arch", ["linear", "small_cnn"])
def test_cuda_graphed_evaluation_counts_exactly_like_the_eager_one(arch: str) -> None:
    """Four evaluations of 20 examples at batch 8 (two full batches and a partial one each):
    each shape's first batch is eager (warm-up), its next is captured, the rest replay; the
    weights change between evaluations (as training changes them), and every count is the
    eager one, random starts included (the generator registered with the graphs)."""
    device = torch.device("cuda")
    torch.backends.cudnn.deterministic = True  # the same kernels both ways: bitwise comparable
    try:
        case = _case(device, arch)
        graphed = GraphedHits(case.hits(), device)
        for round_ in range(4):
            _weights_changed(case.model, round_)
            eager = _count(case, case.hits(), seed=round_)
            assert _count(case, graphed, seed=round_) == eager, round_
    finally:
        torch.backends.cudnn.deterministic = False
    assert graphed.graphs.failed is None
    assert graphed.graphs.captured == 2  # the full batch of 8 and the last one of 4


@pytest.mark.cuda
def test_cuda_graphed_evaluation_waits_for_the_device_only_at_the_end() -> None:
    device = torch.device("cuda")
    case = _case(device, "small_cnn")
    graphed = GraphedHits(case.hits(), device)
    for seed in (0, 1):  # warm-up, then capture
        _count(case, graphed, seed)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with evaluation_mode(case.model):
            correct = count_correct(
                case.x, case.y, 10, batch_size=8, hits=graphed, seed=2,
                generator=graphed.generator,
            )  # fmt: skip
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert graphed.graphs.captured == 2 and int(correct.sum()) <= len(case.y)
