"""Per-sample losses and weights for imbalanced adversarial training (reduction is separate)."""

from srat_engine.losses.class_balanced import class_balanced_weights, deferred_class_weights
from srat_engine.losses.focal import focal_loss
from srat_engine.losses.gair import GAIR_FUNCS, gair_weights
from srat_engine.losses.ldam import ldam_loss, ldam_margins
from srat_engine.losses.reduction import REDUCTION_MODES, weighted_mean
from srat_engine.losses.separation import separation_loss

__all__ = [
    "GAIR_FUNCS",
    "REDUCTION_MODES",
    "class_balanced_weights",
    "deferred_class_weights",
    "focal_loss",
    "gair_weights",
    "ldam_loss",
    "ldam_margins",
    "separation_loss",
    "weighted_mean",
]
