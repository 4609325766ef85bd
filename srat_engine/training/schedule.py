"""Per-epoch schedule: learning rate, when reweighting and GAIR weights switch on.

Epochs are 0-based inside the engine (shown 1-based to people). With the paper's milestones
[160, 180] and gamma 0.01, epochs 0-159 use lr, 160-179 lr*0.01, 180-199 lr*1e-4, matching
LDAM-DRW's `epoch // 160` convention that SRAT's deferred schedule follows.
"""

from __future__ import annotations

from srat_engine.config.resolve import Resolved
from srat_engine.config.schema import RunConfig


def learning_rate(epoch: int, config: RunConfig, resolved: Resolved) -> float:
    """lr * gamma^(number of milestones <= epoch)."""
    passed = sum(1 for m in resolved.lr_milestones if epoch >= m)
    return config.train.lr * config.train.lr_gamma**passed


def reweighting_active(epoch: int, resolved: Resolved) -> bool:
    """CB from epoch 0; DRCB/SRAT from the (scaled) reweight epoch T_d (Algorithm 1)."""
    return resolved.reweight_epoch is not None and epoch >= resolved.reweight_epoch


def gair_active(epoch: int, resolved: Resolved) -> bool:
    """GAIRAT weights from its begin epoch; plain mean loss before (GAIRAT.py)."""
    return resolved.gair_begin_epoch is not None and epoch >= resolved.gair_begin_epoch
