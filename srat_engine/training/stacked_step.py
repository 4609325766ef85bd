"""K runs of one configuration trained in one process as one stacked model (`torch.func`).

A 32x32 ResNet-18 at batch 128 cannot fill a large GPU. Instead of K processes taking turns on
it, the K runs' weights are stacked along a new leading axis and every forward and backward of
a step runs once for all of them: ``vmap`` over ``functional_call`` of one skeleton module,
which turns each convolution into one grouped convolution of K groups. Each run keeps
everything that makes it itself: its model, optimiser and momentum, its generator (the
epoch's order, each sample's crop and flip, the attack's random start, drawn in the order a
lone run draws them), its data, its run directory and checkpoints. So on a CPU a stacked run
trains as it would alone to float rounding, and a checkpoint of a stacked run resumes alone.

Per step: the K runs' parameters and buffers are stacked (a copy, one pass over the weights
against the attack's 2 (steps + 1) passes over the activations), the attack and the update's
loss run stacked, each run's gradients are handed back to its own parameters and its own
optimiser steps, and BatchNorm's running statistics are copied back.

Which configurations stack is `config.stacking`'s rule: the runs of one stack differ in their
seed alone, so they share the schedule (learning rate, reweighting and GAIR epochs, lambda) and
the class counts every weight comes from.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap

from srat_engine.attacks import attack_mode, pgd_linf, start_noise
from srat_engine.config.schema import RunConfig
from srat_engine.config.stacking import check_stackable
from srat_engine.models.stacked import StackedModels, named_tensors, stack_batches, stack_by_name
from srat_engine.training.step import TrainStep


class StackedTrainStep:
    """One mini-batch of Algorithm 1 for K runs at once, as each of their `TrainStep`s would.

    Built from the runs' eager steps (one configuration, their seeds apart); each call takes
    the steps of the runs still training (a run that failed leaves the stack) and each run's
    raw batch, and adds to each run's epoch sums as `TrainStep.__call__` does.
    """

    def __init__(self, steps: Sequence[TrainStep]) -> None:
        check_stackable([step.config for step in steps])
        first = steps[0]
        self.stack = StackedModels(first.model)
        self.config: RunConfig = first.config

    def __call__(
        self,
        steps: Sequence[TrainStep],
        xs: Sequence[Tensor],
        ys: Sequence[Tensor],
        *,
        class_w: Tensor | None = None,
        use_gair: bool = False,
        lam: float = 0.0,
        sums: Sequence[Tensor] | None = None,
    ) -> None:
        """Train run k on raw batch ``xs[k]`` with labels ``ys[k]``; the epoch's class
        weights, GAIR switch and lambda are the stack's (one configuration)."""
        if not steps:
            return
        models = [step.model for step in steps]
        params, buffers = self.stack.params(models), self.stack.buffers(models)
        lead = steps[0]
        with lead.precision_scope():
            # each run's crops and flips from its own generator, as alone
            xb = stack_batches(
                [step.inputs(x) for step, x in zip(steps, xs, strict=True)], lead.channels_last
            )
            y = torch.stack(list(ys), dim=1)
            natural = xb
            kappa = torch.zeros(y.shape, dtype=torch.int64, device=y.device)
            if lead.adversarial:
                xb, kappa = self._attack(steps, params, buffers, xb, y)
            for value in params.values():
                value.requires_grad_(True)
            self.stack.skeleton.train()

            def run_loss(
                p: dict[str, Tensor], b: dict[str, Tensor], x: Tensor, nat: Tensor,
                target: Tensor, k: Tensor,
            ) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
                total, sep, logits = lead.update_loss(
                    x,
                    nat,
                    target,
                    adversarial=lead.adversarial,
                    kappa=k,
                    class_w=class_w,
                    use_gair=use_gair,
                    lam=lam,
                    forward=lambda inputs: self.stack.forward(p, b, inputs),
                )
                return total, sep if sep is not None else torch.zeros_like(total), logits

            totals, seps, logits = vmap(run_loss, in_dims=(0, 0, 1, 1, 1, 1), out_dims=(0, 0, 1))(
                params, buffers, xb, natural, y, kappa
            )
            # each run's loss depends on its own slice alone: the sum's gradient is each one's
            totals.sum().backward()
            for k, (step, model) in enumerate(zip(steps, models, strict=True)):
                step.optimizer.zero_grad(set_to_none=True)
                named = dict(model.named_parameters())
                for name in self.stack.param_names:
                    grad = params[name].grad
                    named[name].grad = None if grad is None else grad[k]
                step.optimizer.step()
                with torch.no_grad():
                    for name, buffer in model.named_buffers():
                        buffer.copy_(buffers[name][k])
            if sums is not None:
                with torch.no_grad():
                    hits = (logits.argmax(-1) == y).sum(0)
                    finite = torch.isfinite(totals.detach())
                    batch = y.shape[0]
                    for k, run_sums in enumerate(sums):
                        run_sums[0] += totals[k].detach() * batch
                        if lam:
                            run_sums[1] += seps[k].detach() * batch
                        run_sums[2] += hits[k]
                        run_sums[3] += (~finite[k]).float()

    def _attack(
        self,
        steps: Sequence[TrainStep],
        params: dict[str, Tensor],
        buffers: dict[str, Tensor],
        xb: Tensor,
        y: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """The training attack of every run at once: PGD on the sum over runs of each run's
        summed cross entropy, or of its summed training loss with attack.loss = "training"
        (`TrainStep.attack`), which gives each sample its own run's input gradient."""
        config = self.config
        lead = steps[0]
        noise = None
        if config.attack.random_start:
            draws = [start_noise(xb[:, k], step.generator) for k, step in enumerate(steps)]
            noise = stack_batches(draws, lead.channels_last)

        if lead.folded is not None:
            # as alone: BatchNorm folded into the convolutions for the attack's 2 K passes,
            # each run's folded weights from its own current weights and statistics; a view
            # is a module of its own run, so functional_call swaps in the stacked weights and
            # puts the run's back afterwards
            views = [step.folded for step in steps]
            for view in views:
                assert view is not None
                view.refresh()
            module: nn.Module = lead.folded
            named = [dict(named_tensors(view)) for view in views]  # type: ignore[arg-type]
            state = stack_by_name(named, list(named[0]))

            def logits_of(x: Tensor) -> Tensor:
                return vmap(
                    lambda s, xk: functional_call(module, s, (xk,)), in_dims=(0, 1), out_dims=1
                )(state, x)
        else:

            def logits_of(x: Tensor) -> Tensor:
                return self.stack(params, buffers, x)[1]

        # the attack's BN mode on the skeleton and on the lead run's model, whose modules the
        # folded view shares (a BN it could not fold, after a sum, must be in eval mode too)
        with (
            attack_mode(self.stack.skeleton, config.attack.bn_mode),
            attack_mode(lead.model, config.attack.bn_mode),
            lead.autocast(),
        ):
            result = pgd_linf(
                logits_of,  # type: ignore[arg-type]
                xb,
                y,
                eps=config.attack.eps,
                step_size=config.attack.step_size,
                steps=config.attack.steps,
                random_start=config.attack.random_start,
                loss_fn=lead.attack_training_loss()
                or (
                    lambda logits, target: F.cross_entropy(
                        logits.flatten(0, 1), target.flatten(), reduction="sum"
                    )
                ),
                clip=lead.clip,
                noise=noise,
            )
        return result.x_adv, result.kappa
