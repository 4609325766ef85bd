"""l_inf PGD and its kappa count: invariants, a slow reference loop and the mode/flag contract."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from srat_engine.attacks import PGDResult, attack_mode, pgd_linf

EPS, STEP, STEPS = 0.1, 0.025, 10


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 4))


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A 2-layer ReLU MLP that solves a random linear-teacher task on 1x8x8 inputs in [0, 1].

    Built, not trained (an optimiser loop costs seconds on a loaded 2-core box): hidden units
    0-3 and 4-7 carry relu(a) and relu(-a) of the teacher logits a, recombined exactly by the
    output layer; units 8-15 are random and add a small non-linear term. Clean accuracy is high
    and the margins vary, so PGD flips samples at different steps and kappa spreads out.
    """
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 8, 8, generator=g)
    teacher = torch.randn(4, 64, generator=g)
    bias = -0.5 * teacher.sum(dim=1)  # logits of (x - 0.5) @ teacher.T
    y = F.linear(x.flatten(1), teacher, bias).argmax(dim=1)
    model = _mlp()
    first, second = model[1], model[3]
    assert isinstance(first, nn.Linear) and isinstance(second, nn.Linear)
    with torch.no_grad():
        first.weight.copy_(torch.cat([teacher, -teacher, torch.randn(8, 64, generator=g) / 8]))
        first.bias.copy_(torch.cat([bias, -bias, torch.zeros(8)]))
        second.weight.copy_(
            torch.cat([torch.eye(4), -torch.eye(4), torch.randn(4, 8, generator=g) / 10], dim=1)
        )
        second.bias.zero_()
    model.eval()
    return model, x, y


def _attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int = 0) -> PGDResult:
    g = torch.Generator().manual_seed(seed)
    return pgd_linf(model, x, y, eps=EPS, step_size=STEP, steps=STEPS, generator=g)


def _reference(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, noise: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """PGD and kappa the slow, obvious way: backward() on a model copy, a loop over samples."""
    model = copy.deepcopy(model)
    kappa = torch.zeros(len(y), dtype=torch.int64)
    lo = torch.clamp(x - EPS, min=0.0)
    hi = torch.clamp(x + EPS, max=1.0)
    x_t = x.clone() if noise is None else torch.min(torch.max(x + noise, lo), hi)
    for _ in range(STEPS):
        x_t = x_t.detach().requires_grad_(True)
        logits = model(x_t)
        for i in range(len(y)):
            if logits[i].argmax().item() == y[i].item():
                kappa[i] += 1
        F.cross_entropy(logits, y, reduction="sum").backward()
        assert x_t.grad is not None
        x_t = torch.min(torch.max(x_t.detach() + STEP * x_t.grad.sign(), lo), hi)
    return x_t.detach(), kappa


def test_stays_in_ball_and_range(trained: tuple[nn.Module, torch.Tensor, torch.Tensor]) -> None:
    model, x, y = trained
    res = _attack(model, x, y)
    assert res.x_adv.shape == x.shape and res.x_adv.dtype == x.dtype
    assert not res.x_adv.requires_grad
    assert (res.x_adv - x).abs().max().item() <= EPS + 1e-6
    assert res.x_adv.min().item() >= 0.0 and res.x_adv.max().item() <= 1.0


def test_increases_loss(trained: tuple[nn.Module, torch.Tensor, torch.Tensor]) -> None:
    model, x, y = trained
    res = _attack(model, x, y)
    with torch.no_grad():
        clean = F.cross_entropy(model(x), y, reduction="none")
        adv = F.cross_entropy(model(res.x_adv), y, reduction="none")
    assert adv.mean() > clean.mean() + 0.1
    assert (adv >= clean).float().mean().item() >= 0.9


def test_reproducible_with_seeded_generator(
    trained: tuple[nn.Module, torch.Tensor, torch.Tensor],
) -> None:
    model, x, y = trained
    a, b, c = _attack(model, x, y, seed=1), _attack(model, x, y, seed=1), _attack(model, x, y, 2)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.kappa, b.kappa)
    assert not torch.equal(a.x_adv, c.x_adv)


def test_matches_reference_loop_with_random_start(
    trained: tuple[nn.Module, torch.Tensor, torch.Tensor],
) -> None:
    model, x, y = trained
    noise = (2 * torch.rand(x.shape, generator=torch.Generator().manual_seed(7)) - 1) * EPS
    ref_x, ref_kappa = _reference(model, x, y, noise)
    res = _attack(model, x, y, seed=7)
    assert res.kappa.dtype == torch.int64 and res.kappa.shape == (len(y),)
    assert res.kappa.min().item() >= 0 and res.kappa.max().item() <= STEPS
    # The model must flip some samples mid-attack, or the kappa comparison is vacuous.
    assert len(torch.unique(res.kappa)) >= 3
    assert torch.equal(res.kappa, ref_kappa)
    torch.testing.assert_close(res.x_adv, ref_x)


def test_matches_reference_loop_without_random_start(
    trained: tuple[nn.Module, torch.Tensor, torch.Tensor],
) -> None:
    model, x, y = trained
    ref_x, ref_kappa = _reference(model, x, y, None)
    res = pgd_linf(model, x, y, eps=EPS, step_size=STEP, steps=STEPS, random_start=False)
    assert torch.equal(res.kappa, ref_kappa)
    torch.testing.assert_close(res.x_adv, ref_x)


def test_works_inside_no_grad(trained: tuple[nn.Module, torch.Tensor, torch.Tensor]) -> None:
    model, x, y = trained
    expected = _attack(model, x, y, seed=3)
    with torch.no_grad():
        got = _attack(model, x, y, seed=3)
    assert torch.equal(got.x_adv, expected.x_adv) and torch.equal(got.kappa, expected.kappa)


