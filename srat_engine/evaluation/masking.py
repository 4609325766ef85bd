"""The gradient-masking flag: AutoAttack far below PGD-20 means PGD-20 was fooled.

Gradient masking (obfuscated gradients, Athalye et al. 2018) makes a model look robust to
gradient attacks such as PGD without making it robust: the input gradient is uninformative
(flat, noisy or shattered), so PGD's sign steps wander while adversarial examples still exist
nearby. AutoAttack (Croce & Hein, ICML 2020) is built to see through this: APGD adapts its step
size, APGD-T uses the scale-invariant targeted DLR loss, FAB-T finds minimal perturbations from
a linearisation, and Square needs no gradient at all.

The threshold. Croce & Hein evaluated more than 50 published models with AutoAttack; for
sound adversarial training (Madry et al., TRADES) the robust accuracy AutoAttack measures is
a few points (about 1-4) below the PGD numbers the papers reported, the strength gap between a
fixed-step PGD and a tuned ensemble. Their abstract: lower than reported "often by more than
10%", which is where they identified broken defenses. So:

    suspected  <=>  rob_PGD-20 - rob_AA > threshold,   threshold = 10 percentage points,

both measured on the same examples with the same checkpoint. A gap of 3-10 points says PGD-20
is a weak attack for this model (report the AutoAttack number); above 10 points the PGD-20
numbers of the run should not be trusted at all. On small subsets one example is 100/n points:
with n = 50 a 10-point gap is 5 examples, so read the flag on a small subset as a hint.
"""

from __future__ import annotations

import math
from typing import Any

MASKING_THRESHOLD: float = 10.0
"""Percentage points of overall robust accuracy (see the module docstring for why 10)."""


def gradient_masking_suspected(
    pgd_rob: float, aa_rob: float, threshold: float = MASKING_THRESHOLD
) -> bool:
    """True when PGD-20's robust accuracy exceeds AutoAttack's by more than ``threshold``.

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
    pgd_rob: float, aa_rob: float, threshold: float = MASKING_THRESHOLD
) -> dict[str, Any]:
    """What eval.json keeps next to an AutoAttack result: both numbers, the gap, the verdict."""
    return {
        "suspected": gradient_masking_suspected(pgd_rob, aa_rob, threshold),
        "pgd20_overall": pgd_rob,
        "autoattack_overall": aa_rob,
        "gap": pgd_rob - aa_rob,
        "threshold": threshold,
    }
