"""Focal loss (Lin et al. 2017, "Focal Loss for Dense Object Detection")."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def focal_loss(logits: Tensor, target: Tensor, gamma: float) -> Tensor:
    """Per-sample focal loss, shape [N]: FL = (1 - p_t)^gamma * CE.

    CE = -log p_t and p_t = softmax(logits)[target]. ``gamma = 0`` is exactly cross entropy.
    """
    if gamma < 0:
        raise ValueError(f"focal gamma must be >= 0, got {gamma}")
    ce = F.cross_entropy(logits, target, reduction="none")
    if gamma == 0:
        return ce
    # p_t comes from the UNweighted CE. LDAM-DRW's reference FocalLoss derives p from the
    # class-weighted CE (p = exp(-w_y * CE)), which distorts the modulating factor for reweighted
    # classes; class weights here are applied afterwards by `weighted_mean`.
    # 1 - p_t = -expm1(-CE) keeps precision for well-classified samples (CE near 0); the floor
    # stops a 0 ** (gamma - 1) = inf gradient for gamma < 1 when CE underflows to exactly 0.
    one_minus_pt = (-torch.expm1(-ce)).clamp_min(torch.finfo(ce.dtype).tiny)
    return one_minus_pt.pow(gamma) * ce
