"""Global average pooling whose gradient keeps the input's memory format.

``nn.AdaptiveAvgPool2d(1)`` computes ``x.mean((2, 3))``; autograd's mean backward broadcasts
the incoming gradient with ``expand(...) / (H W)``, and a division of an expanded tensor comes
out NCHW-contiguous whatever the input's layout. In a channels_last network the last block's
ReLU and convolution backward then mix layouts: PyTorch's CPU ``threshold_backward`` ran about
20x slower on a channels_last activation with an NCHW gradient than on matching layouts
(128x16x32x32, measured here), and oneDNN reorders. Same values, same layout as the input.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


def _layout(x: Tensor) -> torch.memory_format:
    if (
        x.dim() == 4
        and not x.is_contiguous()
        and x.is_contiguous(memory_format=torch.channels_last)
    ):
        return torch.channels_last
    return torch.contiguous_format


class _GlobalAvgPool(torch.autograd.Function):
    """mean over H, W -> [N, C, 1, 1]; backward fills grad / (H W) in the input's layout.

    Under ``torch.func.vmap`` (stacked runs, `training/stacked_step.py`) the K runs' feature
    maps are pooled as one map of K C channels, so the layout-keeping backward holds there
    too."""

    @staticmethod
    def forward(x: Tensor) -> Tensor:
        return x.mean((2, 3), keepdim=True)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor], output: Tensor) -> None:
        (x,) = inputs
        ctx.shape = x.shape
        ctx.layout = _layout(x)

    @staticmethod
    def vmap(info: Any, in_dims: tuple[int | None], x: Tensor) -> tuple[Tensor, int | None]:
        (dim,) = in_dims
        if dim is None:
            return _GlobalAvgPool.apply(x), None
        # the K runs' channels side by side, as vmap lays out a convolution's: [N, K C, H, W]
        x = x.movedim(dim, 1)
        n, k, c = x.shape[0], x.shape[1], x.shape[2]
        pooled = _GlobalAvgPool.apply(x.reshape(n, k * c, *x.shape[3:]))
        return pooled.reshape(n, k, c, 1, 1), 1

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        h, w = ctx.shape[2], ctx.shape[3]
        # divide the small [N, C, 1, 1] tensor, then broadcast: each element is grad / (H W),
        # the same number the default backward computes element by element
        out = torch.empty(ctx.shape, dtype=grad.dtype, device=grad.device, memory_format=ctx.layout)
        return out.copy_((grad / (h * w)).expand(ctx.shape))


class GlobalAvgPool2d(nn.Module):
    """``nn.AdaptiveAvgPool2d(1)`` for [N, C, H, W] inputs, layout-preserving in backward."""

    def forward(self, x: Tensor) -> Tensor:
        return _GlobalAvgPool.apply(x)
