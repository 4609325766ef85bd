"""The logit-scaled PGD of the gradient-masking check (srat_engine.evaluation.masking).

A linear two-class model on [0, 1]^32 makes every number predictable: PGD's sign step is
sign(w_other - w_y) wherever the cross-entropy gradient is not exactly zero, so after enough
steps every attack that sees a gradient ends on the same vertex of the eps-box. Multiplying
its logits by a huge temperature saturates the softmax in fp32 (margins * T far above 104):
the gradient is exactly zero, plain PGD never leaves its random start, and the model looks
robust for a reason that has nothing to do with robustness.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from srat_engine.attacks import pgd_linf
from srat_engine.evaluation.masking import (
    LOGIT_SCALES,
    MASKING_THRESHOLD,
    logit_scaled_hits,
    masking_record,
    scale_key,
)

DIM, EPS, STEPS = 32, 0.05, 20
STEP = EPS / 4  # 20 steps of eps/4 cross the box (2 eps) from any random start
HOT = 1000.0  # the "temperature": logits multiplied by 1000


class Scaled(nn.Module):
    """`inner`'s logits multiplied by `factor`."""

    def __init__(self, inner: nn.Module, factor: float) -> None:
        super().__init__()
        self.inner, self.factor = inner, factor

    def forward(self, x: Tensor) -> Tensor:
        return self.factor * self.inner(x)


def linear_model() -> nn.Module:
    """z_1 - z_0 = v . (x - 1/2) with v in {-1, 1}^32: the margin of x is |v . (x - 1/2)|."""
    v = torch.where(torch.rand(DIM, generator=torch.Generator().manual_seed(3)) < 0.5, -1.0, 1.0)
    model = nn.Linear(DIM, 2)
    with torch.no_grad():
        model.weight.copy_(torch.stack([-v / 2, v / 2]))
        model.bias.copy_(torch.tensor([v.sum() / 4, -v.sum() / 4]))
    return model


