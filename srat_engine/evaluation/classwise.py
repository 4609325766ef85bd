"""Class-wise standard and robust accuracy on a (balanced) test set.

Evaluation runs in fp32 with BatchNorm in eval mode; the robust attack draws its random start
from its own seeded generator so evaluating never moves the training RNG (resume stays exact).
"""

from __future__ import annotations

from collections.abc import Callable
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


# Which examples of one batch ([0, 1] inputs, labels, the evaluation's generator) the model
# gets right: a bool tensor on the batch's device.
BatchHits = Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


def count_correct(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    *,
    batch_size: int,
    hits: BatchHits,
    seed: int = 0,
) -> torch.Tensor:
    """Correct predictions per class as a device tensor: ``correct[c] = sum over examples i
    with y_i = c of hits_i``, with ``hits`` called on each batch of ``batch_size`` inputs.

    One generator seeded with `seed`, on the labels' device, is handed to every batch (an
    attack's random starts), so a count is reproducible and never moves the global RNG.
    Nothing here waits for the device: the caller's ``.tolist()`` is the one host sync.
    """
    correct = torch.zeros(num_classes, dtype=torch.long, device=y.device)
    generator = torch.Generator(device=y.device).manual_seed(seed)
    for start in range(0, len(y), batch_size):
        xb = to_inputs(x[start : start + batch_size])
        yb = y[start : start + batch_size]
        # index_add_ rather than bincount(yb[hits]): boolean indexing has a data-dependent
        # size, which makes every batch wait for the device
        correct.index_add_(0, yb, hits(xb, yb, generator).long())
    return correct


def clean_hits(model: nn.Module) -> BatchHits:
    """Whether `model` classifies each input right as it is (no gradients, no attack)."""

    def hits(xb: torch.Tensor, yb: torch.Tensor, _generator: torch.Generator) -> torch.Tensor:
        with torch.no_grad():
            return model(xb).argmax(dim=1) == yb

    return hits


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
    for the device (`count_correct`), with BatchNorm in eval mode.

    With `features_into`, the penultimate features of the evaluated inputs are appended to it
    from the same forward pass (`head(features(x))` is the model's forward by construction).
    """
    predict = clean_hits(model)

    def hits(xb: torch.Tensor, yb: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
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
        if features_into is None:
            return predict(xb, yb, generator)
        with torch.no_grad():
            features = model.features(xb)
            features_into.append(features.float())
            return model.head(features).argmax(dim=1) == yb

    was_training = model.training
    model.eval()
    try:
        return count_correct(x, y, num_classes, batch_size=batch_size, hits=hits, seed=seed)
    finally:
        model.train(was_training)


def class_totals(y: torch.Tensor, num_classes: int) -> list[int]:
    """Examples per class: ``total[c] = #{i : y_i = c}``."""
    return torch.bincount(y, minlength=num_classes).tolist()
