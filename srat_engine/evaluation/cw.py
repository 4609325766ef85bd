"""CW-l_inf: the engine's PGD (`pgd_linf`) on the Carlini-Wagner margin loss, not cross-entropy.

Carlini & Wagner (IEEE S&P 2017, objective f_6) attack the logit margin rather than the
softmax: for logits z and true class y,

    m(z, y)  = z_y - max_{j != y} z_j              (> 0 iff the prediction is correct)
    L_CW     = -max(m(z, y) + kappa, 0)

Gradient ascent on L_CW drives the margin down to -kappa and then stops (the clamp), so once an
example is misclassified with margin kappa it is left alone. Unlike cross-entropy the margin
does not saturate when the softmax does, which is why robust-training papers (FAT, GAIRAT)
report CW-l_inf next to PGD. kappa = 50 is the confidence of the `cwloss` in FAT's and GAIRAT's
attack code (taken from the CAT repository); cosine-head (LDAM) logits are at most the scale s
(30) in magnitude, so for them the clamp only binds once the margin is below -50.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

CW_KAPPA: float = 50.0


def cw_margin(logits: Tensor, y: Tensor) -> Tensor:
    """Per-example margin z_y - max_{j != y} z_j, shape [N]; needs at least 2 classes."""
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(f"cw_margin needs logits of shape [N, C>=2], got {tuple(logits.shape)}")
    true = logits.gather(1, y[:, None]).squeeze(1)
    # -inf on the true class so that the max runs over j != y whatever the logits' range
    others = logits.masked_fill(nn.functional.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return true - others.amax(dim=1)


def cw_loss(logits: Tensor, y: Tensor, kappa: float = CW_KAPPA) -> Tensor:
    """sum_i -max(m_i + kappa, 0): summed (not averaged) so that each example's input
    gradient is independent of the batch size, as in the engine's PGD."""
    return -torch.clamp(cw_margin(logits, y) + kappa, min=0).sum()
