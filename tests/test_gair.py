"""GAIRAT's geometry-aware weights against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from srat_engine.losses import gair_weights

KAPPA = torch.tensor([0, 5, 10])


def _normalise(raw: list[float]) -> torch.Tensor:
    total = sum(raw)
    return torch.tensor([len(raw) * r / total for r in raw])


def test_tanh_hand_computed() -> None:
    # h = 10 // 2 = 5; x = lam + 5 (h - kappa) / h = -1 + (5 - kappa) = [4, -1, -6]
    raw = [(1 + math.tanh(4)) / 2, (1 + math.tanh(-1)) / 2, (1 + math.tanh(-6)) / 2]
    # raw = [0.99966, 0.11920, 6.1e-6]
    got = gair_weights(KAPPA, num_steps=10, lam=-1.0, func="tanh")
    torch.testing.assert_close(got, _normalise(raw))
    assert got.sum().item() == pytest.approx(3.0)


def test_sigmoid_hand_computed() -> None:
    raw = [1 / (1 + math.exp(-4)), 1 / (1 + math.exp(1)), 1 / (1 + math.exp(6))]
    got = gair_weights(KAPPA, num_steps=10, lam=-1.0, func="sigmoid")
    torch.testing.assert_close(got, _normalise(raw))


def test_discrete_hand_computed() -> None:
    # (11 - kappa) / 11 = [11, 6, 1] / 11, sum 18/11 -> 3 * [11, 6, 1] / 18
    got = gair_weights(KAPPA, num_steps=10, lam=-1.0, func="discrete")
    torch.testing.assert_close(got, torch.tensor([11 / 6, 1.0, 1 / 6]))


def test_odd_steps_use_integer_half() -> None:
    # num_steps 7 -> h = 3 (not 3.5); lam 0: x = 5 (3 - kappa) / 3 for kappa [0, 3, 7]
    kappa = torch.tensor([0, 3, 7])
    raw = [(1 + math.tanh(5.0)) / 2, 0.5, (1 + math.tanh(-20 / 3)) / 2]
    got = gair_weights(kappa, num_steps=7, lam=0.0, func="tanh")
    torch.testing.assert_close(got, _normalise(raw))


def test_func_is_case_insensitive() -> None:
    ref = gair_weights(KAPPA, 10, -1.0, "tanh")
    torch.testing.assert_close(gair_weights(KAPPA, 10, -1.0, "Tanh"), ref)
    torch.testing.assert_close(gair_weights(KAPPA, 10, -1.0, "TANH"), ref)
    assert gair_weights(KAPPA, 10, -1.0, "Sigmoid").shape == (3,)
    assert gair_weights(KAPPA, 10, -1.0, "Discrete").shape == (3,)


def test_unknown_func_and_too_few_steps_raise() -> None:
    with pytest.raises(ValueError):
        gair_weights(KAPPA, 10, -1.0, "relu")
    with pytest.raises(ValueError):
        gair_weights(torch.tensor([0, 1]), 1, -1.0, "tanh")


def test_extreme_lambda_stays_finite_and_normalised() -> None:
    # Every raw tanh weight underflows to 0 at lam = -200; log-space normalisation avoids 0/0.
    got = gair_weights(KAPPA, 10, -200.0, "tanh")
    assert torch.isfinite(got).all()
    assert got.sum().item() == pytest.approx(3.0)
    # The ratios are still exp(-2*5) apart: sigmoid(2x) ~ exp(2x) deep in the tail.
    assert (got[0] / got[1]).item() == pytest.approx(math.exp(10), rel=1e-4)


def test_smaller_kappa_gets_larger_weight() -> None:
    kappa = torch.arange(11)
    for func in ("tanh", "sigmoid", "discrete"):
        w = gair_weights(kappa, 10, 0.0, func)
        assert (w[:-1] > w[1:]).all()
        assert w.mean().item() == pytest.approx(1.0)
