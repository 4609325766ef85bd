"""Model zoo: ``build_model(arch, num_classes, input_shape)`` returns a :class:`SratModel`."""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import nn

from srat_engine.errors import SratError
from srat_engine.models.base import SratModel
from srat_engine.models.heads import CosineHead, LinearHead
from srat_engine.models.linear import LinearModel
from srat_engine.models.preact_resnet import PreActResNet18
from srat_engine.models.resnet import ResNet18
from srat_engine.models.robal import RobalCosineView, RobalHead, RobalOptions
from srat_engine.models.small_cnn import SmallCNN
from srat_engine.models.wide_resnet import WideResNet

# Builds a head for a given feature dimension; the number of classes and head kind are bound.
HeadFactory = Callable[[int], nn.Module]
# An architecture builder: (input_shape, head factory) -> model.
Builder = Callable[[tuple[int, ...], HeadFactory], SratModel]

HEADS: tuple[str, ...] = ("linear", "cosine", "robal")


def _image_channels(arch: str, input_shape: tuple[int, ...]) -> int:
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise SratError(f"{arch} needs an image input_shape (C, H, W), got {input_shape}")
    return input_shape[0]


def _resnet18(input_shape: tuple[int, ...], make_head: HeadFactory) -> SratModel:
    return ResNet18(_image_channels("resnet18", input_shape), make_head(512))


def _preact_resnet18(input_shape: tuple[int, ...], make_head: HeadFactory) -> SratModel:
    return PreActResNet18(_image_channels("preact_resnet18", input_shape), make_head(512))


def _wrn34_10(input_shape: tuple[int, ...], make_head: HeadFactory) -> SratModel:
    channels = _image_channels("wrn34_10", input_shape)
    return WideResNet(channels, make_head(640), depth=34, widen_factor=10)


def _wrn28_10(input_shape: tuple[int, ...], make_head: HeadFactory) -> SratModel:
    channels = _image_channels("wrn28_10", input_shape)
    return WideResNet(channels, make_head(640), depth=28, widen_factor=10)


def _small_cnn(input_shape: tuple[int, ...], make_head: HeadFactory) -> SratModel:
    return SmallCNN(_image_channels("small_cnn", input_shape), make_head(64))


def _linear(input_shape: tuple[int, ...], make_head: HeadFactory) -> SratModel:
    if len(input_shape) == 0 or min(input_shape) < 1:
        raise SratError(f"linear needs a vector input_shape (d,), got {input_shape}")
    dim = math.prod(input_shape)
    return LinearModel(dim, make_head(dim))


ARCHITECTURES: dict[str, Builder] = {
    "resnet18": _resnet18,
    "preact_resnet18": _preact_resnet18,
    "wrn34_10": _wrn34_10,
    "wrn28_10": _wrn28_10,
    "small_cnn": _small_cnn,
    "linear": _linear,
}


def build_model(
    arch: str,
    num_classes: int,
    input_shape: tuple[int, ...],
    *,
    head: str = "linear",
    cosine_scale: float = 30.0,
    robal: RobalOptions | None = None,
) -> SratModel:
    """Build ``arch`` for inputs of ``input_shape`` ((C, H, W) or (d,)) with a ``head`` head;
    the ``robal`` head takes its prior and inference settings from ``robal``."""
    if arch not in ARCHITECTURES:
        raise SratError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
    if head not in HEADS:
        raise SratError(f"unknown head {head!r}; known: {', '.join(HEADS)}")
    if num_classes < 2:
        raise SratError(f"num_classes must be at least 2, got {num_classes}")
    if head == "robal" and robal is None:
        raise SratError("the robal head needs its RobalOptions (class prior, scale, gamma, tau_p)")

    def make_head(feature_dim: int) -> nn.Module:
        if head == "robal":
            assert robal is not None
            return RobalHead(
                feature_dim,
                num_classes,
                log_prior=robal.log_prior,
                scale=robal.scale,
                gamma=robal.gamma,
                tau_p=robal.tau_p,
            )
        if head == "cosine":
            return CosineHead(feature_dim, num_classes, scale=cosine_scale)
        return LinearHead(feature_dim, num_classes)

    return ARCHITECTURES[arch](tuple(input_shape), make_head)


__all__ = [
    "ARCHITECTURES",
    "HEADS",
    "CosineHead",
    "LinearHead",
    "RobalCosineView",
    "RobalHead",
    "RobalOptions",
    "SratModel",
    "build_model",
]
