"""What a run computes, counted before it runs: which epochs are evaluated, and the model work
of its training and its evaluation in forward-pass equivalents.

A forward-pass equivalent is one example through the model once; a backward pass for input
gradients only costs about one more, a full backward (input and weight gradients) about two,
the convention of FLOP counts (`models.flops`). Pure and torch-free: the new-run form and
`srat run --dry-run` show it, `srat bench` credits steps with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from srat_engine.config.schema import EvalConfig, RunConfig

if TYPE_CHECKING:  # resolve imports the losses (torch); only the type is needed here
    from srat_engine.config.resolve import Resolved


def evaluation_due(epochs_done: int, epochs: int, config: EvalConfig) -> tuple[bool, bool]:
    """Whether the epoch that brings training to `epochs_done` (1-based) is evaluated, and
    whether robustly: every `eval.every` epochs, robustly on those that are also multiples
    of `eval.robust_every`; the last epoch always, both."""
    last = epochs_done == epochs
    evaluated = last or epochs_done % config.every == 0
    return evaluated, evaluated and (last or epochs_done % config.robust_every == 0)


def evaluation_counts(epochs: int, config: EvalConfig) -> tuple[int, int]:
    """How many of `epochs` epochs are evaluated clean only and how many clean + robust, by
    :func:`evaluation_due` (the trainer's rule), counted in closed form (the new-run form
    shows it for every edit, whatever the epochs typed):

        evaluated = floor((E - 1) / a) + 1       the multiples of a = eval.every below E, and E
        robust    = floor((E - 1) / l) + 1       l = lcm(a, eval.robust_every)
        clean     = evaluated - robust           (both 0 for E = 0)
    """
    if epochs <= 0:
        return 0, 0
    every = config.every
    both = math.lcm(every, config.robust_every)
    evaluated = (epochs - 1) // every + 1
    robust = (epochs - 1) // both + 1
    return evaluated - robust, robust


def pgd_training_forwards(attack_steps: int) -> int:
    """Model work of one PGD-K adversarial training example, in forward passes: ``2K + 3``.

    Each of the K attack steps is one forward plus an input-only backward (about one forward's
    FLOPs), the update one forward plus a full backward (about two): PGD-10 is 23 forwards.
    Multiplied by ``models.flops.forward_flops`` it is the useful work `srat bench` credits a
    step with. K = 0 is natural training: 3.
    """
    return 2 * attack_steps + 3


def pgd_evaluation_forwards(attack_steps: int) -> int:
    """Model work of one example's robust evaluation under PGD-K, in forward passes: ``2K + 1``
    (K forward + input-backward pairs, then the prediction on the adversarial example); K = 0
    is the clean prediction alone."""
    return 2 * attack_steps + 1


@dataclass(frozen=True)
class Workload:
    """A run's model work in forward-pass equivalents (`run_workload`)."""

    train: int  # every epoch's training
    per_epoch_eval: int  # every evaluated epoch's evaluation together
    final_eval: int  # the final evaluation: clean and robust on the whole test set
    clean_epochs: int  # epochs evaluated clean only
    robust_epochs: int  # epochs evaluated clean and robust
    test_size: int
    robust_size: int  # the balanced test subset each robust epoch attacks

    @property
    def evaluated_epochs(self) -> int:
        return self.clean_epochs + self.robust_epochs

    @property
    def evaluation(self) -> int:
        return self.per_epoch_eval + self.final_eval

    @property
    def total(self) -> int:
        return self.train + self.evaluation

    @property
    def evaluation_share(self) -> float:
        """Evaluation's part of the run's work, in [0, 1]."""
        return self.evaluation / self.total if self.total else 0.0


def run_workload(config: RunConfig, resolved: Resolved) -> Workload | None:
    """The run's model work, or None when the test split's size is not known (a run directory
    made before `Resolved.test_class_counts`). With E epochs of N training examples:

        train          = N (E_nat 3 + E_adv (2K + 3))            (`pgd_training_forwards`)
        per_epoch_eval = n_c T + n_f (T + R (2K_e + 1))          (`pgd_evaluation_forwards`)
        final_eval     = T + T (2K_e + 1)

    with E_nat the epochs trained without an attack (all of them for natural training, TAET's
    stage 1), K the training attack's steps, K_e the evaluation's (0 when eval.eps is 0),
    n_c / n_f the epochs evaluated clean only / clean and robust (`evaluation_counts`), T the
    test examples and R = sum_c min(T_c, eval.robust_per_class) the robust subset. The PGD-AT
    count: TRADES' clean forward and AWP's weight-perturbation pass are a few forwards more.
    """
    if resolved.test_class_counts is None:
        return None
    epochs = config.train.epochs
    if not resolved.method.get("adversarial", True) or config.attack.steps == 0:
        natural = epochs
    else:
        natural = min(resolved.taet_stage2_epoch or 0, epochs)
    train = resolved.train_size * (
        natural * pgd_training_forwards(0)
        + (epochs - natural) * pgd_training_forwards(config.attack.steps)
    )
    test = sum(resolved.test_class_counts)
    robust = sum(min(n, config.eval.robust_per_class) for n in resolved.test_class_counts)
    eval_steps = config.eval.steps if config.eval.eps > 0 else 0
    per_example = pgd_evaluation_forwards(eval_steps)
    clean_epochs, robust_epochs = evaluation_counts(epochs, config.eval)
    return Workload(
        train=train,
        per_epoch_eval=clean_epochs * test + robust_epochs * (test + robust * per_example),
        final_eval=test + test * per_example,
        clean_epochs=clean_epochs,
        robust_epochs=robust_epochs,
        test_size=test,
        robust_size=robust,
    )