def dataset(model: nn.Module) -> tuple[Tensor, Tensor]:
    """300 points labelled by the model itself, each with margin >= 0.5 (so that no random
    start of the hot model falls into the band where its softmax is not saturated)."""
    x = torch.rand(2000, DIM, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        z = model(x)
    keep = (z[:, 1] - z[:, 0]).abs() >= 0.5
    x = x[keep][:300]
    return x, model(x).argmax(dim=1).detach()


def pgd_robust(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Plain PGD-20's robust accuracy in percent."""
    generator = torch.Generator().manual_seed(0)
    x_adv = pgd_linf(model, x, y, eps=EPS, step_size=STEP, steps=STEPS, generator=generator).x_adv
    with torch.no_grad():
        return 100.0 * float((model(x_adv).argmax(dim=1) == y).float().mean())


def scaled_robust(model: nn.Module, x: Tensor, y: Tensor) -> tuple[float, list[float]]:
    """The logit-scaled PGD's robust accuracy (every factor) and each factor's, in percent."""
    generator = torch.Generator().manual_seed(0)
    hits = logit_scaled_hits(model, x, y, eps=EPS, step_size=STEP, steps=STEPS, generator=generator)
    assert hits.shape == (len(LOGIT_SCALES), len(y)) and hits.dtype == torch.bool
    per_scale = (100.0 * hits.float().mean(dim=1)).tolist()
    return 100.0 * float(hits.all(dim=0).float().mean()), per_scale


@pytest.fixture(scope="module")
def data() -> tuple[nn.Module, Tensor, Tensor]:
    model = linear_model()
    x, y = dataset(model)
    assert len(y) == 300 and 0 < int(y.sum()) < 300
    return model, x, y


def test_the_saturated_softmax_gives_exactly_zero_input_gradients(
    data: tuple[nn.Module, Tensor, Tensor],
) -> None:
    model, x, y = data
    hot = Scaled(model, HOT)
    x = x.clone().requires_grad_(True)
    loss = nn.functional.cross_entropy(hot(x), y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, [x])
    assert torch.count_nonzero(grad) == 0
    # scaled by 0.01 the margins (10 * [0.5, ~6]) are back in fp32's range
    x2 = x.detach().clone().requires_grad_(True)
    loss = nn.functional.cross_entropy(0.01 * hot(x2), y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, [x2])
    assert bool((grad != 0).all())


def test_a_hot_model_fools_plain_pgd_but_not_the_logit_scaled_pgd(
    data: tuple[nn.Module, Tensor, Tensor],
) -> None:
    model, x, y = data
    hot = Scaled(model, HOT)
    plain_pgd = pgd_robust(model, x, y)
    hot_pgd = pgd_robust(hot, x, y)
    hot_scaled, hot_per_scale = scaled_robust(hot, x, y)
    # the same decision function: the hot model is exactly as robust as the plain one
    assert 20.0 < plain_pgd < 80.0
    assert hot_pgd > 95.0  # plain PGD stays (almost) at its random starts
    assert hot_scaled == pytest.approx(plain_pgd, abs=2.0)
    assert hot_per_scale[LOGIT_SCALES.index(0.01)] == pytest.approx(plain_pgd, abs=2.0)
    record = masking_record(hot_pgd, hot_pgd, scaled_rob=hot_scaled)
    assert record["suspected"] is True and record["logit_scaled_suspected"] is True
    assert record["autoattack_suspected"] is False
    assert record["logit_scaled_gap"] == pytest.approx(hot_pgd - hot_scaled)


def test_a_plain_model_is_not_flagged(data: tuple[nn.Module, Tensor, Tensor]) -> None:
    model, x, y = data
    plain_pgd = pgd_robust(model, x, y)
    plain_scaled, per_scale = scaled_robust(model, x, y)
    # every factor sees the gradient's sign, so every attack ends on the same vertex
    assert plain_scaled == plain_pgd
    assert per_scale == pytest.approx([plain_pgd] * len(LOGIT_SCALES))
    record = masking_record(plain_pgd, plain_pgd, scaled_rob=plain_scaled)
    assert record["suspected"] is False and record["logit_scaled_gap"] == 0.0


@pytest.mark.parametrize(
    ("pgd", "aa", "scaled", "by_aa", "by_scaled"),
    [
        (60.0, 55.0, 52.0, False, False),  # the usual few points, both
        (60.0, 55.0, 49.9, False, True),  # 10.1 points below under logit scaling
        (60.0, 50.0, 50.0, False, False),  # exactly the threshold: not flagged
        (60.0, 45.0, 58.0, True, False),
        (60.0, 45.0, 20.0, True, True),
    ],
)
def test_the_verdict_takes_either_gap(
    pgd: float, aa: float, scaled: float, by_aa: bool, by_scaled: bool
) -> None:
    record = masking_record(pgd, aa, scaled_rob=scaled)
    assert record["autoattack_suspected"] is by_aa
    assert record["logit_scaled_suspected"] is by_scaled
    assert record["suspected"] is (by_aa or by_scaled)
    assert record["gap"] == pgd - aa and record["logit_scaled_gap"] == pgd - scaled
    assert record["logit_scaled_overall"] == scaled
    assert record["threshold"] == MASKING_THRESHOLD


def test_without_a_logit_scaled_number_the_record_is_autoattack_s_alone() -> None:
    record = masking_record(60.0, 45.0)
    assert record == {
        "suspected": True,
        "pgd20_overall": 60.0,
        "autoattack_overall": 45.0,
        "gap": 15.0,
        "threshold": MASKING_THRESHOLD,
        "autoattack_suspected": True,
    }
    with pytest.raises(ValueError):
        masking_record(60.0, 45.0, scaled_rob=math.nan)


def test_the_factors_are_at_bsl_s_and_two_below_one() -> None:
    assert LOGIT_SCALES == (10.0, 0.1, 0.01)
    assert [scale_key(s) for s in LOGIT_SCALES] == ["10", "0.1", "0.01"]
    with pytest.raises(ValueError):
        logit_scaled_hits(nn.Linear(2, 2), torch.zeros(1, 2), torch.zeros(1, dtype=torch.long),
                          eps=0.1, step_size=0.1, steps=1, scales=())  # fmt: skip


def test_pgd_hands_the_scaled_logits_to_the_loss_and_counts_kappa_on_the_raw_ones() -> None:
    model = nn.Linear(3, 2)
    x = torch.full((2, 3), 0.5)
    y = torch.tensor([0, 1])
    seen: list[Tensor] = []

    def loss(logits: Tensor, target: Tensor) -> Tensor:
        seen.append(logits.detach().clone())
        return nn.functional.cross_entropy(logits, target, reduction="sum")

    raw = model(x).detach()
    result = pgd_linf(model, x, y, eps=0.1, step_size=0.0, steps=1,
                      random_start=False, loss_fn=loss, logit_scale=3.0)  # fmt: skip
    assert torch.allclose(seen[0], 3.0 * raw)
    assert result.kappa.tolist() == (raw.argmax(dim=1) == y).long().tolist()
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="logit_scale"):
            pgd_linf(model, x, y, eps=0.1, step_size=0.1, steps=1, logit_scale=bad)
