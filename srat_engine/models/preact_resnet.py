"""PreAct ResNet-18 (He et al. 2016b, "Identity Mappings in Deep Residual Networks").

Follows the version in Rice et al. 2020 ("Overfitting in adversarially robust deep learning"):
BN-ReLU before each conv, a plain 1x1 conv shortcut, and a final BN + ReLU before pooling
because pre-activation blocks leave their output un-normalised.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from srat_engine.models.base import SratModel
from srat_engine.models.pool import GlobalAvgPool2d


class PreActBlock(nn.Module):
    """Pre-activation BasicBlock; the shortcut branches off after the first BN-ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet18(SratModel):
    """PreAct ResNet-18: 3x3/64 stem, stages [2, 2, 2, 2] at 64/128/256/512, 512-d features."""

    def __init__(self, in_channels: int, head: nn.Module) -> None:
        super().__init__(feature_dim=512, head=head)
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        in_planes = 64
        stages: list[nn.Sequential] = []
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages.append(
                nn.Sequential(
                    PreActBlock(in_planes, planes, stride), PreActBlock(planes, planes, 1)
                )
            )
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.bn = nn.BatchNorm2d(512)
        self.pool = GlobalAvgPool2d()

    def features(self, x: Tensor) -> Tensor:
        out = self.conv1(x)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.relu(self.bn(out))
        return torch.flatten(self.pool(out), 1)
