"""Classifier heads mapping penultimate features to logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LinearHead(nn.Linear):
    """An ordinary affine classifier ``z @ W.T + b``."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__(in_features, num_classes)


class CosineHead(nn.Module):
    """The normalised classifier used with LDAM (Cao et al. 2019, ``NormedLinear``).

    ``logits = scale * normalize(z) @ normalize(W).T``: the cosine similarity between the
    L2-normalised features and the L2-normalised class weight vectors, times ``scale`` (s), so
    every logit lies in ``[-s, s]``. The LDAM loss then subtracts ``s * m_y`` from the target
    logit; that margin belongs to the loss, not to this head, and there is no bias.
    """

    def __init__(self, in_features: int, num_classes: int, scale: float = 30.0) -> None:
        super().__init__()
        self.in_features = in_features
        self.num_classes = num_classes
        self.scale = float(scale)
        # Stored as [num_classes, in_features] like nn.Linear (LDAM-DRW stores the transpose).
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # The LDAM-DRW init: uniform(-1, 1), then each class vector renormed to norm <= 1e-5 and
        # multiplied back by 1e5, which leaves every row at (almost exactly) unit norm.
        with torch.no_grad():
            self.weight.uniform_(-1.0, 1.0)
            self.weight.copy_(self.weight.renorm(2, 0, 1e-5).mul(1e5))

    def forward(self, z: Tensor) -> Tensor:
        return self.scale * F.linear(F.normalize(z, dim=1), F.normalize(self.weight, dim=1))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, num_classes={self.num_classes}, scale={self.scale}"
