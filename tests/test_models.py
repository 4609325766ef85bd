"""Tests for srat_engine.models: shapes, the features/head split, reference sizes, heads."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn

from srat_engine.errors import SratError
from srat_engine.models import ARCHITECTURES, CosineHead, SratModel, build_model
from srat_engine.models.flops import executed_flops, forward_flops
from srat_engine.models.wide_resnet import WideBasicBlock

# (arch, input_shape, batch, feature_dim). Small inputs keep the big nets cheap on a CPU while
# every stride-2 stage still sees at least 2x2 pixels; batch 2 because BN trains on batch stats.
CASES = [
    ("resnet18", (3, 16, 16), 2, 512),
    ("preact_resnet18", (3, 16, 16), 2, 512),
    ("wrn34_10", (3, 8, 8), 2, 640),
    ("wrn28_10", (3, 8, 8), 2, 640),
    ("small_cnn", (1, 8, 8), 4, 64),
    ("small_cnn", (3, 32, 32), 2, 64),
    ("linear", (5,), 6, 5),
]


@pytest.fixture(autouse=True)
def _seed_and_one_thread() -> Iterator[None]:
    # One intra-op thread: these tensors are too small to gain from more, and on a shared CI
    # host a second spinning OpenMP thread made this file 3x slower.
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_cases_cover_every_architecture() -> None:
    assert {case[0] for case in CASES} == set(ARCHITECTURES)


# Every arch with the linear head, plus the cosine head on the cheap ones (the head never
# depends on the body beyond feature_dim, so building WRN-34-10 twice would buy nothing).
HEAD_CASES = [(*case, "linear") for case in CASES] + [
    (*case, "cosine") for case in CASES if case[0] not in ("wrn34_10", "wrn28_10")
]


@pytest.mark.parametrize(("arch", "shape", "batch", "feature_dim", "head"), HEAD_CASES)
def test_shapes_and_forward_is_head_of_features(
    arch: str, shape: tuple[int, ...], batch: int, feature_dim: int, head: str
) -> None:
    model = build_model(arch, 7, shape, head=head).eval()
    assert isinstance(model, SratModel)
    assert model.feature_dim == feature_dim
    x = torch.rand(batch, *shape)
    with torch.no_grad():
        feats = model.features(x)
        logits = model(x)
        assert feats.shape == (batch, feature_dim)
        assert logits.shape == (batch, 7)
        assert torch.equal(logits, model.head(feats))
    assert isinstance(model.head, CosineHead if head == "cosine" else nn.Linear)


@pytest.mark.parametrize(("arch", "shape", "batch", "feature_dim"), CASES)
def test_input_gradient_flows(
    arch: str, shape: tuple[int, ...], batch: int, feature_dim: int
) -> None:
    model = build_model(arch, 3, shape)
    x = torch.rand(batch, *shape, requires_grad=True)
    nn.functional.cross_entropy(model(x), torch.arange(batch) % 3).backward()
    assert x.grad is not None
    assert x.grad.abs().sum() > 0
    # A parameter left without a gradient is a layer built but skipped in the forward pass.
    unused = [name for name, p in model.named_parameters() if p.grad is None]
    assert not unused


# Reference sizes for 10 classes, matched exactly since the layouts are meant to be identical.
# resnet18: 11,173,962, kuangliu/pytorch-cifar's ResNet18.
# preact_resnet18: 11,172,170, Rice et al. 2020's PreActResNet18 (kuangliu's PreActResNet18,
# 11,171,146, plus the final 512-channel BN's 1,024). wrn34_10: 46,160,474, TRADES/Madry's
# WRN-34-10 counted without TRADES' unused sub_block1: the "46.16M" the literature reports.
# wrn28_10: 36,479,194, the "36.5M" of Zagoruyko & Komodakis 2016 (Table 4) for CIFAR-10.
@pytest.mark.parametrize(
    ("arch", "expected"),
    [
        ("resnet18", 11_173_962),
        ("preact_resnet18", 11_172_170),
        ("wrn34_10", 46_160_474),
        ("wrn28_10", 36_479_194),
    ],
)
def test_parameter_counts(arch: str, expected: int) -> None:
    model = build_model(arch, 10, (3, 32, 32))
    assert sum(p.numel() for p in model.parameters()) == expected


def test_resnet18_stem_is_3x3_stride1_without_maxpool() -> None:
    model = build_model("resnet18", 10, (3, 32, 32))
    assert not any(isinstance(m, (nn.MaxPool2d, nn.AdaptiveMaxPool2d)) for m in model.modules())
    stem = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert stem.kernel_size == (3, 3)
    assert stem.stride == (1, 1)
    assert stem.out_channels == 64


def test_resnet18_flops_match_reference() -> None:
    """CIFAR ResNet-18 at 32x32: 0.5554 GMACs (as reported for kuangliu/pytorch-cifar), so the
    quoted 1.111 GFLOP counts MACs x 2."""
    flops = forward_flops(build_model("resnet18", 10, (3, 32, 32)), (3, 32, 32))
    assert flops == pytest.approx(1.11e9, rel=0.01)
    assert flops == pytest.approx(1.111e9, rel=1e-3)
    assert flops == 1_110_845_440  # the Conv2d and Linear MACs x 2, as a hook count gives


def test_forward_flops_by_hand() -> None:
    # conv: 4 x 8 x 8 outputs x (3 x 3 x 3) MACs = 6912; linear: 256 x 10 = 2560; BN, ReLU and
    # biases are not counted; 2 FLOPs per MAC
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(256, 10),
    )
    assert forward_flops(model, (3, 8, 8)) == 2 * (6912 + 2560)
    assert model.training  # counted on a copy


def test_executed_flops_count_backward_and_input_only_gradients() -> None:
    # Linear 4 -> 3 on 2 examples: each matmul (forward, input gradient, weight gradient) is
    # 2 x 4 x 3 MACs = 48 FLOPs; per example a full backward costs 3 x 48 / 2, input only 2 x 48 / 2
    linear = nn.Linear(4, 3, bias=False)
    x = torch.rand(2, 4, requires_grad=True)
    assert executed_flops(lambda: linear(x).sum().backward(), 2) == 72
    assert executed_flops(lambda: torch.autograd.grad(linear(x).sum(), x), 2) == 48


def test_wrn_shortcut_sees_the_activated_input() -> None:
    # TRADES' WRN feeds relu(bn1(x)) to a width-changing shortcut. With fresh BN statistics in
    # eval mode, a non-positive input activates to 0, so the whole block must output 0; a
    # shortcut on the raw x would pass it through.
    block = WideBasicBlock(4, 8, stride=1, drop_rate=0.0).eval()
    x = -torch.rand(2, 4, 5, 5)
    with torch.no_grad():
        assert torch.equal(block(x), torch.zeros(2, 8, 5, 5))


def test_cosine_head_hand_computed_example() -> None:
    s = 30.0
    head = CosineHead(2, 2, scale=s)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # The second class vector has norm 2; normalising it is what keeps its logit at s, not 2s.
    expected = torch.tensor([[s, 0.0], [0.0, s]])
    assert torch.allclose(head(z), expected)
    assert torch.allclose(head(7.0 * z), expected)


def test_cosine_head_logits_bounded_by_scale() -> None:
    head = CosineHead(16, 5, scale=12.5)
    logits = head(100.0 * torch.randn(64, 16))
    assert logits.abs().max() <= 12.5 + 1e-4
    # The LDAM-DRW init leaves every class vector at unit norm.
    assert torch.allclose(head.weight.norm(dim=1), torch.ones(5), atol=1e-4)


def test_linear_model_is_an_affine_classifier() -> None:
    model = build_model("linear", 2, (3,))
    x = torch.randn(4, 3)
    assert torch.equal(model.features(x), x)
    assert isinstance(model.head, nn.Linear)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"arch": "resnet50"}, "unknown architecture 'resnet50'; known: resnet18, "),
        ({"head": "ldam"}, "unknown head 'ldam'; known: linear, cosine"),
        ({"arch": "small_cnn", "input_shape": (64,)}, "small_cnn needs an image input_shape"),
        ({"arch": "linear", "input_shape": ()}, "linear needs a vector input_shape"),
        ({"num_classes": 1}, "num_classes must be at least 2"),
    ],
)
def test_bad_arguments_raise_srat_error(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"arch": "resnet18", "num_classes": 10, "input_shape": (3, 32, 32)}
    args.update(kwargs)
    with pytest.raises(SratError, match=re.escape(message)):
        build_model(**args)


def test_small_cnn_is_cheap_by_construction() -> None:
    # A deterministic guard on speed: the 32/64/128 layout that took ~45 ms per step had
    # 4.76 MFLOP per 8x8 image; the chosen one has 0.76 MFLOP.
    assert forward_flops(build_model("small_cnn", 10, (1, 8, 8)), (1, 8, 8)) < 1.0e6
