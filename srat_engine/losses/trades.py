"""TRADES (Zhang et al. 2019, "Theoretically Principled Trade-off between Robustness and
Accuracy", Sec. 4, the TRADES objective with beta = 1/lambda; reference code github
yaodongyu/TRADES ``trades.py``)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def trades_kl(logits_natural: Tensor, logits_adv: Tensor) -> Tensor:
    """Per-sample KL(f(x) || f(x')), shape [N]: Σ_k p_k (log p_k - log q_k),
    p = softmax(logits_natural), q = softmax(logits_adv).

    The reference's reductions, made explicit: its attack maximises ``KLDivLoss(size_average=
    False)``, the SUM of this over the batch (so each sample's input gradient does not depend on
    the batch size); its update uses that sum times 1/B, i.e. the mean of this vector
    ("batchmean"). Both are written here with log-softmax on both sides, which stays finite where
    a probability underflows to 0 (RoBal's copy takes log(q + 1e-12) instead). Nothing is
    detached: in the attack p does not depend on x', and in the reference's update the gradient
    flows through p as well as q, so the caller decides what to detach.
    """
    log_p = F.log_softmax(logits_natural, dim=1)
    log_q = F.log_softmax(logits_adv, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)


def trades_loss(
    logits_natural: Tensor, logits_adv: Tensor, target: Tensor, beta: float = 6.0
) -> Tensor:
    """Per-sample TRADES update loss [N]: CE(f(x), y) + beta * KL(f(x) || f(x')).

    Its plain mean is the reference's ``loss_natural + beta * loss_robust`` (CE with mean
    reduction plus beta times the batchmean KL). ``beta = 6`` is the reference's CIFAR-10
    default (``train_trades_cifar10.py``).
    """
    if beta < 0:
        raise ValueError(f"TRADES beta must be >= 0, got {beta}")
    ce = F.cross_entropy(logits_natural, target, reduction="none")
    return ce + beta * trades_kl(logits_natural, logits_adv)
