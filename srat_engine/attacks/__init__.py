"""Adversarial attacks used for training and evaluation."""

from srat_engine.attacks.class_budget import (
    WARMUP_STARTS,
    class_step_sizes,
    warmup_budgets,
)
from srat_engine.attacks.pgd import BN_MODES, PGDResult, attack_mode, pgd_linf, start_noise

__all__ = [
    "BN_MODES",
    "WARMUP_STARTS",
    "PGDResult",
    "attack_mode",
    "class_step_sizes",
    "pgd_linf",
    "start_noise",
    "warmup_budgets",
]
