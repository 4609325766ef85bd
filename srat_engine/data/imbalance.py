"""Long-tailed class counts and the index subsets that realise them.

All functions are pure and deterministic given their arguments (subsets use their own
``torch.Generator``, never the global RNG), so a run is reproducible from its seed.
"""

from __future__ import annotations

import math

import torch

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


def _as_labels(labels: torch.Tensor) -> torch.Tensor:
    if labels.dim() != 1:
        raise SratError(f"labels must be a 1-D tensor, got shape {tuple(labels.shape)}")
    return labels.detach().to("cpu", torch.int64)


def _choose(idx: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """k distinct elements of ``idx`` uniformly at random (a random permutation prefix)."""
    return idx[torch.randperm(idx.numel(), generator=gen)[:k]]


def imbalanced_indices(labels: torch.Tensor, counts: list[int], seed: int) -> torch.Tensor:
    """Indices of a subset with exactly ``counts[c]`` samples of each class c.

    Each class's subset is drawn uniformly without replacement with a ``torch.Generator``
    seeded by ``seed`` (independent of the global RNG). Returns sorted int64 indices.
    """
    y = _as_labels(labels)
    gen = torch.Generator().manual_seed(int(seed))
    chosen: list[torch.Tensor] = []
    for c, k in enumerate(counts):
        if k < 0:
            raise SratError(f"class {c}: asked for a negative count {k}")
        idx = torch.nonzero(y == c, as_tuple=False).flatten()
        if idx.numel() < k:
            raise SratError(
                f"class {c}: asked for {k} samples but only {idx.numel()} are available"
            )
        chosen.append(_choose(idx, k, gen))
    if not chosen:
        return torch.empty(0, dtype=torch.int64)
    return torch.sort(torch.cat(chosen)).values


def balanced_subset_indices(labels: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """Indices of up to ``per_class`` samples of every class present: min(per_class, n_c) each.

    Deterministic per ``seed`` (own ``torch.Generator``); returns sorted int64 indices.
    """
    if per_class < 0:
        raise SratError(f"per_class must be >= 0, got {per_class}")
    y = _as_labels(labels)
    gen = torch.Generator().manual_seed(int(seed))
    chosen: list[torch.Tensor] = []
    for c in torch.unique(y).tolist():
        idx = torch.nonzero(y == c, as_tuple=False).flatten()
        chosen.append(_choose(idx, min(per_class, idx.numel()), gen))
    if not chosen:
        return torch.empty(0, dtype=torch.int64)
    return torch.sort(torch.cat(chosen)).values
