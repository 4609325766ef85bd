"""REAT, re-balancing adversarial training (Li, Xu & Zhang 2023, "Alleviating the Effect of Data
Imbalance on Adversarial Training", arXiv 2307.10205; reference code github GuanlinLee/REAT
``loss_functions.py`` (RBL, REAT) and ``train.py``). The outer loss is the balanced softmax on
the adversarial logits (``logit_adjusted_loss`` with tau = 1) plus ``tail_feature_alignment``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from srat_engine.per_class import check_class_counts

TFA_MODES: tuple[str, ...] = ("reference", "pairwise")


def reat_inner_weights(counts: Sequence[int], adv_pred_counts: Sequence[int]) -> Tensor:
    """RBL class weights [C] for the attack's loss, from the training counts n_c and the number
    m_c of the previous epoch's adversarial examples PREDICTED as class c:

        beta_c = (n_c - 1) / n_c
        E_c    = (1 - beta_c^m_c) / (1 - beta_c) = n_c (1 - (1 - 1/n_c)^m_c)
        w_c    ∝ 1 / (E_c + 1e-5),  rescaled to Σ_c w_c = C

    the effective number of Cui et al. 2019 with a per-class beta. The reference starts with
    m = n (epoch 0) and uses them as ``F.cross_entropy(weight=w)``, i.e. the "normalized"
    reduction of ``weighted_mean``. A class no adversarial example was predicted as (m_c = 0)
    has E_c = 0 and takes almost all the weight (1e5 before rescaling); 1e-5 is the reference's.
    The reference counts m over every batch of an epoch from the train-mode forward of x' that
    also gives the loss (before the optimiser step; RobustLT's port re-predicts after it) and
    swaps the counts in at the epoch's end.

    Caveat for the wiring: l_inf PGD steps along sign(∇_x loss). With the model in eval mode (the
    reference's attack) each sample's input gradient is w_{y_i} / Σ w times its own CE gradient,
    so positive class weights do not change the sign and RBL yields the same x' as plain CE;
    they matter only where samples interact (batch-statistics BN, as in RobustLT's port).
    """
    if len(counts) == 0 or len(counts) != len(adv_pred_counts):
        raise ValueError(
            f"need one count and one prediction count per class, got {len(counts)} and "
            f"{len(adv_pred_counts)}"
        )
    check_class_counts(counts, "reat_inner_weights")
    if any(m < 0 for m in adv_pred_counts):
        raise ValueError(f"prediction counts must be >= 0, got {list(adv_pred_counts)}")
    n = torch.tensor(list(counts), dtype=torch.float64)
    m = torch.tensor(list(adv_pred_counts), dtype=torch.float64)
    # n (1 - (1 - 1/n)^m) = -n expm1(m log1p(-1/n)), exact near beta -> 1; n = 1 gives
    # log1p(-1) = -inf, so m = 0 (0 * -inf = nan) is set to E = 0 explicitly.
    effective = -n * torch.expm1(m * torch.log1p(-1.0 / n))
    effective = torch.where(m == 0, torch.zeros_like(effective), effective)
    weights = 1.0 / (effective + 1e-5)
    weights = weights * (len(counts) / weights.sum())
    return weights.to(torch.get_default_dtype())


def reat_tail_classes(counts: Sequence[int]) -> list[int]:
    """The classes TFA anchors on: the C - (2 * (C // 3) + 1) least frequent (3 of 10, 33 of
    100, none for C = 3), sorted ascending.

    The reference takes the indices ``range(C // 3 * 2 + 1, C)``, which are the rarest classes
    only because its CIFAR-LT classes are ordered by decreasing count; here they are picked from
    the counts, ties counting the higher index as rarer (the exp/step profiles' order).
    """
    c = len(counts)
    k = max(0, c - (c // 3 * 2 + 1))
    order = sorted(range(c), key=lambda i: (counts[i], -i))
    return sorted(order[:k])


def tail_feature_alignment(
    features: Tensor,
    target: Tensor,
    counts: Sequence[int] | Tensor,
    tail_classes: Sequence[int] | Tensor,
    mode: str = "reference",
) -> Tensor:
    """TFA, REAT's feature term on the adversarial penultimate features F [N, D] (scalar).

    With p_i = softmax(F_i) (detached, the anchor), q_j = softmax(F_j), K_ij = KL(p_i || q_j),
    s_ij = -1 if y_i = y_j else +1, W_ij = w_{y_i} + w_{y_j}, w_c = sqrt(Σ n / n_c), and the
    anchors T = {i : y_i in tail_classes}, |T| = A (the term is 0 when A = 0):

        "pairwise":   TFA = 1/(A N)   Σ_{i∈T} Σ_j s_ij W_ij K_ij
        "reference":  TFA = 1/(A N)   Σ_{i∈T} (1/(N D) Σ_j K_ij) (Σ_j s_ij W_ij)

    "reference" is what ``loss_functions.REAT`` computes: its ``nn.KLDivLoss(size_average=
    'none')`` is the legacy argument, so the string counts as True and the KL is MEAN-reduced
    over all N * D entries to one number per anchor before the per-pair s_ij W_ij multiply it.
    "pairwise" keeps one KL per pair, as the per-pair signs and weights suggest was intended.
    As coded, minimising lowers the divergence to other-class samples (s = +1) and raises it to
    same-class ones (s = -1); the paper's text was not available to check the intended sign, so
    both modes keep the code's. The softmax is taken over the feature dimensions (the reference
    applies it to the pooled ResNet features, not the logits).

    ``counts`` and ``tail_classes`` may be tensors already on ``features``' device: the training
    step passes those, so that no host-to-device copy runs inside a captured CUDA graph.
    """
    if mode not in TFA_MODES:
        raise ValueError(f"unknown TFA mode {mode!r}; expected one of {TFA_MODES}")
    n, d = features.shape
    device = features.device
    w = torch.as_tensor(counts, device=device).to(features.dtype)
    w = (w.sum() / w).sqrt()
    tails = torch.as_tensor(tail_classes, dtype=target.dtype, device=device)
    is_anchor = (target.unsqueeze(1) == tails).any(dim=1)
    log_q = F.log_softmax(features, dim=1)
    log_p = log_q.detach()
    p = log_p.exp()
    # K_ij = Σ_d p_id log p_id - Σ_d p_id log q_jd, all pairs at once
    kl = (p * log_p).sum(dim=1, keepdim=True) - p @ log_q.T
    same = target.unsqueeze(1) == target.unsqueeze(0)
    sign = torch.where(same, -1.0, 1.0).to(features.dtype)
    pair_w = sign * (w[target].unsqueeze(1) + w[target].unsqueeze(0))
    if mode == "pairwise":
        per_anchor = (pair_w * kl).sum(dim=1)
    else:
        per_anchor = kl.sum(dim=1) / (n * d) * pair_w.sum(dim=1)
    anchors = is_anchor.to(features.dtype)
    # Branch-free 0 when no anchor is present (no device sync), still carrying a graph.
    return (per_anchor * anchors).sum() / (n * anchors.sum().clamp_min(1.0))
