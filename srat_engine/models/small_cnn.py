"""A small CNN for 8x8 digits and quick CPU runs (no paper; sized for speed, not accuracy).

The layout is conv16 - max-pool 2 - conv32 - conv64 - global average pool, 64-d features.
Pooling right after the first conv, and the narrow widths, keep a training step (forward and
backward, input gradient included, batch 128 of 1x8x8) near 10 ms on one CPU core; the wider
32/64/128 layout that pools after the second conv measured about 45 ms.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from srat_engine.models.base import SratModel
from srat_engine.models.pool import GlobalAvgPool2d


def _conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    # No conv bias: the following BN's shift makes it redundant.
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class SmallCNN(SratModel):
    """conv16-BN-ReLU, max-pool 2, conv32-BN-ReLU, conv64-BN-ReLU, global average pool."""

    def __init__(self, in_channels: int, head: nn.Module) -> None:
        super().__init__(feature_dim=64, head=head)
        self.body = nn.Sequential(
            _conv_bn_relu(in_channels, 16),
            nn.MaxPool2d(2),
            _conv_bn_relu(16, 32),
            _conv_bn_relu(32, 64),
            GlobalAvgPool2d(),
        )

    def features(self, x: Tensor) -> Tensor:
        return torch.flatten(self.body(x), 1)
