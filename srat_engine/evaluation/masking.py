"""The gradient-masking flag: AutoAttack, or PGD-20 on scaled logits, far below PGD-20.

Gradient masking (obfuscated gradients, Athalye et al. 2018) makes a model look robust to
gradient attacks such as PGD without making it robust: the input gradient is uninformative
(flat, noisy or shattered), so PGD's sign steps wander while adversarial examples still exist
nearby. Two attacks on the same examples see through it:

AutoAttack (Croce & Hein, ICML 2020): APGD adapts its step size, APGD-T uses the
scale-invariant targeted DLR loss, FAB-T finds minimal perturbations from a linearisation, and
Square needs no gradient at all.

The logit-scaled PGD: PGD-20 exactly as the run's own (same eps, step, steps, random start,
seed) on ``CE(a * z(x'), y)`` for each factor a in ``LOGIT_SCALES``; an example counts as robust
only if it survives every factor. Cross-entropy is not invariant to the scale of the logits z
(Croce & Hein 2020 introduce their DLR loss for this reason), and a head's scale (a temperature,
LDAM's or a cosine head's s) can defeat plain PGD for a reason that has nothing to do with
robustness:

- large logits saturate the softmax: d CE / d z = softmax(z) - onehot(y), and in fp32
  ``exp(-m)`` is 0 for a margin ``m = z_y - max_{j != y} z_j`` above about 104 (subnormal
  from 87), so the input gradient is exactly 0 and sign-PGD never leaves its random start.
  A factor below 1 brings the margins back into range: 0.1 for srat's own cosine/LDAM head
  (s = 30: margins up to 2s = 60, where d CE / d z_j ~ exp(-60) ~ 1e-26 sits near fp32's
  limits once multiplied back through the network; scaled, at most 6), 0.01 for heads or
  temperatures up to about 100 times larger (margins up to about 10^4).
- small logits (a temperature above 1, a small s) leave the softmax nearly uniform, so the CE
  gradient averages the logit gradients of all wrong classes instead of following the closest
  one; a factor above 1 sharpens it (as a grows, CE(a z) / a tends to the margin loss
  ``max_{j != y} z_j - z_y``). 10 is the factor of AT-BSL's evaluation (Yue et al., CVPR 2024,
  github NISPLab/AT-BSL, eval.py lines 164-172: its PGD-20 on ``CrossEntropyLoss()(alpha *
  model(x), y)`` with ``alpha=10.``, run with ``--lsa``).

For a model without masking the factor changes the ascent direction little, so the scaled PGD
agrees with PGD-20 up to the few points any two attacks differ by; a model whose robust
accuracy drops by more than the threshold under scaling was protected by its logit scale.

The threshold. Croce & Hein evaluated more than 50 published models with AutoAttack; for
sound adversarial training (Madry et al., TRADES) the robust accuracy AutoAttack measures is
a few points (about 1-4) below the PGD numbers the papers reported, the strength gap between a
fixed-step PGD and a tuned ensemble. Their abstract: lower than reported "often by more than
10%", which is where they identified broken defenses. So:

    suspected  <=>  rob_PGD-20 - min(rob_AA, rob_scaled) > threshold,   threshold = 10 points,

all measured on the same examples with the same checkpoint (one threshold: the scaled PGD is
the weaker of the two attacks, so a gap it opens is at least as telling). A gap of 3-10 points
says PGD-20 is a weak attack for this model (report the AutoAttack number); above 10 points
the PGD-20 numbers of the run should not be trusted at all. On small subsets one example is
100/n points: with n = 50 a 10-point gap is 5 examples, so read the flag on a small subset as
a hint.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from srat_engine.attacks import attack_mode, pgd_linf

MASKING_THRESHOLD: float = 10.0
"""Percentage points of overall robust accuracy (see the module docstring for why 10)."""

LOGIT_SCALES: tuple[float, ...] = (10.0, 0.1, 0.01)
"""The logit-scaled PGD's factors: AT-BSL's 10, and 0.1, 0.01 against saturated softmaxes
(see the module docstring)."""


def scale_key(scale: float) -> str:
    """How eval.json names one factor: 10.0 -> "10", 0.01 -> "0.01"."""
    return f"{scale:g}"


def logit_scaled_hits(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    step_size: float,
    steps: int,
    generator: torch.Generator | None = None,
    clip: tuple[float, float] | None = (0.0, 1.0),
    scales: Sequence[float] = LOGIT_SCALES,
) -> Tensor:
    """bool [len(scales), N]: row k says which examples PGD on ``CE(scales[k] * model(x'), y)``
    (random start, the given budget) failed to break, judged on the unscaled model in eval
    mode. The logit-scaled PGD's robust examples are the columns that hold everywhere."""
    if not scales:
        raise ValueError("the logit-scaled PGD needs at least one scale")
    rows = []
    with attack_mode(model, "eval"):
        for scale in scales:
            x_adv = pgd_linf(
                model,
                x,
                y,
                eps=eps,
                step_size=step_size,
                steps=steps,
                random_start=True,
                generator=generator,
                clip=clip,
                logit_scale=scale,
            ).x_adv
            with torch.no_grad():
                rows.append(model(x_adv).argmax(dim=1) == y)
    return torch.stack(rows)


def gradient_masking_suspected(
    pgd_rob: float, aa_rob: float, threshold: float = MASKING_THRESHOLD
) -> bool:
    """True when PGD-20's robust accuracy exceeds a stronger attack's (AutoAttack's, or the
    logit-scaled PGD's) by more than ``threshold``.

    Both in percent on the same examples: ``pgd_rob - aa_rob > threshold``. A gap of exactly
    ``threshold`` is not flagged. Raises ValueError for a negative or non-finite threshold or
    non-finite accuracies (a NaN would silently compare False).
    """
    if not math.isfinite(threshold) or threshold < 0:
        raise ValueError(f"masking threshold must be a finite number >= 0, got {threshold}")
    if not (math.isfinite(pgd_rob) and math.isfinite(aa_rob)):
        raise ValueError(f"robust accuracies must be finite, got {pgd_rob} and {aa_rob}")
    return pgd_rob - aa_rob > threshold


def masking_record(
    pgd_rob: float,
    aa_rob: float,
    threshold: float = MASKING_THRESHOLD,
    *,
    scaled_rob: float | None = None,
) -> dict[str, Any]:
    """What eval.json keeps next to an AutoAttack result: the numbers, the gaps, the verdict.

    ``scaled_rob``: the logit-scaled PGD's robust accuracy on the same examples. ``suspected``
    is True when AutoAttack or the logit-scaled PGD is more than ``threshold`` below PGD-20;
    ``gap`` stays AutoAttack's, ``logit_scaled_gap`` is the scaled PGD's (the logit_scaled_*
    fields are absent without ``scaled_rob``, as in results stored before the check existed).
    """
    by_aa = gradient_masking_suspected(pgd_rob, aa_rob, threshold)
    record: dict[str, Any] = {
        "suspected": by_aa,
        "pgd20_overall": pgd_rob,
        "autoattack_overall": aa_rob,
        "gap": pgd_rob - aa_rob,
        "threshold": threshold,
        "autoattack_suspected": by_aa,
    }
    if scaled_rob is not None:
        by_scaled = gradient_masking_suspected(pgd_rob, scaled_rob, threshold)
        record.update(
            suspected=by_aa or by_scaled,
            logit_scaled_overall=scaled_rob,
            logit_scaled_gap=pgd_rob - scaled_rob,
            logit_scaled_suspected=by_scaled,
        )
    return record
