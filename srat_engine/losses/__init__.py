"""Per-sample losses and weights for imbalanced adversarial training (reduction is separate)."""

from srat_engine.losses.equalisation import per_class_mean_losses, taet_equalisation_loss
from srat_engine.losses.focal import focal_loss
from srat_engine.losses.gair import GAIR_FUNCS, gair_weights
from srat_engine.losses.ldam import ldam_loss
from srat_engine.losses.logit_adjustment import (
    class_log_prior,
    logit_adjusted_loss,
    posthoc_adjusted_logits,
    prior_shifted_logits,
)
from srat_engine.losses.reat import (
    TFA_MODES,
    reat_inner_weights,
    reat_tail_classes,
    tail_feature_alignment,
)
from srat_engine.losses.reduction import REDUCTION_MODES, weighted_mean
from srat_engine.losses.robal import robal_train_logits
from srat_engine.losses.separation import separation_loss
from srat_engine.losses.trades import trades_kl, trades_loss

__all__ = [
    "GAIR_FUNCS",
    "REDUCTION_MODES",
    "TFA_MODES",
    "class_log_prior",
    "focal_loss",
    "gair_weights",
    "ldam_loss",
    "logit_adjusted_loss",
    "per_class_mean_losses",
    "posthoc_adjusted_logits",
    "prior_shifted_logits",
    "reat_inner_weights",
    "reat_tail_classes",
    "robal_train_logits",
    "separation_loss",
    "taet_equalisation_loss",
    "tail_feature_alignment",
    "trades_kl",
    "trades_loss",
    "weighted_mean",
]
