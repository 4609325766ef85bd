"""Class-wise standard and robust accuracy on a (balanced) test set.

Evaluation runs in fp32 (its callers enter `srat_engine.tf32.strict_fp32`: TF32 off too) with
BatchNorm in eval mode; the robust attack draws its random start from its own seeded generator
so evaluating never moves the training RNG (resume stays exact).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Correct predictions per class as a device tensor: ``correct[c] = sum over examples i
    with y_i = c of hits_i``, with ``hits`` called on each batch of ``batch_size`` inputs.

    One generator seeded with `seed`, on the labels' device, is handed to every batch (an
    attack's random starts), so a count is reproducible and never moves the global RNG:
    `generator` when given (re-seeded here; a graphed attack needs the generator its graphs
    were captured with, `evaluation.graphs.GraphedHits`), else a new one.
    Nothing here waits for the device: the caller's ``.tolist()`` is the one host sync.
    """
    correct = torch.zeros(num_classes, dtype=torch.long, device=y.device)
    if generator is None:
        generator = torch.Generator(device=y.device)
    generator.manual_seed(seed)
    for start in range(0, len(y), batch_size):
        xb = to_inputs(x[start : start + batch_size])
        yb = y[start : start + batch_size]
        # index_add_ rather than bincount(yb[hits]): boolean indexing has a data-dependent
        # size, which makes every batch wait for the device
        correct.index_add_(0, yb, hits(xb, yb, generator).long())
    return correct


@contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode (BatchNorm's running statistics) for the duration, then back in
    the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def clean_hits(model: nn.Module) -> BatchHits:
    """Whether `model` classifies each input right as it is (no gradients, no attack)."""

    def hits(xb: torch.Tensor, yb: torch.Tensor, _generator: torch.Generator) -> torch.Tensor:
        with torch.no_grad():
            return model(xb).argmax(dim=1) == yb

    return hits


def pgd_hits(
    model: nn.Module,
    attack: AttackParams,
    clip: tuple[float, float] | None = (0.0, 1.0),
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> BatchHits:
    """Whether `model` classifies each input right after the engine's l_inf PGD (`pgd_linf`,
    BN in eval mode, frozen parameters) with `attack`'s budget; loss_fn None is its
    cross-entropy (PGD-k), `evaluation.cw.cw_loss` makes it CW-l_inf. No attack when
    ``attack.steps`` or ``attack.eps`` is 0: the clean prediction."""
    predict = clean_hits(model)
    if attack.steps == 0 or attack.eps == 0:
        return predict

    def hits(xb: torch.Tensor, yb: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        with attack_mode(model, "eval"):
            x_adv = pgd_linf(
                model,
                xb,
                yb,
                eps=attack.eps,
                step_size=attack.step_size,
                steps=attack.steps,
                random_start=attack.random_start,
                loss_fn=loss_fn,
                generator=generator,
                clip=clip,
            ).x_adv
        return predict(x_adv, yb, generator)

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
    """Correct predictions per class as a device tensor, clean or under PGD (`pgd_hits`),
    without waiting for the device (`count_correct`), with BatchNorm in eval mode.

    With `features_into` (clean only), the penultimate features of the evaluated inputs are
    appended to it from the same forward pass (`head(features(x))` is the model's forward by
    construction).
    """
    if attack is not None and features_into is not None:
        raise ValueError("features_into is read off the clean pass: no attack with it")
    if features_into is not None:
        hits = feature_hits(model, features_into)
    else:
        hits = clean_hits(model) if attack is None else pgd_hits(model, attack, clip)
    with evaluation_mode(model):
        return count_correct(x, y, num_classes, batch_size=batch_size, hits=hits, seed=seed)


def feature_hits(model: nn.Module, features_into: list[torch.Tensor]) -> BatchHits:
    """`clean_hits` that also appends each batch's penultimate features to `features_into`."""

    def hits(xb: torch.Tensor, yb: torch.Tensor, _generator: torch.Generator) -> torch.Tensor:
        with torch.no_grad():
            features = model.features(xb)
            features_into.append(features.float())
            return model.head(features).argmax(dim=1) == yb

    return hits


def class_totals(y: torch.Tensor, num_classes: int) -> list[int]:
    """Examples per class: ``total[c] = #{i : y_i = c}``."""
    return torch.bincount(y, minlength=num_classes).tolist()
