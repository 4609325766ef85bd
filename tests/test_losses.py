"""Focal, LDAM, class-balanced / deferred weights and reductions against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from srat_engine.losses import (
    class_balanced_weights,
    deferred_class_weights,
    focal_loss,
    ldam_loss,
    ldam_margins,
    summing_to_class_count,
    weighted_mean,
)


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


def test_ldam_margins_hand_computed() -> None:
    # 100^(1/4) = sqrt(10): m = [0.5 / sqrt(10), 0.5] = [0.1581, 0.5]
    got = ldam_margins([100, 1], max_margin=0.5)
    torch.testing.assert_close(got, torch.tensor([0.5 / math.sqrt(10), 0.5]))
    # fourth roots 2, 1, 3 -> m proportional to 1/2, 1, 1/3, largest = 0.5
    got = ldam_margins([16, 1, 81], max_margin=0.5)
    torch.testing.assert_close(got, torch.tensor([0.25, 0.5, 0.5 / 3]))


def test_ldam_margins_rejects_empty_or_nonpositive_counts() -> None:
    with pytest.raises(ValueError):
        ldam_margins([])
    with pytest.raises(ValueError):
        ldam_margins([10, 0])


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


def test_class_balanced_weights_hand_computed() -> None:
    beta = 0.9999
    e_head = (1 - beta**5000) / (1 - beta)  # (1 - 0.60653) / 1e-4 = 3934.7
    e_tail = (1 - beta**50) / (1 - beta)  # (1 - 0.99501) / 1e-4 = 49.88
    inv_sum = 1 / e_head + 1 / e_tail
    expected = [2 * (1 / e_head) / inv_sum, 2 * (1 / e_tail) / inv_sum]  # [0.02504, 1.97496]
    got = class_balanced_weights([5000, 50], beta=beta)
    torch.testing.assert_close(got, torch.tensor(expected))
    assert got.sum().item() == pytest.approx(2.0)
    assert got[0].item() == pytest.approx(0.02504, abs=1e-5)


def test_class_balanced_weights_limits() -> None:
    assert torch.equal(class_balanced_weights([5000, 50, 7], beta=0.0), torch.ones(3))
    # beta = 1: effective number = n, so w proportional to [1/5000, 1/50], scaled to sum 2
    expected = torch.tensor([2 * 50 / 5050, 2 * 5000 / 5050])
    torch.testing.assert_close(class_balanced_weights([5000, 50], beta=1.0), expected)


def test_weights_summing_to_class_count_hand_computed() -> None:
    # [1, 1, 78, 78] * 4 / 158 = [0.025316, 0.025316, 1.974684, 1.974684]
    got = summing_to_class_count([1.0, 1.0, 78.0, 78.0])
    torch.testing.assert_close(got, torch.tensor([4 / 158, 4 / 158, 312 / 158, 312 / 158]))
    assert got[0].item() == pytest.approx(0.025316, abs=1e-6)
    for bad in ([], [0.0, 0.0], [1.0, -1.0], [1.0, float("nan")]):
        with pytest.raises(ValueError):
            summing_to_class_count(bad)


def test_class_balanced_step_ratio_weights_are_the_class_balanced_weights() -> None:
    """SRAT Figure 5: tail weight "78" (the class-balanced tail/head ratio of Step-100) with
    head weight 1 is the class-balanced weighting itself once both sum to C."""
    counts = [5000] * 5 + [50] * 5
    balanced = class_balanced_weights(counts)
    ratio = (balanced[-1] / balanced[0]).item()
    assert ratio == pytest.approx(78.9, abs=0.05)
    torch.testing.assert_close(summing_to_class_count([1.0] * 5 + [ratio] * 5), balanced)


def test_class_balanced_weights_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        class_balanced_weights([10, 0])
    with pytest.raises(ValueError):
        class_balanced_weights([10, 5], beta=1.5)
    with pytest.raises(ValueError):
        class_balanced_weights([])


def test_deferred_class_weights_switches_at_start_epoch() -> None:
    counts = [5000, 50]
    assert torch.equal(
        deferred_class_weights(counts, 0.9999, epoch=0, start_epoch=5), torch.ones(2)
    )
    assert torch.equal(
        deferred_class_weights(counts, 0.9999, epoch=4, start_epoch=5), torch.ones(2)
    )
    after = deferred_class_weights(counts, 0.9999, epoch=5, start_epoch=5)
    assert after[1].item() == pytest.approx(1.97496, abs=1e-5)
    assert torch.equal(after, class_balanced_weights(counts, 0.9999))


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
