"""Adversarial attacks used for training and evaluation."""

from srat_engine.attacks.pgd import BN_MODES, PGDResult, attack_mode, pgd_linf

__all__ = ["BN_MODES", "PGDResult", "attack_mode", "pgd_linf"]
