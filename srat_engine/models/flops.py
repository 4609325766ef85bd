"""FLOP counts, with the formulas of ``torch.utils.flop_counter`` (2 FLOPs per multiply-accumulate
of matrix multiplications and convolutions; BN, activations, pooling and additions are ignored,
as is the convention).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, flop_registry


def forward_flops(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    """FLOPs of one forward pass of `model` on one input of `input_shape`, from
    ``FlopCounterMode``: CIFAR ResNet-18 at 32x32 gives 1.1108 GFLOP (0.5554 GMACs), the
    1.111 GFLOP usually quoted for it. Counted on a CPU copy in eval mode, so the model, its
    device and its BN statistics are left as they are."""
    probe = copy.deepcopy(model).to("cpu", memory_format=torch.contiguous_format).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        probe(torch.zeros(1, *input_shape))
    return float(counter.get_total_flops())


class _RegistryFlops(TorchDispatchMode):
    """Sums FLOPs with ``FlopCounterMode``'s formulas, without its module tracker.

    ``FlopCounterMode`` tracks modules with backward hooks that fail under
    ``torch.autograd.grad`` (the engine's attack: "A leaf node was passed to
    _will_engine_execute_node"); counting at the dispatch level needs none.
    """

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.flops += formula(*args, **kwargs, out_val=out)
        return out


def executed_flops(work: Callable[[], object], examples: int) -> float:
    """FLOPs per example that `work` executes on `examples` examples, forward and backward
    (``torch.autograd.grad`` included). Code compiled by ``torch.compile`` is not counted:
    call it on eager code only."""
    counter = _RegistryFlops()
    with counter:
        work()
    return float(counter.flops) / examples
