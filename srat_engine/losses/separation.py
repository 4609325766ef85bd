"""SRAT's feature separation loss (Wang et al., Eq. 6): supervised contrastive loss on the
features of the adversarial examples (Khosla et al. 2020, the "L_out" form)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def separation_loss(features: Tensor, labels: Tensor, tau: float) -> Tensor:
    """Scalar loss over a batch of features [N, D] with labels [N]:

        z_i = features_i / ||features_i||                       (L2-normalised here)
        L_i = -1/|P(i)| Σ_{p∈P(i)} log( exp(z_i·z_p/τ) / Σ_{a∈A(i)} exp(z_i·z_a/τ) )
        L   = mean of L_i over the anchors i with |P(i)| > 0

    A(i) = every sample but i, P(i) = the samples in A(i) with label y_i. Anchors without a
    positive (a tail class seen once in the batch) are left out of the mean rather than
    contributing 0 or NaN; when no anchor has one, the result is a zero that still carries a
    graph. Unlike SupContrast's code there is no τ / base_τ factor: Eq. 6 has none.
    """
    if tau <= 0:
        raise ValueError(f"separation temperature tau must be > 0, got {tau}")
    n = features.shape[0]
    if n < 2:
        # No sample can have a positive; decided on the static shape, so no device sync.
        return features.sum() * 0.0
    # float32 under autocast too: a half-precision logsumexp over a batch loses the small terms.
    z = F.normalize(features.float(), dim=1)
    sim = z @ z.T / tau
    self_mask = torch.eye(n, dtype=torch.bool, device=features.device)
    # logsumexp over A(i): the self-similarity is removed with -inf, and every row keeps at least
    # one finite entry because n >= 2, so the denominator is finite and stable.
    log_denominator = torch.logsumexp(sim.masked_fill(self_mask, float("-inf")), dim=1)
    log_prob = sim - log_denominator.unsqueeze(1)
    positives = (labels.unsqueeze(0) == labels.unsqueeze(1)) & ~self_mask
    num_positives = positives.sum(dim=1)
    pos_log_prob = torch.where(positives, log_prob, torch.zeros_like(log_prob)).sum(dim=1)
    per_anchor = -pos_log_prob / num_positives.clamp_min(1)
    has_positive = num_positives > 0
    # Branch-free mean over anchors with positives: the all-singleton batch yields 0 / 1 = 0.
    total = torch.where(has_positive, per_anchor, torch.zeros_like(per_anchor)).sum()
    return total / has_positive.sum().clamp_min(1)
