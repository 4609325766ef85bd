"""The training fast path against the way public code does it: same maths, other speed.

The engine step (`TrainStep`: device-side crop/flip, input-only attack gradients with frozen
parameters, BN folded into the convolutions for the eval-mode attack, channels_last) and the
reference step (`srat_engine.bench.reference`: `loss.backward()` through the whole model, NCHW,
fp32) are
fed the same images, crops and random start, then compared. Per-sample independence of the
crop/flip itself is covered by tests/test_augment.py; here only its use by the step is checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import torch
from torch import nn

from srat_engine.bench.benchmark import bench_config, bench_engine_step, build_pair
from srat_engine.bench.reference import EPS, PAD, STEP_SIZE, reference_attack, reference_step
from srat_engine.data.augment import random_crop_flip
from srat_engine.data.resident import to_inputs
from srat_engine.errors import SratError
from srat_engine.evaluation.classwise import classwise_correct
from srat_engine.models import build_model
from srat_engine.models.fold import BatchNormFoldedView
from srat_engine.models.pool import GlobalAvgPool2d
from srat_engine.tf32 import tf32_allowed, tf32_flags
from srat_engine.training.step import TrainStep, resolve_precision

CPU = torch.device("cpu")
BATCH, STEPS = 8, 10
EXACT = ("train.fold_bn=false", "train.channels_last=off")  # the step without layout changes


def _setup(
    overrides: Sequence[str] = (), arch: str = "small_cnn"
) -> tuple[TrainStep, nn.Module, torch.optim.Optimizer, torch.Tensor, torch.Tensor]:
    """An engine step and a reference model with identical weights and BN statistics."""
    model, reference, sgd = build_pair(arch, CPU, seed=0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # move the BN running statistics away from (0, 1), identically
        warm = torch.rand(32, 3, 32, 32, generator=g)
        model.train()(warm)
        reference.train()(warm)
    config = bench_config(arch, BATCH, STEPS, overrides)
    step = bench_engine_step(model, sgd, config, torch.Generator().manual_seed(2))
    x = torch.randint(0, 256, (BATCH, 3, 32, 32), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (BATCH,), generator=g)
    return step, reference, sgd(reference), x, y


def _same_draws(step: TrainStep, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The augmented batch and random start the step is about to draw, from a copy of its RNG."""
    g = torch.Generator().set_state(step.generator.get_state())
    xb = to_inputs(random_crop_flip(x, pad=PAD, flip=True, generator=g))
    start = (2 * torch.rand(xb.shape, generator=g) - 1) * EPS
    return xb, start


def _flipped_fraction(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs() > 1e-6).float().mean().item()


def test_attack_matches_the_reference_exactly_without_layout_changes() -> None:
    step, reference, _, x, y = _setup(EXACT)
    xb, start = _same_draws(step, x)
    engine = step.attack(step.inputs(x), y).x_adv
    ref = reference_attack(reference, xb, y, eps=EPS, step_size=STEP_SIZE, steps=STEPS, start=start)
    assert (engine - xb).abs().max() <= EPS + 1e-6
    assert torch.allclose(engine, ref, atol=1e-6, rtol=0)


def test_fast_attack_matches_the_reference_up_to_sign_ties() -> None:
    """Folding BN and NHWC change the rounding (~1e-7), so a gradient entry within rounding of
    zero may take the other sign: a handful of pixels may differ, nothing more."""
    step, reference, _, x, y = _setup()
    assert step.folded is not None and step.channels_last
    xb, start = _same_draws(step, x)
    engine = step.attack(step.inputs(x), y).x_adv
    ref = reference_attack(reference, xb, y, eps=EPS, step_size=STEP_SIZE, steps=STEPS, start=start)
    assert (engine - xb).abs().max() <= EPS + 1e-6
    assert _flipped_fraction(engine, ref) < 0.01


@pytest.mark.parametrize(("overrides", "atol"), [(EXACT, 1e-6), ((), 1e-4)])
def test_one_step_gives_the_reference_parameter_update(
    overrides: Sequence[str], atol: float
) -> None:
    step, reference, ref_optimizer, x, y = _setup(overrides)
    xb, start = _same_draws(step, x)
    before = [p.detach().clone() for p in reference.parameters()]
    step(x, y)
    reference_step(reference, ref_optimizer, xb, y, steps=STEPS, start=start)
    engine_state = step.model.state_dict()
    for name, value in reference.state_dict().items():
        assert torch.allclose(engine_state[name], value, atol=atol, rtol=1e-4), name
    moved = [
        (p - b).abs().max().item() for p, b in zip(reference.parameters(), before, strict=True)
    ]
    assert max(moved) > 1e-3  # the update did something


