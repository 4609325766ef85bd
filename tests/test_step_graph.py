"""CUDA-graph replay of training steps (srat_engine/training/graphs.py) against the eager step.

The equivalence tests need a CUDA device (they run on the GPU machine, never in CI); the
pass-through behaviour off CUDA is checked everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
from graph_emulation import EmulatedGraphs

from srat_engine.bench.benchmark import bench_config, bench_engine_step, build_pair
from srat_engine.training.graphs import GraphedTrainStep, graphed_step, uses_cuda_graphs
from srat_engine.training.step import TrainStep

BATCH, STEPS = 8, 3
CUDA = pytest.mark.cuda


def _step(device: torch.device, overrides: Sequence[str] = ()) -> TrainStep:
    model, _, sgd = build_pair("small_cnn", device, seed=0)
    config = bench_config("small_cnn", BATCH, STEPS, overrides)
    return bench_engine_step(model, sgd, config, torch.Generator(device=device).manual_seed(3))


def _batches(device: torch.device, count: int, n: int = BATCH) -> list[tuple[torch.Tensor, ...]]:
    g = torch.Generator(device=device).manual_seed(4)
    return [
        (
            torch.randint(0, 256, (n, 3, 32, 32), generator=g, device=device, dtype=torch.uint8),
            torch.randint(0, 10, (n,), generator=g, device=device),
        )
        for _ in range(count)
    ]


def test_off_cuda_the_step_is_used_as_it_is() -> None:
    cpu = torch.device("cpu")
    step = _step(cpu)
    assert graphed_step(step) is step
    wrapper = GraphedTrainStep(_step(cpu))
    plain = _step(cpu)
    for x, y in _batches(cpu, 2):
        wrapper(x, y)
        plain(x, y)
    assert wrapper.graphs.captured == 0 and wrapper.graphs.failed is None
    for name, value in plain.model.state_dict().items():
        assert torch.equal(value, wrapper.step.model.state_dict()[name]), name


def test_emulated_graphs_train_exactly_like_the_eager_step() -> None:
    """The CUDA test's schedule on the CPU stand-in: 3 warm-up steps, a capture, replays, a
    partial batch and a learning-rate change (new keys, captured anew); every replay copies the
    batch and class weights in and adds the sums out, so training is the eager step's, exactly."""
    cpu = torch.device("cpu")
    eager = _step(cpu)
    backend = EmulatedGraphs()
    graphed = GraphedTrainStep(_step(cpu), backend=backend)
    class_w = torch.linspace(0.5, 2.0, 10)
    sums = {"eager": torch.zeros(4), "graphed": torch.zeros(4)}
    schedule = [(b, 0.1) for b in _batches(cpu, 6)]
    schedule += [(b, 0.1) for b in _batches(cpu, 4, n=5)]
    schedule += [(b, 0.01) for b in _batches(cpu, 5)]
    for (x, y), lr in schedule:
        for step in (eager, graphed.step):
            for group in step.optimizer.param_groups:
                group["lr"] = lr
        eager(x, y, class_w=class_w, lam=0.5, sums=sums["eager"])
        graphed(x, y, class_w=class_w, lam=0.5, sums=sums["graphed"])
    # keys: (batch 8, lr 0.1) captured at step 4, (5, 0.1) at its 4th, (8, 0.01) at its 4th
    assert graphed.graphs.captured == 3 and backend.side_stream_runs == 9
    assert [graph.replays for graph in backend.graphs] == [3, 1, 2]
    assert torch.equal(sums["eager"], sums["graphed"])
    reference = eager.model.state_dict()
    for name, value in graphed.step.model.state_dict().items():
        assert torch.equal(value, reference[name]), name
    assert torch.equal(eager.generator.get_state(), graphed.step.generator.get_state())


def test_cuda_graphs_field_defaults_on_and_can_be_turned_off() -> None:
    assert bench_config("small_cnn", 8, 2).train.cuda_graphs is True
    assert bench_config("small_cnn", 8, 2, ("train.cuda_graphs=false",)).train.cuda_graphs is False


@pytest.mark.parametrize(
    "compile_mode, device, expected",
    [
        ("off", "cuda", True),
        ("default", "cuda", True),  # inductor's kernels are captured like eager ones
        ("max-autotune-no-cudagraphs", "cuda", True),
        ("reduce-overhead", "cuda", False),  # these two capture graphs themselves
        ("max-autotune", "cuda", False),
        ("off", "cpu", False),
        ("default", "cpu", False),
    ],
)
def test_which_runs_replay_cuda_graphs(compile_mode: str, device: str, expected: bool) -> None:
    train = bench_config("small_cnn", 8, 2, (f"train.compile={compile_mode}",)).train
    assert uses_cuda_graphs(train, torch.device(device)) is expected
    switched_off = bench_config(
        "small_cnn", 8, 2, (f"train.compile={compile_mode}", "train.cuda_graphs=false")
    ).train
    assert uses_cuda_graphs(switched_off, torch.device(device)) is False


@CUDA
@pytest.mark.parametrize(
    "overrides, weighted",
    [
        (("train.precision=fp32",), False),
        (("train.precision=bf16",), True),
        # inductor kernels inside the captured step (both sides compiled: same kernels)
        (("train.precision=bf16", "train.compile=default"), True),
    ],
)
def test_cuda_graph_replays_train_exactly_like_the_eager_step(
    overrides: tuple[str, ...], weighted: bool
) -> None:
    device = torch.device("cuda")
    torch._dynamo.reset()
    torch.backends.cudnn.deterministic = True  # same kernels both ways, so bitwise comparable
    try:
        eager = _step(device, overrides)
        graphed = GraphedTrainStep(_step(device, overrides))
        class_w = torch.linspace(0.5, 2.0, 10, device=device) if weighted else None
        lam = 0.5 if weighted else 0.0
        sums = {"eager": torch.zeros(4, device=device), "graphed": torch.zeros(4, device=device)}
        # 6 steps at lr 0.1 (3 warm-up, capture + replay, 2 replays), a partial batch, then a
        # learning-rate change: a second key, warmed up and captured anew
        schedule = [(b, 0.1) for b in _batches(device, 6)]
        schedule += [(b, 0.1) for b in _batches(device, 1, n=5)]
        schedule += [(b, 0.01) for b in _batches(device, 5)]
        for (x, y), lr in schedule:
            for step in (eager, graphed.step):
                for group in step.optimizer.param_groups:
                    group["lr"] = lr
            eager(x, y, class_w=class_w, lam=lam, sums=sums["eager"])
            graphed(x, y, class_w=class_w, lam=lam, sums=sums["graphed"])
        torch.cuda.synchronize()
    finally:
        torch.backends.cudnn.deterministic = False
    assert graphed.graphs.failed is None
    assert graphed.graphs.captured == 2
    assert torch.allclose(sums["eager"], sums["graphed"], rtol=1e-5, atol=1e-5)
    reference = eager.model.state_dict()
    for name, value in graphed.step.model.state_dict().items():
        assert torch.allclose(value.float(), reference[name].float(), rtol=1e-5, atol=1e-6), name
    # the generator advanced by the same draws: the next random start is the same
    assert torch.equal(eager.generator.get_state(), graphed.step.generator.get_state())
