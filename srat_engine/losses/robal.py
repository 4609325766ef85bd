"""RoBal's training loss: class-aware margins and train-time logit adjustment on the cosines of
its scale-invariant classifier (Wu et al. 2021, "Adversarial Robustness under Long-Tailed
Distribution", CVPR 2021, the RoBal method section; reference code github
wutong16/Adversarial_Long-Tail: ``MultiMarginLoss`` in ``methods/losses_inclass.py``, configs
``configs/CIFAR10_LT/*robal*``).

The classifier itself (``robal_cosine``, the post-hoc ``robal_eval_logits`` and the head that
applies them) is ``srat_engine.models.robal``: the models layer cannot import the losses. The
margins m_c are `srat_engine.per_class.robal_margins`, resolved with the config.

How the loss differs from LDAM's:
  * the head has scale 1; the scale s (10) is applied here (and at inference, by the head);
  * RoBal's margin is LARGER for frequent classes, m_c = m + tau_m log(n_c / n_min) / s, on top
    of a constant m (0.1), while LDAM's margin is larger for rare ones (∝ n_c^(-1/4));
  * RoBal adds tau_b log π to the train-time logits and subtracts tau_p log π post hoc; LDAM
    has neither (its DRW re-weights instead).
"""

from __future__ import annotations

import torch
from torch import Tensor


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
