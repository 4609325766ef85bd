"""Class-wise standard and robust accuracy on a (balanced) test set.

Evaluation runs in fp32 with BatchNorm in eval mode; the robust attack draws its random start
from its own seeded generator so evaluating never moves the training RNG (resume stays exact).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from srat_engine.attacks import attack_mode, pgd_linf
from srat_engine.data.resident import to_inputs


@dataclass(frozen=True)
class AttackParams:
    eps: float
    step_size: float
    steps: int
    random_start: bool = True


def classwise_correct(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    *,
    batch_size: int,
    attack: AttackParams | None = None,
    clip: tuple[float, float] | None = (0.0, 1.0),
    seed: int = 0,
    features_into: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Correct predictions per class as a device tensor, clean or under PGD, without waiting
    for the device: the caller's ``.tolist()`` is the evaluation's one host sync.

    With `features_into`, the penultimate features of the evaluated inputs are appended to it
    from the same forward pass (`head(features(x))` is the model's forward by construction).
    """
    was_training = model.training
    model.eval()
    correct = torch.zeros(num_classes, dtype=torch.long, device=y.device)
    generator = torch.Generator(device=y.device).manual_seed(seed)
    try:
        for start in range(0, len(y), batch_size):
            xb = to_inputs(x[start : start + batch_size])
            yb = y[start : start + batch_size]
            if attack is not None and attack.steps > 0 and attack.eps > 0:
                with attack_mode(model, "eval"):
                    xb = pgd_linf(
                        model,
                        xb,
                        yb,
                        eps=attack.eps,
                        step_size=attack.step_size,
                        steps=attack.steps,
                        random_start=attack.random_start,
                        generator=generator,
                        clip=clip,
                    ).x_adv
            with torch.no_grad():
                if features_into is None:
                    logits = model(xb)
                else:
                    features = model.features(xb)
                    features_into.append(features.float())
                    logits = model.head(features)
                hits = logits.argmax(dim=1) == yb
            # index_add_ rather than bincount(yb[hits]): boolean indexing has a data-dependent
            # size, which makes every batch wait for the device
            correct.index_add_(0, yb, hits.long())
    finally:
        model.train(was_training)
    return correct


def class_totals(y: torch.Tensor, num_classes: int) -> list[int]:
    return torch.bincount(y, minlength=num_classes).tolist()
