"""Adversarial weight perturbation, AWP (Wu, Xia & Wang 2020, "Adversarial Weight Perturbation
Helps Robust Generalization", NeurIPS 2020, arXiv 2004.05884; reference code github
csdongxian/AWP, ``AT_AWP/utils_awp.py`` and ``trades_AWP/utils_awp.py``).

After the attack, the weights move to w + v, the update's gradient is taken there, the optimiser
steps, and v is taken off again:

    v_l   = gamma * ||w_l|| * g_l / (||g_l|| + 1e-20)     for each perturbed layer l
    g_l   = d L_update(w; x', y) / d w_l                  (one ascent step of the update loss)
    w    <- step(w + v, grad at w + v) - v

The reference takes g from a proxy copy of the model: it loads w, takes one plain SGD step on
-L (lr 0.01 for AT-AWP, the training lr for TRADES-AWP, no momentum, no weight decay) and reads
the direction off proxy - w. Since v is renormalised to gamma * ||w_l||, the proxy's learning
rate cancels and that direction is g_l itself (the 1e-20 guard shifts by the proxy's lr, far
below float resolution). The proxy's forward passes run in train mode, so BatchNorm uses batch
statistics but the model's running statistics stay untouched: here the ascent runs on the model
itself and its buffers are restored afterwards (:func:`kept_buffers`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

# the reference's guard on ||g_l|| (utils_awp.py's EPS)
AWP_EPS = 1e-20


def perturbed_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters AWP perturbs, in registration order: the reference's ``diff_in_weights``
    keeps a tensor when its name contains ``weight`` and it has more than one dimension, i.e.
    convolution and linear weights; biases and BatchNorm's affine parameters are skipped."""
    return [p for name, p in model.named_parameters() if "weight" in name and p.dim() > 1]


def weight_perturbation(
    weights: Sequence[Tensor], grads: Sequence[Tensor], gamma: float
) -> list[Tensor]:
    """v_l = gamma * ||w_l|| * g_l / (||g_l|| + 1e-20) for each layer l (Frobenius norms), the
    reference's layer-wise relative size; a zero gradient gives v_l = 0."""
    return [
        gamma * w.detach().norm() * g / (g.norm() + AWP_EPS)
        for w, g in zip(weights, grads, strict=True)
    ]


@contextmanager
def kept_buffers(model: nn.Module) -> Iterator[None]:
    """Restore every buffer (BatchNorm running statistics, batch counters) after the body, in
    place: the ascent's train-mode forward pass must not count as a step of the statistics."""
    saved = [(buffer, buffer.detach().clone()) for buffer in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)


def ascent_perturbation(
    model: nn.Module, update_loss: Callable[[], Tensor], gamma: float
) -> tuple[list[nn.Parameter], list[Tensor]]:
    """The parameters AWP perturbs and their v (:func:`weight_perturbation`), g being the
    gradient of ``update_loss()`` (the method's update loss at the current weights, on the
    attack's examples). Nothing is read on the host: the step stays capturable as a CUDA graph.
    """
    params = perturbed_parameters(model)
    # restored after the backward pass: BatchNorm's backward may hold its running statistics
    with kept_buffers(model):
        grads = torch.autograd.grad(update_loss(), params)
    return params, weight_perturbation(params, grads, gamma)


def add_perturbation(params: Sequence[Tensor], perturbation: Sequence[Tensor], sign: float) -> None:
    """w_l += sign * v_l in place (sign +1 perturbs, -1 restores), outside autograd."""
    with torch.no_grad():
        for param, v in zip(params, perturbation, strict=True):
            param.add_(v, alpha=sign)
