"""Per-class constants a run fixes from its training class counts before it trains: class
weights, LDAM and RoBal margins, RobustLT's attack budgets.

They are resolved once, with the config (`config.resolve`), and stored as lists in the run
directory; the trainer turns them into tensors. Plain Python in float64 on purpose: checking a
config (every edit in the new-run form, `srat run` launching a study) never imports torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def check_class_counts(counts: Sequence[int], who: str) -> None:
    """ValueError unless `counts` holds at least one count and every count is positive (`who`:
    the function that needs them, named in the message). The input every per-class formula
    takes, here and in the losses (log prior, REAT's weights)."""
    if len(counts) == 0:
        raise ValueError(f"{who} needs at least one class count")
    if any(n <= 0 for n in counts):
        raise ValueError(f"class counts must be positive, got {list(counts)}")


def summing_to_class_count(weights: Sequence[float]) -> list[float]:
    """Per-class weights w rescaled to sum to C, their number: w_j * C / sum_k w_k.

    LDAM-DRW's normalisation of its class-balanced weights, and so of every class weighting a
    run trains with: under the batch-mean reduction of Eq. 5 only the weights' ratios, not
    their scale, then differ between weightings (SRAT Figure 5 takes "78", the class-balanced
    tail-to-head ratio of Step-100, as the class-balanced run).
    """
    try:
        values = [float(w) for w in weights]
    except (TypeError, ValueError):
        raise ValueError(f"class weights must be a list of numbers: {weights}") from None
    if not values or not all(math.isfinite(w) for w in values):
        raise ValueError(f"class weights must be a non-empty list of finite numbers: {weights}")
    try:
        total = math.fsum(values)
    except OverflowError:  # finite weights whose sum is not (1e308 twice)
        raise ValueError(f"class weights must sum to a finite number: {weights}") from None
    if any(w < 0 for w in values) or total <= 0:
        raise ValueError(f"class weights must be >= 0 with a positive sum: {weights}")
    return [w * (len(values) / total) for w in values]


def scaled_to_head(weights: Sequence[float], counts: Sequence[int]) -> list[float]:
    """Per-class weights w rescaled so that the most frequent class weighs 1: w_j / w_h, h the
    class of the largest count n_h (the first such class on a tie).

    How SRAT states its weights (Figure 5: head classes 1, tail 10 to 200, "78" the
    class-balanced tail/head ratio of Step-100; Figure 2: ratios 1:1 to 150:1). Under the
    batch-mean reduction of Eq. 5 the scale is not neutral: a batch's weights average
    sum_c pi_c w_c, which weighs the weighted term against lambda L_sep; for CIFAR-10
    Exp-100's class-balanced weights 3.38 here, 0.171 summing to C (`summing_to_class_count`).
    """
    check_class_counts(counts, "scaled_to_head")
    if len(weights) != len(counts):
        raise ValueError(f"{len(weights)} class weights for {len(counts)} class counts")
    head = max(range(len(counts)), key=lambda cls: (counts[cls], -cls))
    if not (math.isfinite(weights[head]) and weights[head] > 0):
        raise ValueError(
            f"the most frequent class (class {head}) must have a weight > 0 to scale to, "
            f"got {weights[head]}"
        )
    return [w / weights[head] for w in weights]


def class_balanced_weights(counts: Sequence[int], beta: float = 0.9999) -> list[float]:
    """Per-class weights (Cui et al. 2019, "Class-Balanced Loss Based on Effective Number of
    Samples"): w_j ∝ 1 / E_j with E_j = (1 - beta^n_j) / (1 - beta), summing to C.

    E_j is the effective number of class j; the weights are rescaled to sum to C, as LDAM-DRW
    does (`summing_to_class_count`). ``beta = 0`` gives all ones; ``beta = 1`` is the limit
    E_j = n_j (inverse frequency). DRCB and SRAT apply them from the reweighting epoch T_d
    (`training.schedule.reweighting_active`), CB-Reweight from the start.
    """
    check_class_counts(counts, "class_balanced_weights")
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must lie in [0, 1], got {beta}")
    if beta == 0.0:
        return [1.0] * len(counts)  # E_j = 1 - 0^n_j = 1
    if beta == 1.0:
        effective = [float(n) for n in counts]
    else:
        # -expm1(n log beta) = 1 - beta^n without cancellation when beta is close to 1
        log_beta = math.log(beta)
        effective = [-math.expm1(n * log_beta) / (1.0 - beta) for n in counts]
    return summing_to_class_count([1.0 / e for e in effective])


def ldam_margins(counts: Sequence[int], max_margin: float = 0.5) -> list[float]:
    """LDAM's per-class margins (Cao et al. 2019): m_j = K / n_j^(1/4), K chosen so that
    max_j m_j = max_margin.

    The rarest class gets ``max_margin``; the others shrink with the fourth root of their count.
    """
    check_class_counts(counts, "ldam_margins")
    if max_margin < 0:
        raise ValueError(f"max_margin must be >= 0, got {max_margin}")
    inv_root = [float(n) ** -0.25 for n in counts]
    largest = max(inv_root)
    return [r * (max_margin / largest) for r in inv_root]


def robal_margins(
    counts: Sequence[int], m: float = 0.1, tau_m: float = 0.0, scale: float = 10.0
) -> list[float]:
    """RoBal's per-class margins in cosine units (Wu et al. 2021, "Adversarial Robustness
    under Long-Tailed Distribution"): m_c = m + tau_m * log(n_c / n_min) / s.

    Reference configs: RoBal-N (CIFAR-10-LT) m = 0.1, tau_m = 0, s = 10; RoBal-R m = 0.1,
    tau_m = 0.3, s = 10. The rarest class gets m; frequent classes get more.
    """
    check_class_counts(counts, "robal_margins")
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    smallest = min(counts)
    return [m + tau_m * math.log(n / smallest) / scale for n in counts]


def class_budgets(counts: Sequence[int], eps: float, alpha: float) -> list[float]:
    """RobustLT's class-wise l_inf budgets, CPB (Zhang et al. 2026, "Taming the Long Tail:
    Rebalancing Adversarial Training via Adaptive Perturbation", arXiv 2605.13395):

        eps_c = (1 - alpha) * eps + t * s_c * eps,    s_c = sqrt(log(n_max / n_c))

    with t chosen so that the frequency-weighted mean budget is eps. Writing π_c = n_c / N:

        Σ_c π_c eps_c = (1 - alpha) eps Σ_c π_c + t eps Σ_c π_c s_c
                      = (1 - alpha) eps + t eps S,              S = Σ_c π_c s_c
        Σ_c π_c eps_c = eps  ⇔  t S = alpha  ⇔  t = alpha / S

    (the reference's ``tau``). The most frequent classes (s_c = 0) get (1 - alpha) eps, the
    rarer ones more, growing with sqrt(log) of the imbalance. ``alpha`` in [0, 1] keeps every
    budget >= 0; the reference configs use alpha = 0.3. The attack's warm-up and step sizes
    are `attacks.class_budget`'s.

    S = 0 exactly when every n_c = n_max (a balanced set): no t meets the constraint unless
    alpha = 0, and every budget is eps here. This is a discontinuity the reference leaves open
    (it would divide by zero): near-balanced counts still give the n_max classes (1 - alpha) eps.
    """
    check_class_counts(counts, "class_budgets")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    n_max, total = max(counts), sum(counts)
    if alpha == 0.0 or all(n == n_max for n in counts):
        return [float(eps)] * len(counts)
    s = [math.sqrt(math.log(n_max / n)) for n in counts]
    t = alpha / math.fsum(n / total * s_c for n, s_c in zip(counts, s, strict=True))
    return [(1.0 - alpha) * eps + t * s_c * eps for s_c in s]
