"""A trained model read with post-hoc logit adjustment, for evaluation only.

Menon et al. 2021 ("Long-tail learning via logit adjustment", Sec. 4): argmax_y of
z_y - tau log(pi_y) estimates the balanced-error Bayes classifier from a model trained on the
long-tailed prior pi. AT-BSL's paper leaves it optional ("optionally subtract at inference");
srat applies it when `eval.posthoc_tau` > 0, to every evaluation pass and attack (per-epoch
and final accuracies, `srat eval`'s PGD, CW and AutoAttack), never to training or its attack.
"""

from __future__ import annotations

from torch import Tensor, nn

from srat_engine.models.base import SratModel


class _ShiftedHead(nn.Module):
    """`head(features) + shift`, the shift a fixed per-class vector."""

    def __init__(self, head: nn.Module, shift: Tensor) -> None:
        super().__init__()
        self.inner = head
        self.register_buffer("shift", shift, persistent=False)

    def forward(self, features: Tensor) -> Tensor:
        return self.inner(features) + self.shift


class PosthocAdjusted(SratModel):
    """`model` with logits z - tau log(pi): the same features and weights (shared, not copied),
    the head's output shifted per class."""

    def __init__(self, model: SratModel, log_prior: Tensor, tau: float) -> None:
        super().__init__(model.feature_dim, _ShiftedHead(model.head, -tau * log_prior))
        self.adjusted = model

    def features(self, x: Tensor) -> Tensor:
        return self.adjusted.features(x)


def posthoc_view(model: SratModel, log_prior: Tensor, tau: float) -> SratModel:
    """The model evaluation reads: `model` itself when tau = 0, else `PosthocAdjusted`."""
    if tau == 0:
        return model
    return PosthocAdjusted(model, log_prior.to(next(model.parameters()).device), tau)
