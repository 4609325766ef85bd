"""RobustLT's class-wise perturbation budget (CPB) and its warm-up (AIW) (Zhang et al. 2026,
"Taming the Long Tail: Rebalancing Adversarial Training via Adaptive Perturbation", CVPR 2026,
arXiv 2605.13395; reference code github zhang-lilin/RobustLT ``core/methods/robustlt.py``).

Per sample, the attack uses eps_{y_i} and step_{y_i}. The reference's random start still draws
U(-eps, eps) with the GLOBAL eps, clipped to [0, 1] only; the first step's projection takes it
into each class's ball (`pgd_linf`'s ``start_eps``, which training's attack follows)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from srat_engine.class_counts import check_class_counts

WARMUP_STARTS: tuple[str, ...] = ("zero", "eps")


def class_budgets(counts: Sequence[int], eps: float, alpha: float) -> Tensor:
    """Per-class l_inf budgets, shape [C]:

        eps_c = (1 - alpha) * eps + t * s_c * eps,    s_c = sqrt(log(n_max / n_c))

    with t chosen so that the frequency-weighted mean budget is eps. Writing π_c = n_c / N:

        Σ_c π_c eps_c = (1 - alpha) eps Σ_c π_c + t eps Σ_c π_c s_c
                      = (1 - alpha) eps + t eps S,              S = Σ_c π_c s_c
        Σ_c π_c eps_c = eps  ⇔  t S = alpha  ⇔  t = alpha / S

    (the reference's ``tau``). The most frequent classes (s_c = 0) get (1 - alpha) eps, the
    rarer ones more, growing with sqrt(log) of the imbalance. ``alpha`` in [0, 1] keeps every
    budget >= 0; the reference configs use alpha = 0.3.

    S = 0 exactly when every n_c = n_max (a balanced set): no t meets the constraint unless
    alpha = 0, and every budget is eps here. This is a discontinuity the reference leaves open
    (it would divide by zero): near-balanced counts still give the n_max classes (1 - alpha) eps.
    """
    check_class_counts(counts, "class_budgets")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    n = torch.tensor(list(counts), dtype=torch.float64)
    if alpha == 0.0 or bool((n == n.max()).all()):
        return torch.full((len(counts),), float(eps))
    s = torch.log(n.max() / n).sqrt()
    t = alpha / float(((n / n.sum()) * s).sum())
    budgets = (1.0 - alpha) * eps + t * s * eps
    return budgets.to(torch.get_default_dtype())


def class_step_sizes(budgets: Tensor, eps: float, step_size: float) -> Tensor:
    """Per-class PGD step sizes [C]: step_size * eps_c / eps, so every class takes the same
    number of steps to cross its own ball (the reference scales the warmed-up budget this way).
    ``eps = 0`` gives all zeros (no perturbation, no step)."""
    if eps < 0 or step_size < 0:
        raise ValueError(f"eps and step_size must be >= 0, got {eps}, {step_size}")
    if eps == 0:
        return torch.zeros_like(budgets)
    return budgets * (step_size / eps)


def warmup_budgets(
    budgets: Tensor, eps: float, epoch: int, warmup_epochs: float, start: str = "zero"
) -> Tensor:
    """Budgets at 0-based ``epoch`` under a linear warm-up over the first ``warmup_epochs``:

        r = min(epoch / W, 1)              (W = warmup_epochs; W <= 0: no warm-up, r = 1)
        start = "zero":  eps_c(epoch) = r * eps_c                    (the paper's AIW, the code)
        start = "eps":   eps_c(epoch) = eps + r * (eps_c - eps)      (issue #14's wording)

    The reference computes r = min((e - 1) / (beta * E), 1) with 1-based epochs e and
    beta = ``robustlt_beta`` (0.8 in its configs) of E total epochs: W = beta * E here, and the
    first epoch (r = 0) trains on clean inputs under "zero". W may be fractional, as beta * E
    is. The issue asked for "eps"; the paper and code ramp from 0, so "zero" is the default.
    """
    if start not in WARMUP_STARTS:
        raise ValueError(f"unknown warm-up start {start!r}; expected one of {WARMUP_STARTS}")
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    r = 1.0 if warmup_epochs <= 0 else min(epoch / warmup_epochs, 1.0)
    if start == "zero":
        return budgets * r
    return eps + r * (budgets - eps)
