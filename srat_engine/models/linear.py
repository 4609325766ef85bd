"""The linear model of the 2-class Gaussian-mixture theory (a classifier ``sign(w^T x - b)``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from srat_engine.models.base import SratModel


class LinearModel(SratModel):
    """Identity features (flattened input), so the head alone is the linear classifier."""

    def __init__(self, dim: int, head: nn.Module) -> None:
        super().__init__(feature_dim=dim, head=head)

    def features(self, x: Tensor) -> Tensor:
        return torch.flatten(x, 1)
