"""Per-epoch schedule: learning rate, when reweighting, GAIR weights, AWP and TAET's
adversarial stage switch on, the class-wise attack budgets during their warm-up. Which epochs
are evaluated is `config.workload.evaluation_due`'s (the dry run counts them too).

Epochs are 0-based inside the engine (shown 1-based to people). With the paper's milestones
[160, 180] and gamma 0.01, epochs 0-159 use lr, 160-179 lr*0.01, 180-199 lr*1e-4, matching
LDAM-DRW's `epoch // 160` convention that SRAT's deferred schedule follows.
"""

from __future__ import annotations

import torch

from srat_engine.attacks.class_budget import class_step_sizes, warmup_budgets
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


def awp_active(epoch: int, resolved: Resolved) -> bool:
    """AWP from its (scaled) warm-up epoch on (csdongxian/AWP: ``epoch >= args.awp_warmup``)."""
    return resolved.awp_begin_epoch is not None and epoch >= resolved.awp_begin_epoch


def natural_stage(epoch: int, resolved: Resolved) -> bool:
    """TAET's stage 1, clean CE with no attack, before its (scaled) stage-2 epoch (the TAET
    notebook's ``if epoch < 40``); False for every other method."""
    return resolved.taet_stage2_epoch is not None and epoch < resolved.taet_stage2_epoch


def attack_budgets(
    epoch: int, config: RunConfig, resolved: Resolved
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The class-wise (eps_c, step_c) of ``epoch``'s training attack, shape [C] each, or None
    without class budgets: the resolved eps_c under the linear warm-up over the scaled
    ``budget_warmup_epochs`` (`attacks.class_budget.warmup_budgets`), and step sizes
    step_size * eps_c(epoch) / eps, as RobustLT scales the warmed-up budget."""
    if resolved.class_budgets is None:
        return None
    attack = config.attack
    full = torch.tensor(resolved.class_budgets, dtype=torch.float32)
    warmup = resolved.budget_warmup_epochs or 0
    budgets = warmup_budgets(full, attack.eps, epoch, warmup, attack.budget_warmup_start)
    return budgets, class_step_sizes(budgets, attack.eps, attack.step_size)
