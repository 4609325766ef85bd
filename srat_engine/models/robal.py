"""RoBal's scale-invariant cosine classifier (Wu et al. 2021, "Adversarial Robustness under
Long-Tailed Distribution", CVPR 2021, the RoBal method section; reference code github
wutong16/Adversarial_Long-Tail: ``CosPlus_Classifier`` and ``PostProc_Classifier`` in
``models/classifiers/basic_classifiers.py``, configs ``configs/CIFAR10_LT/*robal*``).

The head's maths lives here, in the models layer, so that the head computes it with the very
functions the tests check; RoBal's training loss (margins, train-time logit adjustment) is in
``srat_engine.losses.robal``.

How this differs from ``srat_engine.models.heads.CosineHead`` (LDAM's ``NormedLinear``):
  * the class vectors are divided by ||w_c|| + gamma (gamma = 1/32), not ||w_c||, so a class
    vector's norm still scales its logit a little (||w|| / (||w|| + gamma) < 1); gamma = 0 gives
    CosineHead's exact cosine;
  * the head itself has scale 1 in training; the scale s (10) is applied in the loss and at
    inference, where the head also subtracts tau_p log π (the reference's post-hoc classifier).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from srat_engine.models.base import SratModel


def robal_cosine(features: Tensor, weight: Tensor, gamma: float = 0.03125) -> Tensor:
    """Head output [N, C]: <z / ||z||, w_c / (||w_c|| + gamma)> for features z [N, D] and class
    weights w [C, D] (the reference's ``CosPlus_Classifier`` with scale 1, eta 1, no bias)."""
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    z = F.normalize(features, dim=1)
    w = weight / (weight.norm(dim=1, keepdim=True) + gamma)
    return z @ w.T


def robal_eval_logits(cosine: Tensor, scale: float, log_prior: Tensor, tau_p: float) -> Tensor:
    """Inference logits [N, C]: s * cos - tau_p * log π (the reference's ``PostProc_Classifier``
    with classifier "Cos" and posthoc; RoBal-N uses s = 10 and tau_p = 0.1 on CIFAR-10-LT, 1.5
    on CIFAR-100-LT). RoBal-R evaluates without the post-hoc term (tau_p = 0).

    Choices the reference makes that the paper leaves open: the attack's inner loss is plain
    CE on the head output (scale 1, no margin, no prior), the TRADES term (beta 6, RoBal's
    ``add_reg``) also compares softmaxes of the scale-1 cosines, and evaluation attacks these
    post-hoc logits.
    """
    return scale * cosine - tau_p * log_prior.to(device=cosine.device, dtype=cosine.dtype)


@dataclass(frozen=True)
class RobalOptions:
    """What ``build_model(head="robal")`` needs beyond the shapes: log π of the training class
    frequencies and the inference-time scale s, gamma and tau_p."""

    log_prior: tuple[float, ...]
    scale: float = 10.0
    gamma: float = 0.03125
    tau_p: float = 0.1


class RobalHead(nn.Module):
    """RoBal's classifier: the scale-1 cosines ``robal_cosine(z, W, gamma)`` in train mode (what
    the loss, the TRADES term and the training attack see), the post-hoc logits
    ``robal_eval_logits(cos, s, log π, tau_p)`` in eval mode (what evaluation, ``srat eval``
    and its attacks see, as the reference's inference-time ``PostProc_Classifier``).

    The training attack runs with the model in eval mode yet attacks the cosines, as the
    reference's (``CosPlus_Classifier`` has no post-hoc term): it goes through
    :class:`RobalCosineView`. ``log_prior`` (log π of the training class frequencies) is a
    non-persistent buffer: a checkpoint holds only the learned weights, the run's config and
    class counts give the rest. No bias (the reference's is frozen at 0).
    """

    log_prior: Tensor

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        log_prior: Sequence[float] | Tensor,
        scale: float = 10.0,
        gamma: float = 0.03125,
        tau_p: float = 0.1,
    ) -> None:
        super().__init__()
        if gamma < 0 or scale <= 0 or tau_p < 0:
            raise ValueError(f"RoBal needs gamma, tau_p >= 0 and s > 0: {gamma}, {tau_p}, {scale}")
        prior = torch.as_tensor(log_prior, dtype=torch.get_default_dtype())
        if prior.shape != (num_classes,):
            raise ValueError(f"log_prior needs {num_classes} entries, got {tuple(prior.shape)}")
        self.in_features = in_features
        self.num_classes = num_classes
        self.scale = float(scale)
        self.gamma = float(gamma)
        self.tau_p = float(tau_p)
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        self.register_buffer("log_prior", prior.clone(), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # the reference's init: U(-1/sqrt(D), 1/sqrt(D))
        bound = 1.0 / math.sqrt(self.in_features)
        with torch.no_grad():
            self.weight.uniform_(-bound, bound)

    def cosine(self, z: Tensor) -> Tensor:
        """The scale-1 cosines [N, C], in either mode."""
        return robal_cosine(z, self.weight, self.gamma)

    def forward(self, z: Tensor) -> Tensor:
        cosine = self.cosine(z)
        if self.training:
            return cosine
        return robal_eval_logits(cosine, self.scale, self.log_prior, self.tau_p)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, num_classes={self.num_classes}, "
            f"scale={self.scale}, gamma={self.gamma}, tau_p={self.tau_p}"
        )


class RobalCosineView(nn.Module):
    """``model``'s scale-1 cosines ``head.cosine(features(x))`` in any mode: what RoBal's
    training attack ascends CE on (the reference's ``add_reg_train`` attacks
    ``CrossEntropy(model(x'))`` under ``model.eval()`` with the scale-1 ``CosPlus_Classifier``).
    It shares the model's parameters; the trainer checkpoints the model, never this view."""

    def __init__(self, model: SratModel) -> None:
        super().__init__()
        if not isinstance(model.head, RobalHead):
            raise TypeError(f"RobalCosineView needs a RobalHead, got {type(model.head).__name__}")
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        head = self.model.head
        assert isinstance(head, RobalHead)
        return head.cosine(self.model.features(x))
