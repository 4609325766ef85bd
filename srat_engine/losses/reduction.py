"""Turning per-sample losses into one scalar, with optional per-sample weights."""

from __future__ import annotations

from torch import Tensor

REDUCTION_MODES: tuple[str, ...] = ("mean", "normalized")


def weighted_mean(per_sample: Tensor, weights: Tensor | None, mode: str = "mean") -> Tensor:
    """Reduce per-sample losses ``L`` of shape [N] with weights ``w`` of shape [N].

    ``"mean"``: (1/N) Σ_i w_i L_i, SRAT's Eq. 5 / Algorithm 1 and GAIRAT's ``loss.mul(w).mean()``.
    ``"normalized"``: Σ_i w_i L_i / Σ_i w_i, what ``F.cross_entropy(weight=...)`` computes (the
    LDAM-DRW reference's CE and LDAM losses). ``weights=None`` gives the plain mean in both modes.
    """
    if mode not in REDUCTION_MODES:
        raise ValueError(f"unknown reduction mode {mode!r}; expected one of {REDUCTION_MODES}")
    if weights is None:
        return per_sample.mean()
    if weights.shape != per_sample.shape:
        raise ValueError(
            f"weights shape {tuple(weights.shape)} != losses shape {tuple(per_sample.shape)}"
        )
    weighted = weights * per_sample
    if mode == "mean":
        return weighted.mean()
    return weighted.sum() / weights.sum()
