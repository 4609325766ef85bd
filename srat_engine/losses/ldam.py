"""LDAM: label-distribution-aware margin loss (Cao et al. 2019, "Learning Imbalanced Datasets
with Label-Distribution-Aware Margin Loss", reference code LDAM-DRW ``losses.LDAMLoss``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from srat_engine.class_counts import check_class_counts


def ldam_margins(counts: Sequence[int], max_margin: float = 0.5) -> Tensor:
    """Per-class margins, shape [C]: m_j = K / n_j^(1/4), K chosen so that max_j m_j = max_margin.

    The rarest class gets ``max_margin``; the others shrink with the fourth root of their count.
    """
    check_class_counts(counts, "ldam_margins")
    if max_margin < 0:
        raise ValueError(f"max_margin must be >= 0, got {max_margin}")
    # float64 so the fourth roots of large counts do not lose digits before the final cast.
    inv_root = torch.tensor(list(counts), dtype=torch.float64).pow(-0.25)
    margins = inv_root * (max_margin / inv_root.max())
    return margins.to(torch.get_default_dtype())


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
