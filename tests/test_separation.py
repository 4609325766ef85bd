"""SRAT's feature separation loss (Eq. 6) against hand-computed values and its invariants."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from srat_engine.losses import separation_loss

# z1 = (1, 0), z2 = (3, 4)/5 = (0.6, 0.8), z3 = (0, -1) after normalisation.
# Dot products: z1.z2 = 0.6, z1.z3 = 0, z2.z3 = -0.8. With tau = 0.5 they become 1.2, 0, -1.6.
FEATURES = torch.tensor([[1.0, 0.0], [3.0, 4.0], [0.0, -1.0]])
TAU = 0.5


def test_three_samples_one_anchor_without_positive() -> None:
    labels = torch.tensor([0, 0, 1])
    # anchor 1: P = {2}, A = {2, 3}: -(1.2 - log(e^1.2 + e^0))
    l1 = -(1.2 - math.log(math.exp(1.2) + math.exp(0.0)))
    # anchor 2: P = {1}, A = {1, 3}: -(1.2 - log(e^1.2 + e^-1.6))
    l2 = -(1.2 - math.log(math.exp(1.2) + math.exp(-1.6)))
    # anchor 3 has no positive and is left out of the mean
    expected = (l1 + l2) / 2  # (0.2633 + 0.0590) / 2 = 0.1612
    got = separation_loss(FEATURES, labels, TAU)
    assert got.shape == ()
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_three_samples_all_positive_averages_over_p() -> None:
    labels = torch.tensor([0, 0, 0])
    lse1 = math.log(math.exp(1.2) + math.exp(0.0))
    lse2 = math.log(math.exp(1.2) + math.exp(-1.6))
    lse3 = math.log(math.exp(0.0) + math.exp(-1.6))
    l1 = -((1.2 - lse1) + (0.0 - lse1)) / 2
    l2 = -((1.2 - lse2) + (-1.6 - lse2)) / 2
    l3 = -((0.0 - lse3) + (-1.6 - lse3)) / 2
    got = separation_loss(FEATURES, labels, TAU)
    assert got.item() == pytest.approx((l1 + l2 + l3) / 3, rel=1e-5)


def test_features_are_normalised_inside() -> None:
    labels = torch.tensor([0, 0, 1])
    scaled = FEATURES * torch.tensor([[7.0], [0.1], [3.0]])
    torch.testing.assert_close(
        separation_loss(scaled, labels, TAU), separation_loss(FEATURES, labels, TAU)
    )


def _loop_reference(features: torch.Tensor, labels: torch.Tensor, tau: float) -> float:
    """Eq. 6 written out anchor by anchor, straight from the definition."""
    z = F.normalize(features.double(), dim=1)
    n = len(labels)
    losses = []
    for i in range(n):
        others = [a for a in range(n) if a != i]
        positives = [p for p in others if labels[p] == labels[i]]
        if not positives:
            continue
        denom = sum(math.exp(float(z[i] @ z[a]) / tau) for a in others)
        terms = [math.log(math.exp(float(z[i] @ z[p]) / tau) / denom) for p in positives]
        losses.append(-sum(terms) / len(positives))
    return sum(losses) / len(losses)


def test_matches_per_anchor_loop_on_random_batch() -> None:
    g = torch.Generator().manual_seed(0)
    features = torch.randn(20, 6, generator=g)
    labels = torch.tensor([0] * 8 + [1] * 6 + [2] * 3 + [3, 4, 5])
    got = separation_loss(features, labels, tau=0.2)
    assert got.item() == pytest.approx(_loop_reference(features, labels, 0.2), rel=1e-4)


@pytest.mark.parametrize("n", [0, 1, 4])
def test_all_singletons_give_zero_with_grad(n: int) -> None:
    features = torch.randn(n, 3, requires_grad=True)
    labels = torch.arange(n)
    loss = separation_loss(features, labels, tau=0.07)
    assert loss.item() == 0.0
    assert loss.requires_grad
    loss.backward()
    assert features.grad is not None
    assert torch.isfinite(features.grad).all()
    assert torch.equal(features.grad, torch.zeros_like(features))


def test_permutation_invariant() -> None:
    g = torch.Generator().manual_seed(3)
    features = torch.randn(16, 8, generator=g)
    labels = torch.randint(0, 3, (16,), generator=g)
    perm = torch.randperm(16, generator=g)
    torch.testing.assert_close(
        separation_loss(features[perm], labels[perm], 0.1), separation_loss(features, labels, 0.1)
    )


def test_small_tau_is_stable() -> None:
    g = torch.Generator().manual_seed(4)
    features = (torch.randn(32, 4, generator=g) * 100).requires_grad_(True)
    labels = torch.randint(0, 10, (32,), generator=g)
    loss = separation_loss(features, labels, tau=0.001)
    loss.backward()
    assert torch.isfinite(loss)
    assert features.grad is not None and torch.isfinite(features.grad).all()


def _mean_same_class_cosine(features: torch.Tensor, labels: torch.Tensor) -> float:
    z = F.normalize(features, dim=1)
    cos = z @ z.T
    same = (labels[:, None] == labels[None, :]) & ~torch.eye(len(labels), dtype=torch.bool)
    return cos[same].mean().item()


def test_gradient_step_pulls_same_class_together() -> None:
    g = torch.Generator().manual_seed(5)
    features = torch.randn(8, 4, generator=g, requires_grad=True)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 3])
    before = _mean_same_class_cosine(features.detach(), labels)
    separation_loss(features, labels, tau=0.5).backward()
    assert features.grad is not None
    with torch.no_grad():
        stepped = features - 0.1 * features.grad
    assert _mean_same_class_cosine(stepped, labels) > before


def test_rejects_nonpositive_tau() -> None:
    with pytest.raises(ValueError):
        separation_loss(FEATURES, torch.tensor([0, 0, 1]), tau=0.0)
