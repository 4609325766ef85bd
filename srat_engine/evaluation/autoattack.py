"""AutoAttack, standard version (Croce & Hein, ICML 2020), from torchattacks' components.

The standard l_inf ensemble runs four attacks in sequence, each only on the examples that all
earlier attacks failed to break, and an example counts as robust only if it survives all four:

    APGD-CE   step-size-free PGD on cross-entropy, 100 iterations, 1 restart
    APGD-T    APGD on the targeted DLR loss, 100 iterations, 9 target classes, 1 restart
    FAB-T     targeted minimal-perturbation attack (linearised boundary), 100 iterations,
              9 target classes, 1 restart
    Square    score-based black-box random search (no gradients), 5000 queries, 1 restart

These are the settings of the reference implementation (fra31/auto-attack, version="standard").
torchattacks' own ``AutoAttack(version="standard")`` leaves each attack at its class default of
10 iterations (and n_classes - 1 targets), a weaker attack than the one the paper and RobustBench
report, so the ensemble is assembled here from torchattacks' APGD, APGDT, FAB and Square with
the reference settings; the attack code itself is torchattacks'.

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


def standard_settings(num_classes: int) -> dict[str, Any]:
    """What eval.json records about the ensemble (the reference's standard version)."""
    targets = min(AA_TARGET_CLASSES, num_classes - 1)
    return {
        "version": "standard",
        "norm": "Linf",
        "attacks": list(AA_ORDER),
        "iterations": AA_ITERATIONS,
        "target_classes": targets,
        "square_queries": AA_SQUARE_QUERIES,
        "restarts": 1,
        "package": f"torchattacks {torchattacks_version()}",
    }


def _build(model: nn.Module, num_classes: int, eps: float, seed: int) -> list[tuple[str, Any]]:
    import torchattacks

    targets = min(AA_TARGET_CLASSES, num_classes - 1)
    common: dict[str, Any] = {"norm": "Linf", "eps": eps, "seed": seed, "n_restarts": 1}
    apgd_ce = torchattacks.APGD(model, steps=AA_ITERATIONS, loss="ce", **common)
    apgd_t = torchattacks.APGDT(model, steps=AA_ITERATIONS, n_classes=num_classes, **common)
    fab_t = torchattacks.FAB(
        model, steps=AA_ITERATIONS, multi_targeted=True, n_classes=num_classes, **common
    )
    square = torchattacks.Square(model, n_queries=AA_SQUARE_QUERIES, **common)
    # the classes set n_target_classes = n_classes - 1; the reference uses 9 for any dataset
    apgd_t.n_target_classes = targets
    fab_t.n_target_classes = targets
    return list(zip(AA_ORDER, (apgd_ce, apgd_t, fab_t, square), strict=True))


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
        attacks = _build(model, num_classes, eps, seed)
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
