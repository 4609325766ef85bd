"""Logit adjustment by the class prior: the train-time shift (logit-adjusted loss, Menon et al.
2021, "Long-tail learning via logit adjustment", Sec. 5; balanced softmax, Ren et al. 2020,
"Balanced Meta-Softmax for Long-Tailed Visual Recognition", Sec. 3.1) and the post-hoc shift at
inference (Menon et al. 2021, Sec. 4)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from srat_engine.per_class import check_class_counts


def class_log_prior(counts: Sequence[int]) -> Tensor:
    """log π, shape [C]: log(n_c / Σ_j n_j) from the training class counts.

    Only differences between classes matter downstream: softmax and argmax are unchanged by
    adding the same constant to every logit, so log n_c (what the balanced-softmax and AT-BSL
    reference codes add) and log π_c give the same loss and the same predictions for any tau.
    """
    check_class_counts(counts, "class_log_prior")
    # float64 so log(n / N) of a 1-sample class among millions keeps its digits before the cast.
    n = torch.tensor(list(counts), dtype=torch.float64)
    return torch.log(n / n.sum()).to(torch.get_default_dtype())


def prior_shifted_logits(logits: Tensor, log_prior: Tensor, tau: float = 1.0) -> Tensor:
    """Train-time logits [N, C]: z + tau * log π (broadcast over the batch).

    ``tau = 1`` is the balanced softmax (Ren et al. 2020: softmax with n_c e^{z_c}); other tau
    are Menon et al.'s logit-adjusted loss (their default tau = 1 too). The shift raises head
    logits during training, so the model learns to lower them; the raw z are then used (or
    post-hoc adjusted) at test time.
    """
    return logits + tau * log_prior.to(device=logits.device, dtype=logits.dtype)


def posthoc_adjusted_logits(logits: Tensor, log_prior: Tensor, tau: float = 1.0) -> Tensor:
    """Inference-time logits [N, C]: z - tau * log π, whose argmax estimates the balanced-error
    Bayes classifier argmax_y P(y|x) / π_y^tau (Menon et al. 2021, Sec. 4)."""
    return logits - tau * log_prior.to(device=logits.device, dtype=logits.dtype)


def logit_adjusted_loss(
    logits: Tensor, target: Tensor, log_prior: Tensor, tau: float = 1.0
) -> Tensor:
    """Per-sample loss [N]: CE(z + tau * log π, y); ``tau = 1`` is the balanced-softmax loss
    (AT-BSL's and REAT's outer loss), ``tau = 0`` plain cross entropy."""
    return F.cross_entropy(prior_shifted_logits(logits, log_prior, tau), target, reduction="none")
