"""RoBal's scale-invariant cosine classifier with class-aware margins and logit adjustment (Wu
et al. 2021, "Adversarial Robustness under Long-Tailed Distribution", CVPR 2021, the RoBal
method section; reference code github wutong16/Adversarial_Long-Tail: ``CosPlus_Classifier`` and
``PostProc_Classifier`` in ``models/classifiers/basic_classifiers.py``, ``MultiMarginLoss`` in
``methods/losses_inclass.py``, configs ``configs/CIFAR10_LT/*robal*``).

How this differs from ``srat_engine.models.heads.CosineHead`` (LDAM's ``NormedLinear``):
  * the class vectors are divided by ||w_c|| + gamma (gamma = 1/32), not ||w_c||, so a class
    vector's norm still scales its logit a little (||w|| / (||w|| + gamma) < 1); gamma = 0 gives
    CosineHead's exact cosine;
  * the head itself has scale 1; the scale s (10) is applied in the loss and at evaluation;
  * RoBal's margin is LARGER for frequent classes, m_c = m + tau_m log(n_c / n_min) / s, on top
    of a constant m (0.1), while LDAM's margin is larger for rare ones (∝ n_c^(-1/4));
  * RoBal adds tau_b log π to the train-time logits and subtracts tau_p log π post hoc; LDAM
    has neither (its DRW re-weights instead).
Reference init (not here): w ~ U(-1/sqrt(D), 1/sqrt(D)), no bias, versus CosineHead's unit rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def robal_cosine(features: Tensor, weight: Tensor, gamma: float = 0.03125) -> Tensor:
    """Head output [N, C]: <z / ||z||, w_c / (||w_c|| + gamma)> for features z [N, D] and class
    weights w [C, D] (the reference's ``CosPlus_Classifier`` with scale 1, eta 1, no bias)."""
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    z = F.normalize(features, dim=1)
    w = weight / (weight.norm(dim=1, keepdim=True) + gamma)
    return z @ w.T


def robal_margins(
    counts: Sequence[int], m: float = 0.1, tau_m: float = 0.0, scale: float = 10.0
) -> Tensor:
    """Per-class margins [C] in cosine units: m_c = m + tau_m * log(n_c / n_min) / s.

    Reference configs: RoBal-N (CIFAR-10-LT) m = 0.1, tau_m = 0, s = 10; RoBal-R m = 0.1,
    tau_m = 0.3, s = 10. The rarest class gets m; frequent classes get more.
    """
    if len(counts) == 0:
        raise ValueError("robal_margins needs at least one class count")
    if any(n <= 0 for n in counts):
        raise ValueError(f"class counts must be positive, got {list(counts)}")
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    n = torch.tensor(list(counts), dtype=torch.float64)
    margins = m + tau_m * torch.log(n / n.min()) / scale
    return margins.to(torch.get_default_dtype())


def robal_train_logits(
    cosine: Tensor,
    target: Tensor,
    margins: Tensor,
    scale: float,
    log_prior: Tensor,
    tau_b: float,
) -> Tensor:
    """Train-time logits [N, C]: s * (cos - m_y * onehot(y)) + tau_b * log π, fed to plain CE
    (the reference's ``MultiMarginLoss``; RoBal-N tau_b = 1.2, RoBal-R tau_b = 1.5)."""
    margins = margins.to(device=cosine.device, dtype=cosine.dtype)
    classes = torch.arange(cosine.shape[1], device=cosine.device)
    onehot = (target.unsqueeze(1) == classes).to(cosine.dtype)
    shifted = cosine - margins[target].unsqueeze(1) * onehot
    return scale * shifted + tau_b * log_prior.to(device=cosine.device, dtype=cosine.dtype)


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
