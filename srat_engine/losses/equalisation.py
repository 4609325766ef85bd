"""TAET's stage-2 loss equalisation, HARL (Wang Yu-Hang et al. 2025, "TAET: Two-Stage
Adversarial Equalization Training on Long-Tailed Distributions", CVPR 2025, arXiv 2503.01924;
reference code github BuhuiOK/TAET-Two-Stage-Adversarial-Equalization-Training-on-Long-Tailed-
Distributions, ``code/HARL.py`` and ``code/TAET/TAET.ipynb``)."""

from __future__ import annotations

import torch
from torch import Tensor


def per_class_mean_losses(per_sample: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """L_c, shape [C]: the mean of ``per_sample`` over the batch samples of class c, and 0 for a
    class with no sample in the batch (the reference's sum / (count + 1e-10); the guard is
    written as a floor on the count here, which gives the same values)."""
    classes = torch.arange(num_classes, device=target.device)
    # a comparison rather than F.one_hot, whose range check may read the labels on the host
    onehot = (target.unsqueeze(1) == classes).to(per_sample.dtype)
    sums = onehot.T @ per_sample
    counts = onehot.sum(dim=0)
    return sums / counts.clamp_min(1.0)


def taet_equalisation_loss(
    per_sample: Tensor,
    target: Tensor,
    num_classes: int,
    alpha: float = 0.1,
    beta: float = 0.1,
    gamma: float = 0.1,
) -> Tensor:
    """Scalar HARL loss from per-sample losses [N] (the reference: CE on the adversarial logits):

        L_c  = per-class mean loss (0 for classes absent from the batch)
        L̄    = (1/C) Σ_c L_c
        HARL = alpha * L̄                                  balanced cross-class loss (BCL)
             + beta  * (1/C) Σ_c (L_c - L̄)^2              hierarchical deviation loss (HDL)
             + gamma * Σ_c (L_c / Σ_j L_j)^2              rare-class emphasis loss (RCEL)

    Weights 0.1 / 0.1 / 0.1 are the reference's (``HARL.py`` defaults, also RobustLT's port).
    Choices the reference makes that the paper leaves open: absent classes enter the mean and
    the variance as L_c = 0 over all C classes (not only the classes present in the batch); the
    variance is the population one (1/C); Σ_j L_j is floored at 1e-10 and gradients flow
    through it; the per-sample loss is unweighted CE. Stage 1 (not here) is plain CE on clean
    inputs for the first 40 of 100 epochs (the notebook's ``epoch < 40``; RobustLT's
    ``ce_epochs=40``); stage 2's attack is 10-step PGD on CE from x + 0.001 N(0, 1).
    """
    class_losses = per_class_mean_losses(per_sample, target, num_classes)
    mean = class_losses.mean()
    deviation = ((class_losses - mean) ** 2).mean()
    shares = class_losses / class_losses.sum().clamp_min(1e-10)
    return alpha * mean + beta * deviation + gamma * (shares**2).sum()
