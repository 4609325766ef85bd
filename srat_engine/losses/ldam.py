"""LDAM: label-distribution-aware margin loss (Cao et al. 2019, "Learning Imbalanced Datasets
with Label-Distribution-Aware Margin Loss", reference code LDAM-DRW ``losses.LDAMLoss``). Its
margins m_j are `srat_engine.per_class.ldam_margins`, resolved with the config."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def ldam_loss(logits: Tensor, target: Tensor, margins: Tensor, scale: float) -> Tensor:
    """Per-sample LDAM loss, shape [N]: CE(logits - s * m_y * onehot(y), y).

    ``logits`` are already scaled cosines s * cos θ (from ``CosineHead``), so this equals
    LDAM-DRW's CE(s * (cos θ - m_y * onehot(y)), y) with s = ``scale``.
    """
    margins = margins.to(device=logits.device, dtype=logits.dtype)
    # a comparison rather than F.one_hot, whose range check may read the labels on the host
    classes = torch.arange(logits.shape[1], device=logits.device)
    onehot = (target.unsqueeze(1) == classes).to(logits.dtype)
    shifted = logits - scale * margins[target].unsqueeze(1) * onehot
    return F.cross_entropy(shifted, target, reduction="none")
