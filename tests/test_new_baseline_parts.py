"""The maths of issue #14's baselines against hand-computed values and direct slow versions:
logit adjustment / balanced softmax, TRADES, RobustLT budgets, TAET's equalisation, REAT, RoBal."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from srat_engine.attacks import class_step_sizes, warmup_budgets
from srat_engine.losses import (
    class_log_prior,
    logit_adjusted_loss,
    per_class_mean_losses,
    posthoc_adjusted_logits,
    prior_shifted_logits,
    reat_inner_weights,
    reat_tail_classes,
    robal_train_logits,
    taet_equalisation_loss,
    tail_feature_alignment,
    trades_kl,
    trades_loss,
    weighted_mean,
)
from srat_engine.models.heads import CosineHead
from srat_engine.models.robal import robal_cosine, robal_eval_logits

EPS = 8 / 255

# ---------------------------------------------------------------- logit adjustment


def test_class_log_prior_hand_computed() -> None:
    torch.testing.assert_close(
        class_log_prior([300, 100]), torch.tensor([math.log(0.75), math.log(0.25)])
    )
    with pytest.raises(ValueError):
        class_log_prior([3, 0])
    with pytest.raises(ValueError):
        class_log_prior([])


def test_prior_shifted_and_posthoc_logits_hand_computed() -> None:
    log_prior = class_log_prior([300, 100])
    logits = torch.tensor([[1.0, 2.0]])
    # z + log pi = [1 + log 0.75, 2 + log 0.25] = [0.71232, 0.61371]
    torch.testing.assert_close(
        prior_shifted_logits(logits, log_prior),
        torch.tensor([[1 + math.log(0.75), 2 + math.log(0.25)]]),
    )
    # z - 2 log pi = [1 + 0.57536, 2 + 2.77259]
    torch.testing.assert_close(
        posthoc_adjusted_logits(logits, log_prior, tau=2.0),
        torch.tensor([[1 - 2 * math.log(0.75), 2 - 2 * math.log(0.25)]]),
    )


def test_posthoc_adjustment_moves_the_argmax_to_the_rare_class() -> None:
    # [2 - log 0.9, 1 - log 0.1] = [2.105, 3.303]
    adjusted = posthoc_adjusted_logits(torch.tensor([[2.0, 1.0]]), class_log_prior([9, 1]))
    assert adjusted.argmax(dim=1).item() == 1


def test_balanced_softmax_loss_hand_computed() -> None:
    # zero logits + log pi: softmax = pi = [0.75, 0.25]; CE = -log pi_y
    logits = torch.zeros(2, 2)
    got = logit_adjusted_loss(logits, torch.tensor([1, 0]), class_log_prior([300, 100]))
    torch.testing.assert_close(got, torch.tensor([math.log(4.0), -math.log(0.75)]))


def test_logit_adjusted_loss_same_with_log_counts_and_log_prior() -> None:
    # The balanced-softmax reference adds tau * log n, not tau * log pi: same softmax.
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 3, generator=g)
    target = torch.tensor([0, 1, 2, 2, 1, 0])
    counts = [500, 50, 5]
    log_counts = torch.log(torch.tensor(counts, dtype=torch.float32))
    for tau in (0.5, 1.0, 1.5):
        by_counts = F.cross_entropy(logits + tau * log_counts, target, reduction="none")
        torch.testing.assert_close(
            logit_adjusted_loss(logits, target, class_log_prior(counts), tau), by_counts
        )


def test_logit_adjusted_loss_balanced_counts_or_tau_zero_is_ce() -> None:
    logits = torch.tensor([[0.3, -1.0, 2.0]])
    target = torch.tensor([1])
    ce = F.cross_entropy(logits, target, reduction="none")
    torch.testing.assert_close(logit_adjusted_loss(logits, target, class_log_prior([7, 7, 7])), ce)
    assert torch.equal(
        logit_adjusted_loss(logits, target, class_log_prior([70, 7, 1]), tau=0.0), ce
    )


# ---------------------------------------------------------------- TRADES


def _slow_kl(logits_nat: torch.Tensor, logits_adv: torch.Tensor) -> torch.Tensor:
    p = torch.softmax(logits_nat, dim=1)
    q = torch.softmax(logits_adv, dim=1)
    out = []
    for i in range(p.shape[0]):
        total = 0.0
        for k in range(p.shape[1]):
            total += p[i, k].item() * (math.log(p[i, k].item()) - math.log(q[i, k].item()))
        out.append(total)
    return torch.tensor(out)


def test_trades_kl_hand_computed() -> None:
    # sample 0: p = [1/2, 1/2], q = [3/4, 1/4]: KL = 1/2 log(2/3) + 1/2 log 2 = 1/2 log(4/3)
    # sample 1: p = [4/5, 1/5], q = [1/2, 1/2]: KL = 0.8 log 1.6 + 0.2 log 0.4 = 0.192745
    nat = torch.tensor([[0.0, 0.0], [math.log(4.0), 0.0]])
    adv = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])
    expected = torch.tensor([0.5 * math.log(4 / 3), 0.8 * math.log(1.6) + 0.2 * math.log(0.4)])
    got = trades_kl(nat, adv)
    assert got.shape == (2,)
    torch.testing.assert_close(got, expected)
    assert got[1].item() == pytest.approx(0.192745, abs=1e-6)


def test_trades_loss_hand_computed() -> None:
    nat = torch.tensor([[0.0, 0.0], [math.log(4.0), 0.0]])
    adv = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])
    # CE(nat, [0, 1]) = [log 2, -log 0.2 = log 5]
    kl = [0.5 * math.log(4 / 3), 0.8 * math.log(1.6) + 0.2 * math.log(0.4)]
    expected = torch.tensor([math.log(2) + 6 * kl[0], math.log(5) + 6 * kl[1]])
    torch.testing.assert_close(trades_loss(nat, adv, torch.tensor([0, 1])), expected)
    torch.testing.assert_close(
        trades_loss(nat, adv, torch.tensor([0, 1]), beta=0.0),
        torch.tensor([math.log(2), math.log(5)]),
    )
    with pytest.raises(ValueError):
        trades_loss(nat, adv, torch.tensor([0, 1]), beta=-1.0)


def test_trades_kl_matches_slow_version_and_reference_reductions() -> None:
    g = torch.Generator().manual_seed(3)
    nat = torch.randn(5, 4, generator=g) * 2
    adv = torch.randn(5, 4, generator=g) * 2
    got = trades_kl(nat, adv)
    torch.testing.assert_close(got, _slow_kl(nat, adv), rtol=1e-5, atol=1e-6)
    # The reference's attack objective: KLDivLoss(size_average=False) is the batch sum ...
    ref_sum = nn.KLDivLoss(reduction="sum")(F.log_softmax(adv, dim=1), F.softmax(nat, dim=1))
    torch.testing.assert_close(got.sum(), ref_sum)
    # ... and its update term (1/B) * that sum is torch's "batchmean", the mean of ours.
    ref_batchmean = nn.KLDivLoss(reduction="batchmean")(
        F.log_softmax(adv, dim=1), F.softmax(nat, dim=1)
    )
    torch.testing.assert_close(got.mean(), ref_batchmean)
    target = torch.tensor([0, 1, 2, 3, 0])
    ref_update = F.cross_entropy(nat, target) + 6.0 * got.sum() / 5
    torch.testing.assert_close(trades_loss(nat, adv, target).mean(), ref_update)


def test_trades_kl_zero_for_equal_logits_and_finite_when_confident() -> None:
    logits = torch.tensor([[1.0, -2.0, 0.5]])
    assert trades_kl(logits, logits).abs().item() < 1e-7
    nat = torch.tensor([[200.0, 0.0]], requires_grad=True)
    adv = torch.tensor([[0.0, 200.0]], requires_grad=True)
    kl = trades_kl(nat, adv)
    kl.sum().backward()
    assert torch.isfinite(kl).all() and kl.item() == pytest.approx(200.0, rel=1e-4)
    assert nat.grad is not None and torch.isfinite(nat.grad).all()


# ---------------------------------------------------------------- RobustLT budgets


def test_class_step_sizes_scale_with_budget() -> None:
    budgets = torch.tensor([0.5, 1.5]) * EPS
    # 2/255 * [0.5, 1.5] = [1/255, 3/255]
    torch.testing.assert_close(
        class_step_sizes(budgets, EPS, 2 / 255), torch.tensor([1 / 255, 3 / 255])
    )
    assert torch.equal(class_step_sizes(torch.zeros(2), 0.0, 2 / 255), torch.zeros(2))


def test_warmup_budgets_both_starts() -> None:
    budgets = torch.tensor([0.5, 1.5]) * EPS
    # epoch 0 of W = 4: r = 0
    assert torch.equal(warmup_budgets(budgets, EPS, 0, 4), torch.zeros(2))
    torch.testing.assert_close(
        warmup_budgets(budgets, EPS, 0, 4, start="eps"), torch.full((2,), EPS)
    )
    # epoch 1: r = 1/4 -> [0.125, 0.375] eps from zero; eps + (b - eps)/4 = [0.875, 1.125] eps
    torch.testing.assert_close(
        warmup_budgets(budgets, EPS, 1, 4), torch.tensor([0.125, 0.375]) * EPS
    )
    torch.testing.assert_close(
        warmup_budgets(budgets, EPS, 1, 4, start="eps"), torch.tensor([0.875, 1.125]) * EPS
    )
    for epoch in (4, 10):
        torch.testing.assert_close(warmup_budgets(budgets, EPS, epoch, 4), budgets)
        torch.testing.assert_close(warmup_budgets(budgets, EPS, epoch, 4, start="eps"), budgets)
    torch.testing.assert_close(warmup_budgets(budgets, EPS, 0, 0), budgets)
    # the reference: robustlt_beta 0.8 of 100 epochs, 1-based epoch 41: (41 - 1) / 80 = 0.5
    torch.testing.assert_close(warmup_budgets(budgets, EPS, 40, 0.8 * 100), budgets * 0.5)
    with pytest.raises(ValueError):
        warmup_budgets(budgets, EPS, 0, 4, start="half")


# ---------------------------------------------------------------- TAET equalisation


def _slow_harl(losses: torch.Tensor, y: torch.Tensor, c: int, a: float, b: float, g: float):
    # The reference HARL's arithmetic, loop and 1e-10 guards included.
    class_losses = torch.zeros(c)
    for cls in range(c):
        mask = (y == cls).float()
        class_losses[cls] = (losses * mask).sum() / (mask.sum() + 1e-10)
    avg = class_losses.mean()
    norm = class_losses / (class_losses.sum() + 1e-10)
    return a * avg + b * ((class_losses - avg) ** 2).mean() + g * (norm**2).sum()


def test_per_class_mean_losses_hand_computed() -> None:
    got = per_class_mean_losses(torch.tensor([1.0, 3.0, 2.0, 4.0]), torch.tensor([0, 0, 1, 2]), 4)
    torch.testing.assert_close(got, torch.tensor([2.0, 2.0, 4.0, 0.0]))


def test_taet_equalisation_hand_computed() -> None:
    losses = torch.tensor([1.0, 3.0, 2.0, 4.0])
    target = torch.tensor([0, 0, 1, 2])
    # L = [2, 2, 4, 0]; mean 2; variance (0 + 0 + 4 + 4) / 4 = 2; shares [1/4, 1/4, 1/2, 0],
    # sum of squares 1/16 + 1/16 + 1/4 = 0.375
    assert taet_equalisation_loss(losses, target, 4).item() == pytest.approx(
        0.1 * 2 + 0.1 * 2 + 0.1 * 0.375
    )
    got = taet_equalisation_loss(losses, target, 4, alpha=1.0, beta=2.0, gamma=3.0)
    assert got.item() == pytest.approx(2 + 4 + 1.125)


def test_taet_equalisation_matches_reference_loop() -> None:
    g = torch.Generator().manual_seed(5)
    losses = torch.rand(12, generator=g) * 3
    target = torch.tensor([0, 0, 1, 1, 1, 2, 4, 4, 0, 1, 2, 4])  # class 3 absent
    for a, b, gm in ((0.1, 0.1, 0.1), (1.0, 0.5, 2.0)):
        torch.testing.assert_close(
            taet_equalisation_loss(losses, target, 5, a, b, gm),
            _slow_harl(losses, target, 5, a, b, gm),
        )


def test_taet_equalisation_zero_losses_and_gradient() -> None:
    zero = taet_equalisation_loss(torch.zeros(3), torch.tensor([0, 1, 1]), 3)
    assert zero.item() == 0.0
    losses = torch.tensor([1.0, 2.0, 5.0], requires_grad=True)
    taet_equalisation_loss(losses, torch.tensor([0, 1, 1]), 3).backward()
    assert losses.grad is not None and torch.isfinite(losses.grad).all()
    assert losses.grad.abs().sum() > 0


# ---------------------------------------------------------------- REAT


def _slow_rbl_weights(counts: list[int], at_counts: list[int]) -> torch.Tensor:
    e = []
    for n, m in zip(counts, at_counts, strict=True):
        beta = (n - 1.0) / n
        e.append((1.0 - beta**m) / (1.0 - beta))
    w = [1.0 / (x + 1e-5) for x in e]
    return torch.tensor([x / sum(w) * len(counts) for x in w])


def test_reat_inner_weights_hand_computed() -> None:
    # beta = [3/4, 1/2]; E = [(1 - 0.75^4) / 0.25, (1 - 0.5^2) / 0.5] = [2.734375, 1.5]
    e = [2.734375, 1.5]
    inv = [1 / (x + 1e-5) for x in e]
    expected = torch.tensor([2 * inv[0] / sum(inv), 2 * inv[1] / sum(inv)])  # [0.70849, 1.29151]
    got = reat_inner_weights([4, 2], [4, 2])
    torch.testing.assert_close(got, expected)
    assert got[0].item() == pytest.approx(0.708487, abs=1e-5)


def test_reat_inner_weights_unpredicted_class_and_single_sample_class() -> None:
    # m = 0: E = 0, weight 1e5 before rescaling; class 0: E = (1 - 0.75^6) / 0.25 = 3.288086
    got = reat_inner_weights([4, 2], [6, 0])
    inv0 = 1 / (3.288086 + 1e-5)
    torch.testing.assert_close(
        got, torch.tensor([2 * inv0 / (inv0 + 1e5), 2 * 1e5 / (inv0 + 1e5)]), rtol=1e-5, atol=1e-9
    )
    # n = 1: beta = 0, E = 1 for m >= 1 (and 0 for m = 0)
    got = reat_inner_weights([1, 3], [5, 0])
    torch.testing.assert_close(got, _slow_rbl_weights([1, 3], [5, 0]))
    assert got[1].item() == pytest.approx(2 * 1e5 / (1 / (1 + 1e-5) + 1e5))


def test_reat_inner_weights_match_reference_formula() -> None:
    counts, at = [5000, 1200, 300, 50], [6100, 300, 120, 30]
    torch.testing.assert_close(reat_inner_weights(counts, at), _slow_rbl_weights(counts, at))
    with pytest.raises(ValueError):
        reat_inner_weights([5, 5], [5])
    with pytest.raises(ValueError):
        reat_inner_weights([5, 5], [5, -1])


def test_rbl_weights_do_not_change_the_sign_of_per_sample_input_gradients() -> None:
    # The docstring's caveat: per-sample (eval-mode) models give the same sign-PGD step.
    g = torch.Generator().manual_seed(7)
    model = nn.Linear(6, 3)
    x = torch.randn(8, 6, generator=g, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 0])
    w = reat_inner_weights([100, 10, 1], [90, 15, 6])
    per_sample = F.cross_entropy(model(x), y, reduction="none")
    (g_plain,) = torch.autograd.grad(per_sample.sum(), x, retain_graph=True)
    (g_rbl,) = torch.autograd.grad(weighted_mean(per_sample, w[y], "normalized"), x)
    assert torch.equal(torch.sign(g_plain), torch.sign(g_rbl))


def test_reat_tail_classes() -> None:
    assert reat_tail_classes([5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]) == [7, 8, 9]
    assert reat_tail_classes([50, 5000, 83, 2997, 139, 1796, 232, 1077, 387, 645]) == [0, 2, 4]
    assert reat_tail_classes([9, 5, 1]) == []
    assert len(reat_tail_classes(list(range(100, 0, -1)))) == 33
    assert reat_tail_classes([10, 10]) == [1]


def _slow_tfa_reference(f: torch.Tensor, y: torch.Tensor, counts: list[int], tails: list[int]):
    # loss_functions.REAT's loop; KLDivLoss(size_average='none') resolves to reduction "mean".
    spc = torch.tensor(counts, dtype=torch.float32)
    weights = torch.sqrt(1.0 / (spc / spc.sum()))
    kl = nn.KLDivLoss(reduction="mean")
    total, counter = None, 0
    n = y.shape[0]
    for bi in range(n):
        if y[bi].item() in tails:
            idt = torch.tensor([-1.0 if y[bi] == y[bj] else 1.0 for bj in range(n)])
            w = torch.tensor([(weights[y[bi]] + weights[y[bj]]).item() for bj in range(n)])
            anchor = F.softmax(f[bi].detach().view(1, -1).tile(n).view(n, -1), 1)
            term = kl(F.log_softmax(f, 1), anchor) * idt * w
            total = term if total is None else total + term
            counter += 1
    return total.mean() / counter


def _slow_tfa_pairwise(f: torch.Tensor, y: torch.Tensor, counts: list[int], tails: list[int]):
    spc = torch.tensor(counts, dtype=torch.float32)
    weights = torch.sqrt(spc.sum() / spc)
    n = y.shape[0]
    total, counter = 0.0, 0
    for i in range(n):
        if y[i].item() not in tails:
            continue
        counter += 1
        p = F.softmax(f[i].detach(), 0)
        for j in range(n):
            k = (p * (torch.log(p) - F.log_softmax(f[j], 0))).sum()
            sign = -1.0 if y[i] == y[j] else 1.0
            total = total + sign * (weights[y[i]] + weights[y[j]]) * k
    return total / (counter * n)


def test_tail_feature_alignment_hand_computed() -> None:
    # p_0 = [1/2, 1/2], q_1 = [3/4, 1/4]: K_01 = 1/2 log(4/3) = 0.143841, K_00 = 0
    # w = sqrt(4 / [3, 1]) = [1.154701, 2]; anchor 0 (class 1): s W = [-4, +3.154701]
    f = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    y = torch.tensor([1, 0])
    k01 = 0.5 * math.log(4 / 3)
    w01 = 2.0 + math.sqrt(4 / 3)
    pairwise = tail_feature_alignment(f, y, [3, 1], [1], mode="pairwise")
    assert pairwise.item() == pytest.approx(w01 * k01 / 2)  # 0.226887
    reference = tail_feature_alignment(f, y, [3, 1], [1])
    # (1/(A N)) * (K_00 + K_01) / (N D) * (-4 + w01) = 1/2 * 0.0359603 * -0.845299
    assert reference.item() == pytest.approx(0.5 * (k01 / 4) * (w01 - 4))
    assert reference.item() == pytest.approx(-0.0151985, abs=1e-6)


@pytest.mark.filterwarnings("ignore:.*divides the total loss by both")
def test_tail_feature_alignment_matches_reference_loops() -> None:
    g = torch.Generator().manual_seed(11)
    f = torch.randn(9, 5, generator=g).relu() * 3
    y = torch.tensor([0, 1, 2, 2, 0, 3, 3, 1, 0])
    counts, tails = [400, 100, 30, 10], [2, 3]
    torch.testing.assert_close(
        tail_feature_alignment(f, y, counts, tails), _slow_tfa_reference(f, y, counts, tails)
    )
    torch.testing.assert_close(
        tail_feature_alignment(f, y, counts, tails, mode="pairwise"),
        _slow_tfa_pairwise(f, y, counts, tails),
    )
    # the anchor distribution is detached in both: the gradients agree too
    for mode, slow in (("reference", _slow_tfa_reference), ("pairwise", _slow_tfa_pairwise)):
        fast_f = f.clone().requires_grad_()
        slow_f = f.clone().requires_grad_()
        tail_feature_alignment(fast_f, y, counts, tails, mode=mode).backward()
        slow(slow_f, y, counts, tails).backward()
        torch.testing.assert_close(fast_f.grad, slow_f.grad)


def test_tail_feature_alignment_without_anchor_is_zero_with_graph() -> None:
    f = torch.randn(4, 3, requires_grad=True)
    got = tail_feature_alignment(f, torch.tensor([0, 0, 1, 1]), [10, 5, 1], [2])
    assert got.item() == 0.0 and got.requires_grad
    got.backward()
    with pytest.raises(ValueError):
        tail_feature_alignment(f, torch.tensor([0, 0, 1, 1]), [10, 5, 1], [2], mode="sum")


# ---------------------------------------------------------------- RoBal


def test_robal_cosine_hand_computed() -> None:
    # z = [3, 4] / 5; w_0 = [1, 0] / (1 + 0.5), w_1 = [0, 2] / (2 + 0.5): cos = [0.4, 0.64]
    got = robal_cosine(
        torch.tensor([[3.0, 4.0]]), torch.tensor([[1.0, 0.0], [0.0, 2.0]]), gamma=0.5
    )
    torch.testing.assert_close(got, torch.tensor([[0.4, 0.64]]))
    with pytest.raises(ValueError):
        robal_cosine(torch.ones(1, 2), torch.ones(2, 2), gamma=-1.0)


def test_robal_cosine_without_gamma_is_ldam_cosine_head() -> None:
    torch.manual_seed(0)
    head = CosineHead(5, 3, scale=10.0)
    with torch.no_grad():
        head.weight.mul_(torch.tensor([[0.5], [2.0], [3.0]]))  # rows off unit norm
    z = torch.randn(4, 5)
    torch.testing.assert_close(10.0 * robal_cosine(z, head.weight, gamma=0.0), head(z))
    # with the default gamma the logits shrink by ||w|| / (||w|| + gamma) < 1
    assert (robal_cosine(z, head.weight).abs() < robal_cosine(z, head.weight, 0.0).abs()).all()


def test_robal_train_and_eval_logits_hand_computed() -> None:
    cos = torch.tensor([[0.4, 0.64]])
    log_prior = class_log_prior([300, 100])
    # y = 1, m_1 = 0.1: [10 * 0.4 + 1.2 log 0.75, 10 * (0.64 - 0.1) + 1.2 log 0.25]
    got = robal_train_logits(cos, torch.tensor([1]), torch.tensor([0.2, 0.1]), 10.0, log_prior, 1.2)
    expected = torch.tensor([[4 + 1.2 * math.log(0.75), 5.4 + 1.2 * math.log(0.25)]])
    torch.testing.assert_close(got, expected)  # [3.654783, 3.736447]
    # eval: [4 - 0.1 log 0.75, 6.4 - 0.1 log 0.25] = [4.028768, 6.538629]
    torch.testing.assert_close(
        robal_eval_logits(cos, 10.0, log_prior, 0.1),
        torch.tensor([[4 - 0.1 * math.log(0.75), 6.4 - 0.1 * math.log(0.25)]]),
    )
    # no margin, no prior: just the scaled cosines
    plain = robal_train_logits(cos, torch.tensor([1]), torch.zeros(2), 10.0, log_prior, 0.0)
    torch.testing.assert_close(plain, 10.0 * cos)
