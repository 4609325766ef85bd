"""CIFAR ResNet-18 (He et al. 2016, "Deep Residual Learning for Image Recognition").

This is the CIFAR variant from kuangliu/pytorch-cifar used by SRAT, TRADES and GAIRAT: a 3x3
stride-1 stem with no max-pool (32x32 inputs are too small to downsample at once), then four
stages of two BasicBlocks. The global pool is adaptive so any input size works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from srat_engine.models.base import SratModel
from srat_engine.models.pool import GlobalAvgPool2d


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection; a 1x1 conv + BN shortcut when the shape changes."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(SratModel):
    """CIFAR ResNet-18: 3x3/64 stem, stages [2, 2, 2, 2] at 64/128/256/512, 512-d features."""

    def __init__(self, in_channels: int, head: nn.Module) -> None:
        super().__init__(feature_dim=512, head=head)
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        in_planes = 64
        stages: list[nn.Sequential] = []
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages.append(
                nn.Sequential(BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1))
            )
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = GlobalAvgPool2d()

    def features(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return torch.flatten(self.pool(out), 1)