def test_one_forward_per_step(trained: tuple[nn.Module, torch.Tensor, torch.Tensor]) -> None:
    model, x, y = trained
    calls: list[int] = []
    handle = model.register_forward_hook(lambda *_: calls.append(1))
    try:
        _attack(model, x, y)
    finally:
        handle.remove()
    assert len(calls) == STEPS


def test_leaves_grads_and_mode_alone() -> None:
    torch.manual_seed(1)
    model = _mlp()
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 4, (8,))
    for training in (True, False):
        model.train(training)
        pgd_linf(model, x, y, eps=EPS, step_size=STEP, steps=3)
        assert model.training is training
        assert all(p.grad is None for p in model.parameters())
        assert all(p.requires_grad for p in model.parameters())


def test_custom_loss_fn_is_used(trained: tuple[nn.Module, torch.Tensor, torch.Tensor]) -> None:
    model, x, y = trained

    def neg_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return -F.cross_entropy(logits, target, reduction="sum")

    res = pgd_linf(
        model, x, y, eps=EPS, step_size=STEP, steps=5, random_start=False, loss_fn=neg_ce
    )
    with torch.no_grad():
        assert F.cross_entropy(model(res.x_adv), y) < F.cross_entropy(model(x), y)


def test_rows_do_not_depend_on_the_rest_of_the_batch(
    trained: tuple[nn.Module, torch.Tensor, torch.Tensor],
) -> None:
    model, x, y = trained
    full = pgd_linf(model, x, y, eps=EPS, step_size=STEP, steps=4, random_start=False)
    part = pgd_linf(model, x[:5], y[:5], eps=EPS, step_size=STEP, steps=4, random_start=False)
    torch.testing.assert_close(part.x_adv, full.x_adv[:5])
    assert torch.equal(part.kappa, full.kappa[:5])


def test_zero_steps_is_identity(trained: tuple[nn.Module, torch.Tensor, torch.Tensor]) -> None:
    model, x, y = trained
    res = pgd_linf(model, x, y, eps=EPS, step_size=STEP, steps=0)
    assert torch.equal(res.x_adv, x) and res.x_adv.data_ptr() != x.data_ptr()
    assert torch.equal(res.kappa, torch.zeros(len(y), dtype=torch.int64))


def test_zero_eps_is_identity_with_full_kappa(
    trained: tuple[nn.Module, torch.Tensor, torch.Tensor],
) -> None:
    model, x, y = trained
    res = pgd_linf(model, x, y, eps=0.0, step_size=STEP, steps=STEPS)
    assert torch.equal(res.x_adv, x)
    with torch.no_grad():
        correct = model(x).argmax(dim=1) == y
    # Every iterate is x, so kappa = STEPS where x is classified correctly and 0 elsewhere.
    assert torch.equal(res.kappa, STEPS * correct.long())


def test_clip_none_allows_values_outside_unit_range() -> None:
    torch.manual_seed(2)
    model = nn.Linear(5, 3)
    x = torch.randn(16, 5) * 3
    y = torch.randint(0, 3, (16,))
    res = pgd_linf(model, x, y, eps=0.5, step_size=0.2, steps=5, clip=None)
    assert (res.x_adv - x).abs().max().item() <= 0.5 + 1e-6
    assert res.x_adv.min().item() < 0.0 and res.x_adv.max().item() > 1.0


def test_preserves_float64(trained: tuple[nn.Module, torch.Tensor, torch.Tensor]) -> None:
    model, x, y = trained
    model64 = copy.deepcopy(model).double()
    res = pgd_linf(model64, x.double(), y, eps=EPS, step_size=STEP, steps=2)
    assert res.x_adv.dtype == torch.float64


def test_rejects_negative_budget() -> None:
    with pytest.raises(ValueError):
        pgd_linf(
            nn.Linear(2, 2), torch.zeros(1, 2), torch.tensor([0]), eps=-1, step_size=1, steps=1
        )


def test_attack_mode_sets_and_restores_modes_and_flags() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    model.train()
    model[1].eval()  # a frozen-statistics submodule must come back as it was
    model[2].weight.requires_grad_(False)
    before_flags = [p.requires_grad for p in model.parameters()]
    for bn_mode, expect_training in (("eval", False), ("train", True)):
        with attack_mode(model, bn_mode) as inner:
            assert inner is model
            assert all(m.training is expect_training for m in model.modules())
            assert not any(p.requires_grad for p in model.parameters())
        assert model.training and model[0].training and not model[1].training
        assert [p.requires_grad for p in model.parameters()] == before_flags


def test_attack_mode_restores_after_exception() -> None:
    model = nn.Linear(3, 2).eval()
    with pytest.raises(RuntimeError), attack_mode(model, "train"):
        raise RuntimeError("boom")
    assert not model.training and model.weight.requires_grad


def test_attack_mode_rejects_unknown_mode() -> None:
    with pytest.raises(ValueError), attack_mode(nn.Linear(2, 2), "frozen"):
        pass


def test_attack_mode_bn_statistics() -> None:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.BatchNorm1d(8), nn.Linear(8, 4))
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 4, (16,))
    bn = model[2]
    assert isinstance(bn, nn.BatchNorm1d) and bn.running_mean is not None
    start = bn.running_mean.clone()
    with attack_mode(model, "eval"):
        res = pgd_linf(model, x, y, eps=EPS, step_size=STEP, steps=3)
    assert torch.equal(bn.running_mean, start)
    with attack_mode(model, "train"):
        pgd_linf(model, x, y, eps=EPS, step_size=STEP, steps=3)
    assert not torch.equal(bn.running_mean, start)
    assert res.kappa.max().item() <= 3
    assert all(p.grad is None for p in model.parameters())
