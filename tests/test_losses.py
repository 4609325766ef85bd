"""Focal and LDAM losses and the reductions against hand-computed values (the class weights and
margins they take: tests/test_per_class.py)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from srat_engine.losses import focal_loss, ldam_loss, weighted_mean


def test_focal_hand_computed() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [2.0, 0.0, -1.0]])
    target = torch.tensor([0, 2])
    denom = math.exp(2) + math.exp(0) + math.exp(-1)  # 7.389 + 1 + 0.368 = 8.757
    p0 = math.exp(2) / denom  # 0.8438
    p2 = math.exp(-1) / denom  # 0.0420
    expected = [(1 - p0) ** 2 * -math.log(p0), (1 - p2) ** 2 * -math.log(p2)]
    # (0.1562^2 * 0.1698 = 0.00414, 0.9580^2 * 3.1698 = 2.909)
    got = focal_loss(logits, target, gamma=2.0)
    assert got.shape == (2,)
    torch.testing.assert_close(got, torch.tensor(expected), rtol=1e-5, atol=1e-7)


def test_focal_gamma_one_hand_computed() -> None:
    logits = torch.tensor([[1.0, 1.0]])
    # p_t = 1/2, CE = log 2, FL = (1/2) log 2
    got = focal_loss(logits, torch.tensor([1]), gamma=1.0)
    torch.testing.assert_close(got, torch.tensor([0.5 * math.log(2)]))


def test_focal_gamma_zero_is_exactly_ce() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 5, generator=g)
    target = torch.randint(0, 5, (16,), generator=g)
    ce = F.cross_entropy(logits, target, reduction="none")
    assert torch.equal(focal_loss(logits, target, gamma=0.0), ce)


def test_focal_downweights_easy_samples_and_no_nan_when_confident() -> None:
    logits = torch.tensor([[200.0, 0.0], [0.0, 0.0]], requires_grad=True)
    target = torch.tensor([0, 0])
    loss = focal_loss(logits, target, gamma=0.5)
    loss.sum().backward()
    assert torch.isfinite(loss).all()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert loss[0] < loss[1]


def test_focal_rejects_negative_gamma() -> None:
    with pytest.raises(ValueError):
        focal_loss(torch.zeros(1, 2), torch.tensor([0]), gamma=-1.0)


def test_ldam_loss_hand_computed() -> None:
    # s = 10, cos = [0.3, 0.1] -> logits [3, 1]; margins [0.1, 0.2]
    logits = torch.tensor([[3.0, 1.0], [3.0, 1.0]])
    margins = torch.tensor([0.1, 0.2])
    target = torch.tensor([0, 1])
    # y=0: target logit 3 - 10*0.1 = 2 -> CE([2, 1], 0) = log(1 + e^(1-2))
    # y=1: target logit 1 - 10*0.2 = -1 -> CE([3, -1], 1) = log(1 + e^(3-(-1)))
    expected = torch.tensor([math.log(1 + math.exp(-1)), math.log(1 + math.exp(4))])
    got = ldam_loss(logits, target, margins, scale=10.0)
    assert got.shape == (2,)
    torch.testing.assert_close(got, expected)


def test_ldam_zero_margins_is_ce() -> None:
    logits = torch.tensor([[0.5, -0.2, 1.0]])
    target = torch.tensor([2])
    got = ldam_loss(logits, target, torch.zeros(3), scale=30.0)
    torch.testing.assert_close(got, F.cross_entropy(logits, target, reduction="none"))


def test_weighted_mean_modes() -> None:
    losses = torch.tensor([1.0, 2.0, 3.0])
    weights = torch.tensor([3.0, 1.0, 0.0])
    # mean: (3*1 + 1*2 + 0*3) / 3 = 5/3; normalized: 5 / (3 + 1 + 0) = 5/4
    assert weighted_mean(losses, weights, "mean").item() == pytest.approx(5 / 3)
    assert weighted_mean(losses, weights, "normalized").item() == pytest.approx(5 / 4)
    assert weighted_mean(losses, None).item() == pytest.approx(2.0)
    assert weighted_mean(losses, None, "normalized").item() == pytest.approx(2.0)


def test_weighted_mean_normalized_matches_cross_entropy_weight() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(12, 3, generator=g)
    target = torch.randint(0, 3, (12,), generator=g)
    class_w = torch.tensor([0.2, 1.0, 3.0])
    per_sample = F.cross_entropy(logits, target, reduction="none")
    got = weighted_mean(per_sample, class_w[target], "normalized")
    torch.testing.assert_close(got, F.cross_entropy(logits, target, weight=class_w))


def test_weighted_mean_rejects_bad_mode_and_shape() -> None:
    with pytest.raises(ValueError):
        weighted_mean(torch.ones(3), torch.ones(3), "sum")
    with pytest.raises(ValueError):
        weighted_mean(torch.ones(3), torch.ones(2))
