"""The interface every srat model implements: penultimate features plus a separate head."""

from __future__ import annotations

from torch import Tensor, nn


class SratModel(nn.Module):
    """A classifier split into ``features`` (penultimate, pooled) and ``head`` (to logits).

    The split exists because the feature-separation loss of SRAT works on the penultimate
    features while the classification losses work on the logits; keeping ``forward`` defined as
    ``head(features(x))`` guarantees both views come from the same computation.

    Inputs are floats in [0, 1] with no normalisation layer, so adversarial perturbation budgets
    are expressed in pixel space.
    """

    feature_dim: int
    head: nn.Module

    def __init__(self, feature_dim: int, head: nn.Module) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        self.head = head

    def features(self, x: Tensor) -> Tensor:
        """Return the penultimate features, shape ``[N, feature_dim]``."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """Return the logits, shape ``[N, num_classes]``."""
        return self.head(self.features(x))
