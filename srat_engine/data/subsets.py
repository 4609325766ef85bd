"""The index subsets that realise class counts: a long-tailed training set, a class-balanced
evaluation subset.

Deterministic given their arguments: each draw uses its own ``torch.Generator`` seeded from
the arguments, never the global RNG, so a run is reproducible from its seed.
"""

from __future__ import annotations

import torch

from srat_engine.errors import SratError


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
