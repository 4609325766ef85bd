"""K models of one architecture read as one: their tensors stacked, the forward vmapped.

``vmap`` over ``functional_call`` of one skeleton module turns each convolution of the K
models into one grouped convolution of K groups, so a stack of small models fills a device
that one of them cannot. One rule for the two places that run a stack: the stacked training
step (`training.stacked_step`) and the stacked evaluation (`evaluation.stacked`).

Layout: run axis 1, [N, K, ...] (`stack_batches`), so vmap's grouped layout [N, K C, H, W] is a
view of the batch, not a copy; outputs come back [N, K, ...] too.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from srat_engine.models.base import SratModel


def stack_batches(batches: Sequence[Tensor], channels_last: bool) -> Tensor:
    """The runs' batches [N, C, H, W] as one [N, K, C, H, W], run axis 1: the layout vmap
    gives a convolution of K groups, [N, K C, H, W], is then a view, not a copy. With
    `channels_last`, stored N, H, W, K, C, so that view is channels_last too."""
    if not channels_last or batches[0].dim() != 4:
        return torch.stack(list(batches), dim=1)
    n, c, h, w = batches[0].shape
    stacked = batches[0].new_empty((n, h, w, len(batches), c))
    for k, batch in enumerate(batches):
        stacked[:, :, :, k] = batch.permute(0, 2, 3, 1)
    return stacked.permute(0, 3, 4, 1, 2)


def named_tensors(module: nn.Module) -> list[tuple[str, Tensor]]:
    """Every parameter and buffer of `module` by name: what functional_call replaces."""
    return [*module.named_parameters(), *module.named_buffers()]


def stack_by_name(named: Sequence[dict[str, Tensor]], names: Sequence[str]) -> dict[str, Tensor]:
    """Each name's tensors of the K runs (`named`, one dict per run) stacked on a new axis 0,
    detached: the state functional_call swaps in."""
    return {name: torch.stack([tensors[name].detach() for tensors in named]) for name in names}


class _FeaturesAndLogits(nn.Module):
    """(features, logits) of one model: the skeleton `functional_call` runs under vmap."""

    def __init__(self, model: SratModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features = self.model.features(x)
        return features, self.model.head(features)


class StackedModels:
    """The forward of K models of `model`'s architecture, their tensors given stacked.

    The skeleton is a copy of `model` whose own tensors are never read; its train/eval mode
    (`skeleton`) is the mode the stacked forward runs in (BatchNorm's batch or running
    statistics).
    """

    def __init__(self, model: SratModel) -> None:
        self.skeleton = _FeaturesAndLogits(copy.deepcopy(model))
        self.param_names = [name for name, _ in model.named_parameters()]
        self.buffer_names = [name for name, _ in model.named_buffers()]

    def params(self, models: Sequence[nn.Module]) -> dict[str, Tensor]:
        """The models' parameters stacked on axis 0, detached."""
        return stack_by_name([dict(m.named_parameters()) for m in models], self.param_names)

    def buffers(self, models: Sequence[nn.Module]) -> dict[str, Tensor]:
        """The models' buffers (BatchNorm statistics) stacked on axis 0."""
        return stack_by_name([dict(m.named_buffers()) for m in models], self.buffer_names)

    def forward(
        self, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor
    ) -> tuple[Tensor, Tensor]:
        """(features, logits) of one run, its slices of the stacked state given: the function
        vmap maps over the run axis."""
        state = {f"model.{name}": value for name, value in params.items()}
        state.update({f"model.{name}": value for name, value in buffers.items()})
        return functional_call(self.skeleton, state, (x,))

    def __call__(
        self,
        params: dict[str, Tensor],
        buffers: dict[str, Tensor],
        x: Tensor,
        *,
        shared_input: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """(features [N, K, D], logits [N, K, C]) of every run on its batch of `x`
        ([N, K, ...]), or on `x` itself ([N, ...]) for all with `shared_input`."""
        return vmap(self.forward, in_dims=(0, 0, None if shared_input else 1), out_dims=1)(
            params, buffers, x
        )
