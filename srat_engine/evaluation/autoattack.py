"""AutoAttack, standard version (Croce & Hein, ICML 2020), from torchattacks' components.

The standard l_inf ensemble runs four attacks in sequence, each only on the examples that all
earlier attacks failed to break, and an example counts as robust only if it survives all four:

    APGD-CE   step-size-free PGD on cross-entropy, 100 iterations, 1 restart, momentum rho 0.75
    APGD-T    APGD on the targeted DLR loss, 100 iterations, 9 target classes, 1 restart
    FAB-T     targeted minimal-perturbation attack (linearised boundary), 100 iterations,
              9 target classes, 1 restart, alpha_max 0.1, eta 1.05, beta 0.9
    Square    score-based black-box random search (no gradients) on the margin loss, 5000
              queries, 1 restart, p_init 0.8, its p schedule not rescaled to n_queries

These are the settings of the reference implementation (fra31/auto-attack, version="standard":
the constructors in ``AutoAttack.__init__`` and ``set_version``), every one of them passed
explicitly here rather than left to torchattacks' class defaults, which differ: 10 iterations,
n_classes - 1 targets, and Square's ``resc_schedule=True``, which squeezes the schedule of the
square size p into n_queries (at 5000 queries p halves twice as often as in the reference).
torchattacks' own ``AutoAttack(version="standard")`` inherits those defaults, a weaker attack
than the one the paper and RobustBench report, so the ensemble is assembled here from
torchattacks' APGD, APGDT, FAB and Square; the attack code itself is torchattacks'.
tests/test_autoattack_settings.py checks the built attacks against the reference's values.

Seeds: like the reference with a fixed ``seed``, every attack gets the same seed and reseeds
torch's RNG with it at each call (one call per batch); the reference's default (``seed=None``)
is the clock, srat passes the evaluation's seed so a result can be reproduced.

Inputs are images in [0, 1]: srat models have no normalisation layer (`SratModel`), which is
what AutoAttack assumes (it clips to [0, 1] and measures eps in that space).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from srat_engine.attacks import attack_mode
from srat_engine.errors import SratError

AA_ITERATIONS = 100
AA_TARGET_CLASSES = 9
AA_SQUARE_QUERIES = 5000
AA_ORDER: tuple[str, ...] = ("apgd-ce", "apgd-t", "fab-t", "square")
# torchattacks' class of each attack of the ensemble
_CLASSES: dict[str, str] = {
    "apgd-ce": "APGD",
    "apgd-t": "APGDT",
    "fab-t": "FAB",
    "square": "Square",
}


def torchattacks_version() -> str:
    import torchattacks

    return str(getattr(torchattacks, "__version__", "unknown"))


def require_autoattack(num_classes: int, input_dims: int) -> None:
    """SratError unless AutoAttack can run: torchattacks installed, images, >= 4 classes."""
    try:
        import torchattacks  # noqa: F401
    except ImportError:
        raise SratError(
            "AutoAttack needs torchattacks: pip install 'torchattacks==3.3.0' (see README)"
        ) from None
    if input_dims != 4:
        raise SratError("AutoAttack attacks images [N, C, H, W]; this run's inputs are vectors")
    if num_classes < 4:
        # APGD-T's targeted DLR loss reads the 4th-largest logit
        raise SratError(f"AutoAttack needs at least 4 classes (APGD-T), this run has {num_classes}")


def ensemble_settings(num_classes: int) -> dict[str, dict[str, Any]]:
    """Each attack's settings in torchattacks' constructor names (eps and seed aside), the
    reference's standard l_inf values. ``n_target_classes`` is set after construction:
    torchattacks derives it as n_classes - 1, the reference uses 9 for any dataset (fewer only
    when there are fewer other classes). The reference's APGD options ``use_largereps`` and
    ``topk`` (both off) have no torchattacks counterpart; they only act for l_1."""
    targets = min(AA_TARGET_CLASSES, num_classes - 1)
    linf: dict[str, Any] = {"norm": "Linf", "n_restarts": 1}
    apgd: dict[str, Any] = {**linf, "steps": AA_ITERATIONS, "eot_iter": 1, "rho": 0.75}
    return {
        "apgd-ce": {**apgd, "loss": "ce"},
        "apgd-t": {**apgd, "n_classes": num_classes, "n_target_classes": targets},
        "fab-t": {
            **linf,
            "steps": AA_ITERATIONS,
            "alpha_max": 0.1,
            "eta": 1.05,
            "beta": 0.9,
            "multi_targeted": True,
            "n_classes": num_classes,
            "n_target_classes": targets,
        },
        "square": {
            **linf,
            "n_queries": AA_SQUARE_QUERIES,
            "p_init": 0.8,
            "loss": "margin",
            "resc_schedule": False,
        },
    }


def standard_settings(num_classes: int) -> dict[str, Any]:
    """What eval.json records about the ensemble (the reference's standard version)."""
    return {
        "version": "standard",
        "norm": "Linf",
        "attacks": list(AA_ORDER),
        "iterations": AA_ITERATIONS,
        "target_classes": min(AA_TARGET_CLASSES, num_classes - 1),
        "square_queries": AA_SQUARE_QUERIES,
        "restarts": 1,
        "settings": ensemble_settings(num_classes),
        "package": f"torchattacks {torchattacks_version()}",
    }


def build_ensemble(
    model: nn.Module, num_classes: int, eps: float, seed: int
) -> list[tuple[str, Any]]:
    """The four torchattacks attacks in AA_ORDER, built with `ensemble_settings`."""
    import torchattacks

    attacks = []
    for name, settings in ensemble_settings(num_classes).items():
        kwargs = dict(settings)
        targets = kwargs.pop("n_target_classes", None)
        attack = getattr(torchattacks, _CLASSES[name])(
            model, eps=eps, seed=seed, verbose=False, **kwargs
        )
        if targets is not None:
            attack.n_target_classes = targets
        attacks.append((name, attack))
    return attacks


@dataclass
class AutoAttackResult:
    """robust: bool [N], survived every attack (and was classified correctly to begin with).
    broken_by: examples each attack broke first (AA_ORDER keys), summed over batches."""

    robust: Tensor
    broken_by: dict[str, int] = field(default_factory=lambda: dict.fromkeys(AA_ORDER, 0))


def autoattack_linf(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    num_classes: int,
    seed: int = 0,
) -> AutoAttackResult:
    """Run the standard ensemble on one batch of [0, 1] images; the model is attacked and
    judged in eval mode with frozen parameters, and torch's global RNG (which torchattacks
    reseeds per call) is restored afterwards."""
    require_autoattack(num_classes, x.dim())
    x, y = x.detach(), y.detach()
    result = AutoAttackResult(robust=torch.zeros(len(y), dtype=torch.bool, device=y.device))
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), attack_mode(model, "eval"):
        attacks = build_ensemble(model, num_classes, eps, seed)
        with torch.no_grad():
            robust = model(x).argmax(dim=1) == y
        for name, attack in attacks:
            todo = robust.nonzero().flatten()
            if todo.numel() == 0:
                break
            x_adv = attack(x[todo], y[todo]).detach()
            # An attack's output is trusted only after projecting it back into the threat model
            # (and replacing non-finite values): projection can only weaken an attack, so an
            # example counted as broken was broken by a valid perturbation.
            x0 = x[todo]
            x_adv = torch.where(torch.isfinite(x_adv), x_adv, x0)
            x_adv = torch.clamp(torch.minimum(torch.maximum(x_adv, x0 - eps), x0 + eps), 0.0, 1.0)
            with torch.no_grad():
                still = model(x_adv).argmax(dim=1) == y[todo]
            robust[todo[~still]] = False
            result.broken_by[name] += int((~still).sum())
    result.robust = robust
    return result