def test_step_augments_each_sample_independently() -> None:
    step, *_ = _setup()
    one = torch.randint(1, 256, (1, 3, 32, 32), dtype=torch.uint8)
    out = step.inputs(one.expand(64, -1, -1, -1).contiguous())
    assert out.dtype == torch.float32 and out.shape == (64, 3, 32, 32)
    assert len({tuple(out[n].flatten().tolist()) for n in range(64)}) > 10


@pytest.mark.parametrize("arch", ["small_cnn", "resnet18", "preact_resnet18"])
def test_folded_view_is_the_eval_model(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(arch, 10, (3, 16, 16), head="cosine")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    view = BatchNormFoldedView(model)
    assert view.folded > 0
    assert list(view.parameters()) == [] or all(
        any(p is q for q in model.parameters()) for p in view.parameters()
    )  # the view owns no weights of its own
    keys = set(model.state_dict())
    x = torch.rand(4, 3, 16, 16)
    for _ in range(2):  # after an update and a train-mode forward, refresh() follows the model
        model.train()
        optimizer.zero_grad()
        model(torch.rand(8, 3, 16, 16)).sum().backward()
        optimizer.step()
        view.refresh()
        model.eval()
        with torch.no_grad():
            assert torch.allclose(view(x), model(x), atol=1e-4, rtol=1e-5)
    assert set(model.state_dict()) == keys  # checkpoints are unchanged by the view


def test_global_pool_is_adaptive_pool_and_keeps_the_layout() -> None:
    for layout in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(4, 8, 5, 7).contiguous(memory_format=layout).requires_grad_(True)
        grad = torch.randn(4, 8, 1, 1)
        expected = nn.AdaptiveAvgPool2d(1)(x)
        (expected_grad,) = torch.autograd.grad(expected, x, grad)
        out = GlobalAvgPool2d()(x)
        (out_grad,) = torch.autograd.grad(out, x, grad)
        assert torch.equal(out, expected) and torch.equal(out_grad, expected_grad)
        assert out_grad.is_contiguous(memory_format=layout)


def test_bf16_covers_attack_and_update_but_never_evaluation() -> None:
    step, *_, x, y = _setup(("train.precision=bf16",))
    assert step.precision == "bf16"
    seen: list[torch.dtype] = []
    first_conv = next(m for m in step.model.modules() if isinstance(m, nn.Conv2d))
    handle = first_conv.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    try:
        step(x, y)  # attack on the folded view (not hooked) + the update
        assert seen and set(seen) == {torch.bfloat16}
        seen.clear()
        classwise_correct(
            step.model, x, y, 10, batch_size=BATCH, attack=None, clip=(0.0, 1.0), seed=0
        )
        assert seen and set(seen) == {torch.float32}
    finally:
        handle.remove()
    assert all(p.dtype == torch.float32 for p in step.model.parameters())


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")  # the attack's frozen weights
@pytest.mark.parametrize(
    ("precision", "expected"),
    [("fp32", (False, False)), ("tf32", (True, True)), ("bf16", (True, False))],
)
def test_the_whole_step_runs_under_its_precision_tf32_switch(
    precision: str, expected: tuple[bool, bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    """(cuDNN, matmul) TF32 as every convolution's forward and backward sees it, attack and
    update: fp32 is full fp32 (PyTorch's default would leave cuDNN's TF32 on), tf32 turns both
    on, bf16 leaves PyTorch's flags (here cuDNN's default on, matmul off). Afterwards the
    flags are as they were."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    step, *_, x, y = _setup(("train.precision=" + precision, "train.fold_bn=false"))
    seen: set[tuple[bool, bool]] = set()

    def record(*_: object) -> None:
        seen.add(tf32_flags())

    convs = [m for m in step.model.modules() if isinstance(m, nn.Conv2d)]
    handles = [conv.register_forward_hook(record) for conv in convs]
    handles += [conv.register_full_backward_hook(record) for conv in convs]
    try:
        step(x, y)
    finally:
        for handle in handles:
            handle.remove()
    assert seen == {expected}
    assert tf32_flags() == (True, False)


def test_tf32_allowed_restores_the_flags_after_an_error() -> None:
    before = tf32_flags()
    with pytest.raises(RuntimeError), tf32_allowed(not before[0]):
        assert tf32_flags() == (not before[0], not before[0])
        raise RuntimeError
    assert tf32_flags() == before


def test_precision_and_fast_path_fields_are_validated() -> None:
    assert resolve_precision("auto", CPU) == "fp32"
    assert resolve_precision("bf16", CPU) == "bf16"
    assert resolve_precision("tf32", CPU) == "tf32"
    assert bench_config("small_cnn", 8, 2).train.precision == "auto"
    assert bench_config("small_cnn", 8, 2, ("train.compile=true",)).train.compile == "default"
    assert bench_config("small_cnn", 8, 2, ("train.compile=false",)).train.compile == "off"
    no_graphs = ("train.compile=max-autotune-no-cudagraphs",)
    assert bench_config("small_cnn", 8, 2, no_graphs).train.compile == no_graphs[0].split("=")[1]
    for bad in ("train.precision=fp16", "train.compile=fast", "train.channels_last=maybe"):
        with pytest.raises(SratError, match=bad.split("=")[0]):
            bench_config("small_cnn", 8, 2, (bad,))


def _compile_with_eager_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.compile as the engine calls it, on dynamo's eager backend: dynamo's capture,
    guards and recompiles without inductor's code generation (no C++ toolchain needed)."""
    import srat_engine.training.trainer as train_module

    real = torch.compile

    def eager_backend(fn: Any, *, mode: str | None, dynamic: bool) -> Any:
        return real(fn, backend="eager", dynamic=dynamic)

    monkeypatch.setattr(train_module.torch, "compile", eager_backend)
    torch._dynamo.reset()


def test_compiled_step_matches_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    """train.compile wires torch.compile around the attack view and the update forward; the
    eager backend runs dynamo's capture without a C++ toolchain and must change nothing."""
    _compile_with_eager_backend(monkeypatch)
    eager, *_, x, y = _setup()
    compiled, *_ = _setup(("train.compile=true",))
    assert compiled.attack_forward is not compiled.folded
    for step in (eager, compiled):
        step(x, y)
    compiled_state = compiled.model.state_dict()
    for name, value in eager.model.state_dict().items():
        assert torch.allclose(value, compiled_state[name], atol=1e-6), name


def test_compiled_step_compiles_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """After the first step, nothing a run varies (lr, class weights, lambda, GAIR, the folded
    weights the attack refreshes each step) makes dynamo compile again: a recompile costs
    seconds per step, and inside a CUDA graph capture it would fail the capture."""
    _compile_with_eager_backend(monkeypatch)
    step, *_, x, y = _setup(("train.compile=true",))
    step(x, y)  # compiles the attack's forward and the update's forward
    monkeypatch.setattr(torch._dynamo.config, "error_on_recompile", True)
    class_w = torch.linspace(0.5, 2.0, 10)
    for lr, weights, lam, gair in [(0.1, None, 0.0, False), (0.01, class_w, 0.5, True)]:
        for group in step.optimizer.param_groups:
            group["lr"] = lr
        step(x, y, class_w=weights, lam=lam, use_gair=gair)
    torch._dynamo.reset()


@pytest.mark.cuda
def test_cuda_step_never_syncs_with_the_host() -> None:
    device = torch.device("cuda")
    model, _, sgd = build_pair("small_cnn", device, seed=0)
    config = bench_config("small_cnn", BATCH, STEPS)
    step = bench_engine_step(model, sgd, config, torch.Generator(device=device).manual_seed(0))
    x = torch.randint(0, 256, (BATCH, 3, 32, 32), dtype=torch.uint8, device=device)
    y = torch.randint(0, 10, (BATCH,), device=device)
    sums = torch.zeros(4, device=device)
    step(x, y, sums=sums)  # warm-up: cuDNN autotuning may synchronise
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step(x, y, sums=sums)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.cuda
def test_cuda_evaluation_waits_for_the_device_only_at_the_end() -> None:
    from srat_engine.evaluation.classwise import AttackParams

    device = torch.device("cuda")
    model = build_model("small_cnn", 10, (3, 32, 32)).to(device)
    x = torch.randint(0, 256, (3 * BATCH, 3, 32, 32), dtype=torch.uint8, device=device)
    y = torch.randint(0, 10, (3 * BATCH,), device=device)
    attack = AttackParams(EPS, STEP_SIZE, 2)
    classwise_correct(model, x, y, 10, batch_size=BATCH, attack=attack)  # warm-up
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for robust in (None, attack):
            correct = classwise_correct(model, x, y, 10, batch_size=BATCH, attack=robust)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert int(correct.sum()) <= len(y)


def test_evaluation_counts_hits_per_class_by_hand() -> None:
    """A model that always answers class 2: every example of class 2 is right, others wrong."""

    class AlwaysTwo(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = torch.zeros(len(x), 4)
            logits[:, 2] = 1.0
            return logits + 0 * x.flatten(1).sum(1, keepdim=True)

    y = torch.tensor([2, 0, 2, 3, 2, 1, 0])
    x = torch.zeros(len(y), 3, dtype=torch.uint8)
    correct = classwise_correct(AlwaysTwo(), x, y, 4, batch_size=3, attack=None)
    assert correct.tolist() == [0, 0, 3, 0]
