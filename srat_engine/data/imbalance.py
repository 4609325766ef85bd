"""Long-tailed class counts: how many training examples each class keeps under an imbalance
profile. Plain Python, as the config resolves them (`data.subsets` draws the examples)."""

from __future__ import annotations

import math

from srat_engine.errors import SratError

IMBALANCE_KINDS: tuple[str, ...] = ("none", "step", "exp")

# floor() of a product such as 5000 * 100**(-1/9) can land just below an integer due to
# float rounding; nudging by this much keeps exact cases exact without changing others.
_FLOOR_EPS = 1e-6


def class_counts(imbalance: str, ratio: float, n_max: int, num_classes: int) -> list[int]:
    """Number of training samples per class for an imbalance profile.

    - ``"none"``: n_i = n_max for all i.
    - ``"step"`` (Buda et al. 2018, "A systematic study of the class imbalance problem in
      CNNs"; the step profile of the SRAT paper): the first C - floor(C/2) classes keep
      n_max, the last floor(C/2) get floor(n_max / ratio).
    - ``"exp"`` (Cui et al. 2019, "Class-Balanced Loss"; LDAM-DRW, Cao et al. 2019):
      n_i = floor(n_max * ratio^(-i / (C - 1))), i = 0..C-1.

    ``ratio`` = n_max / n_min must be finite and >= 1; every class keeps at least one sample.
    """
    if imbalance not in IMBALANCE_KINDS:
        raise SratError(
            f"unknown imbalance {imbalance!r}: expected one of {', '.join(IMBALANCE_KINDS)}"
        )
    if isinstance(n_max, bool) or not isinstance(n_max, int) or n_max < 1:
        raise SratError(f"n_max must be an integer >= 1, got {n_max!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise SratError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    try:
        r = float(ratio)
    except (TypeError, ValueError):
        raise SratError(f"imbalance ratio must be a number >= 1, got {ratio!r}") from None
    if not math.isfinite(r) or r < 1.0:
        raise SratError(f"imbalance ratio must be a finite number >= 1, got {ratio!r}")

    if imbalance == "none" or num_classes == 1:
        return [n_max] * num_classes

    if imbalance == "step":
        n_minor = math.floor(n_max / r + _FLOOR_EPS)
        counts = [n_max] * (num_classes - num_classes // 2) + [n_minor] * (num_classes // 2)
    else:
        counts = [
            math.floor(n_max * r ** (-i / (num_classes - 1)) + _FLOOR_EPS)
            for i in range(num_classes)
        ]

    if min(counts) < 1:
        raise SratError(
            f"{imbalance} imbalance with ratio {r:g} and n_max {n_max} leaves a class with 0 "
            f"samples (n_max / ratio = {n_max / r:.3g} < 1): lower the ratio or raise n_max"
        )
    return counts


def under_represented_classes(counts: list[int]) -> list[int]:
    """The least-frequent half of the classes: floor(C/2) of them (at least 1 when C >= 2).

    Ties count the higher class index as less frequent, matching the step and exp profiles
    where the tail sits at the end. Returned sorted ascending.
    """
    c = len(counts)
    if c < 2:
        return []
    k = max(1, c // 2)
    # ascending by count, then descending by index: the first k are the tail
    order = sorted(range(c), key=lambda i: (counts[i], -i))
    return sorted(order[:k])
