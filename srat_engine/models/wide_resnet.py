"""WideResNet-34-10 (Zagoruyko & Komodakis 2016, "Wide Residual Networks").

Follows the version used by Madry et al. and TRADES (Zhang et al. 2019): pre-activation blocks,
widths 16 / 16k / 32k / 64k, (depth - 4) / 6 blocks per stage, final BN + ReLU, dropout 0.
TRADES also builds an unused ``sub_block1`` that inflates its parameter count; it is left out
here because it never takes part in the forward pass.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from srat_engine.models.base import SratModel
from srat_engine.models.pool import GlobalAvgPool2d


class WideBasicBlock(nn.Module):
    """Pre-activation block; when the width changes the shortcut sees the activated input."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.shortcut: nn.Module | None = None
        if in_planes != out_planes or stride != 1:
            self.shortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        act = F.relu(self.bn1(x))
        out = F.relu(self.bn2(self.conv1(act)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        shortcut = self.shortcut(act) if self.shortcut is not None else x
        return out + shortcut


def _stage(n: int, in_planes: int, out_planes: int, stride: int, drop: float) -> nn.Sequential:
    blocks = [WideBasicBlock(in_planes, out_planes, stride, drop)]
    blocks += [WideBasicBlock(out_planes, out_planes, 1, drop) for _ in range(n - 1)]
    return nn.Sequential(*blocks)


class WideResNet(SratModel):
    """WideResNet-depth-k; ``WideResNet(3, head, depth=34, widen_factor=10)`` is WRN-34-10."""

    def __init__(
        self,
        in_channels: int,
        head: nn.Module,
        *,
        depth: int = 34,
        widen_factor: int = 10,
        drop_rate: float = 0.0,
    ) -> None:
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n + 4, got {depth}")
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        super().__init__(feature_dim=widths[3], head=head)
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.block1 = _stage(n, widths[0], widths[1], 1, drop_rate)
        self.block2 = _stage(n, widths[1], widths[2], 2, drop_rate)
        self.block3 = _stage(n, widths[2], widths[3], 2, drop_rate)
        self.bn = nn.BatchNorm2d(widths[3])
        self.pool = GlobalAvgPool2d()
        self._init_weights()

    def _init_weights(self) -> None:
        # The TRADES / original WRN init (He normal, fan-out); heads hold no conv or BN, so they
        # keep their own init.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def features(self, x: Tensor) -> Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = F.relu(self.bn(out))
        return torch.flatten(self.pool(out), 1)
