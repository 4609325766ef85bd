"""GAIRAT's geometry-aware instance weights (Zhang et al. 2021, "Geometry-aware
Instance-reweighted Adversarial Training", reference ``GAIR.py``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

GAIR_FUNCS: tuple[str, ...] = ("tanh", "sigmoid", "discrete")


def gair_weights(kappa: Tensor, num_steps: int, lam: float, func: str = "tanh") -> Tensor:
    """Per-sample weights [N] from kappa (PGD steps still classified correctly, 0..num_steps).

    With h = num_steps // 2 (integer division, as the reference's ``int(num_steps/2)``):
        tanh:     w = (1 + tanh(lam + 5 (h - kappa) / h)) / 2
        sigmoid:  w = sigmoid(lam + 5 (h - kappa) / h)
        discrete: w = (num_steps + 1 - kappa) / (num_steps + 1)
    then w ← N w / Σ w, so the weights average 1. ``func`` is case-insensitive.
    """
    name = func.lower()
    if name not in GAIR_FUNCS:
        raise ValueError(f"unknown GAIR weight function {func!r}; expected one of {GAIR_FUNCS}")
    if num_steps < 0:
        raise ValueError(f"num_steps must be >= 0, got {num_steps}")
    k = kappa.to(torch.float64)
    n = k.shape[0]
    if name == "discrete":
        raw = (num_steps + 1 - k) / (num_steps + 1)
        weights = raw * (n / raw.sum())
    else:
        h = num_steps // 2
        if h == 0:
            raise ValueError(f"GAIR {name} weights need num_steps >= 2, got {num_steps}")
        x = lam + 5.0 * (h - k) / h
        # (1 + tanh(x)) / 2 = sigmoid(2x). Normalising in log space keeps very negative lam
        # (every raw weight underflowing to 0) from becoming 0 / 0.
        log_raw = F.logsigmoid(2.0 * x if name == "tanh" else x)
        weights = n * torch.softmax(log_raw, dim=0)
    return weights.to(torch.get_default_dtype())
