"""An eval-mode view of a model with each BatchNorm folded into the convolution before it.

In eval mode a BatchNorm is a fixed per-channel affine map, so for a convolution W * x + c
followed by BN(z) = gamma (z - mu) / sqrt(var + eps) + beta,

    BN(W * x + c) = (s W) * x + (s (c - mu) + beta),    s = gamma / sqrt(var + eps),

one convolution with weights scaled per output channel and a bias (Ioffe & Szegedy 2015,
Sec. 3.2; ``torch.nn.utils.fusion.fuse_conv_bn_eval``). The function is the same; only the
rounding differs (about 1e-7 relative in fp32). A PGD attack with BN in eval mode and frozen
parameters evaluates that fixed function 2K times per batch, so the view drops every folded
BN's forward and backward pass from the attack; the training update still uses the model.

The view shares the model's parameters and buffers; :meth:`BatchNormFoldedView.refresh`
recomputes the folded weights from them and must run after every change (each optimizer step
and each train-mode forward, which moves the running statistics) and before the next attack.
"""

from __future__ import annotations

import torch
import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn

from srat_engine.models.pool import GlobalAvgPool2d


class _FoldedConv2d(nn.Module):
    """``bn(conv(x))`` of a live (conv, bn) pair, as one convolution with folded weights."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
        super().__init__()
        # a tuple, not attributes: the pair stays unregistered, so the view owns no parameters
        self._pair = (conv, bn)
        self.register_buffer("weight", torch.empty(0), persistent=False)
        self.register_buffer("bias", torch.empty(0), persistent=False)
        self.refresh()

    @torch.no_grad()
    def refresh(self) -> None:
        conv, bn = self._pair
        assert bn.running_var is not None and bn.running_mean is not None
        scale = torch.rsqrt(bn.running_var + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight
        shift = -bn.running_mean * scale
        if conv.bias is not None:
            shift = shift + conv.bias * scale
        if bn.bias is not None:
            shift = shift + bn.bias
        # keeps the conv weight's memory format (channels_last stays channels_last)
        self.weight = conv.weight * scale.reshape(-1, 1, 1, 1).to(conv.weight.dtype)
        self.bias = shift.to(conv.weight.dtype)

    def forward(self, x: Tensor) -> Tensor:
        conv = self._pair[0]
        if conv.padding_mode != "zeros":
            raise NotImplementedError("only zero-padded convolutions are folded")
        return F.conv2d(
            x, self.weight, self.bias, conv.stride, conv.padding, conv.dilation, conv.groups
        )


class _Tracer(torch.fx.Tracer):
    """torch.fx's tracer, keeping the custom-gradient pooling as one opaque call."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, GlobalAvgPool2d) or super().is_leaf_module(m, module_qualified_name)


class BatchNormFoldedView(nn.Module):
    """``model`` in eval mode with every Conv2d -> BatchNorm2d pair folded (see the module doc).

    Only pairs where the convolution's output feeds that BN alone are folded (a pre-activation
    block's ``bn1`` sees a sum, so it stays). ``folded`` is the number of pairs; a model that
    torch.fx cannot trace, or that has no pair, gets a view that calls the model itself.
    Valid for eval-mode forward passes only: use it for attacks with BN in eval mode.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self._model = (model,)  # unregistered: the view is not a second owner of the weights
        self.folds: list[_FoldedConv2d] = []
        self.graph_module: nn.Module | None = None
        try:
            self.graph_module = self._fold(model)
        except Exception:  # any tracing failure (fx cannot trace it) just means no folding
            self.graph_module = None
            self.folds = []

    @property
    def folded(self) -> int:
        return len(self.folds)

    def _fold(self, model: nn.Module) -> nn.Module | None:
        was_training = model.training
        model.eval()  # trace the eval-mode control flow (dropout's `training` flag included)
        try:
            gm = torch.fx.GraphModule(model, _Tracer().trace(model))
        finally:
            model.train(was_training)
        modules = dict(gm.named_modules())
        for node in list(gm.graph.nodes):
            if node.op != "call_module" or not isinstance(modules.get(node.target), nn.BatchNorm2d):
                continue
            source = node.args[0]
            if not (
                isinstance(source, torch.fx.Node)
                and source.op == "call_module"
                and isinstance(modules.get(source.target), nn.Conv2d)
                and len(source.users) == 1
            ):
                continue
            bn = modules[node.target]
            conv = modules[source.target]
            assert isinstance(bn, nn.BatchNorm2d) and isinstance(conv, nn.Conv2d)
            if bn.running_mean is None or bn.running_var is None:
                continue  # BN without running statistics normalises by the batch even in eval
            fold = _FoldedConv2d(conv, bn)
            name = f"folded_{len(self.folds)}"
            gm.add_submodule(name, fold)
            source.target = name
            node.replace_all_uses_with(source)
            gm.graph.erase_node(node)
            self.folds.append(fold)
        if not self.folds:
            return None
        gm.graph.lint()
        gm.recompile()
        # drops the view's references to the folded-away BNs; the model keeps its own
        gm.delete_all_unused_submodules()
        return gm

    @torch.no_grad()
    def refresh(self) -> None:
        """Recompute the folded weights from the model's current parameters and statistics."""
        for fold in self.folds:
            fold.refresh()

    def forward(self, x: Tensor) -> Tensor:
        if self.graph_module is None:
            return self._model[0](x)
        return self.graph_module(x)
