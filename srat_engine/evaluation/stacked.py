"""Class-wise accuracy of the K runs of a stack in one pass: each run's `count_correct`, as one.

The runs of a stack (`training.stacked_trainer`) train stacked and evaluate the same test set
after every epoch. One by one, each evaluation would put one small model on the device again,
K times; here the K models run as one stacked model (`models.stacked`): the clean pass is one
forward of the K models on the shared inputs, the robust pass one PGD-k of every run at once.
Each run's random start is drawn from its own generator, seeded as its lone evaluation seeds
it and drawn in the same order, so each run's counts are what its own `count_correct` gives,
to float rounding. On CUDA, after warm-up, a batch's stacked attack and prediction is one graph
replay (`graph_capture`), as a lone run's is (`evaluation.graphs`).

As in `evaluation.classwise`, the caller enters `srat_engine.tf32.strict_fp32`; BatchNorm
reads its running statistics; nothing here waits for the device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from srat_engine.attacks import pgd_linf, start_noise
from srat_engine.data.resident import to_inputs
from srat_engine.evaluation.classwise import AttackParams
from srat_engine.evaluation.graphs import HitsStatic, replayed_hits
from srat_engine.graph_capture import CUDA_GRAPHS, GraphBackend, GraphCache
from srat_engine.models.base import SratModel
from srat_engine.models.stacked import StackedModels, stack_batches


def _summed_cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy summed over samples and runs: each run's input gradient is its own."""
    return F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum")


class StackedEvaluation:
    """Clean and robust counts of K models of one architecture (`models`, in run order) on
    one test set; each call names the runs it evaluates (the stack's live ones) by position.

    `attack` is the robust pass's PGD (no attack when its steps or eps are 0, as `pgd_hits`);
    `clip` the inputs' range; `channels_last` lays the stacked inputs out as the training step
    does. The robust pass is graphed on CUDA unless `capture` is False (``eval.cuda_graphs``).
    """

    def __init__(
        self,
        models: Sequence[SratModel],
        device: torch.device,
        *,
        attack: AttackParams,
        clip: tuple[float, float] | None,
        channels_last: bool = False,
        capture: bool = True,
        on_fallback: Callable[[str], None] | None = None,
        warmup: int = 1,
        keep: int = 3,
        backend: GraphBackend = CUDA_GRAPHS,
    ) -> None:
        self.models = list(models)
        self.stack = StackedModels(self.models[0])
        self.stack.skeleton.eval()
        self.attack = attack
        self.clip = clip
        self.channels_last = channels_last
        # one per run, on the device: what its lone evaluation draws its random starts from
        self.generators = [torch.Generator(device=device) for _ in self.models]
        self.graphs: GraphCache[HitsStatic] = GraphCache(
            device,
            self.generators,
            warmup=warmup,
            keep=keep,
            what="stacked evaluation attacks",
            on_fallback=on_fallback,
            capture=capture,
            backend=backend,
        )

    @property
    def attacked(self) -> bool:
        return self.attack.steps > 0 and self.attack.eps > 0

    def _state(self, runs: Sequence[int]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        models = [self.models[k] for k in runs]
        return self.stack.params(models), self.stack.buffers(models)

    def _clean_hits(
        self,
        state: tuple[dict[str, Tensor], dict[str, Tensor]],
        xb: Tensor,
        yb: Tensor,
        features_into: list[list[Tensor]] | None,
    ) -> Tensor:
        params, buffers = state
        with torch.no_grad():
            features, logits = self.stack(params, buffers, xb, shared_input=True)
        if features_into is not None:
            for k, into in enumerate(features_into):
                into.append(features[:, k].float())
        return logits.argmax(-1) == yb[:, None]

    def _robust_hits(self, runs: Sequence[int], xb: Tensor, yb: Tensor) -> Tensor:
        params, buffers = self._state(runs)
        xs = stack_batches([xb] * len(runs), self.channels_last)
        ys = yb[:, None].expand(-1, len(runs))
        noise = None
        if self.attack.random_start:
            draws = [start_noise(xb, self.generators[k]) for k in runs]
            noise = stack_batches(draws, self.channels_last)
        x_adv = pgd_linf(
            lambda x: self.stack(params, buffers, x)[1],  # type: ignore[arg-type]
            xs,
            ys,
            eps=self.attack.eps,
            step_size=self.attack.step_size,
            steps=self.attack.steps,
            random_start=self.attack.random_start,
            loss_fn=_summed_cross_entropy,
            clip=self.clip,
            noise=noise,
        ).x_adv
        with torch.no_grad():
            logits = self.stack(params, buffers, x_adv)[1]
        return logits.argmax(-1) == ys

    def _graphed_robust_hits(self, runs: Sequence[int], xb: Tensor, yb: Tensor) -> Tensor:
        # the runs are in the key: a run that leaves the stack makes a graph of the others
        key = (tuple(xb.shape), xb.dtype, tuple(runs))
        return replayed_hits(self.graphs, key, lambda x, y: self._robust_hits(runs, x, y), xb, yb)

    def count(
        self,
        runs: Sequence[int],
        x: Tensor,
        y: Tensor,
        num_classes: int,
        *,
        batch_size: int,
        robust: bool,
        seeds: Sequence[int],
        features_into: list[list[Tensor]] | None = None,
    ) -> Tensor:
        """Correct predictions per run and class, [len(runs), num_classes], on the device:
        ``correct[k, c]`` is what `classwise.count_correct` counts for run ``runs[k]`` with
        `seeds[k]` (clean, or under the robust attack with `robust`). `features_into` (clean
        only: one list per run) gets each run's penultimate features of every batch, as
        `classwise.feature_hits` gives them."""
        if robust and features_into is not None:
            raise ValueError("features_into is read off the clean pass: no attack with it")
        if len(seeds) != len(runs):
            raise ValueError(f"{len(runs)} runs but {len(seeds)} seeds")
        for k, seed in zip(runs, seeds, strict=True):
            self.generators[k].manual_seed(seed)
        correct = torch.zeros(len(runs), num_classes, dtype=torch.long, device=y.device)
        attacked = robust and self.attacked
        # the clean pass stacks the weights once; a graphed attack stacks them inside each
        # replay, which is how it reads the weights training has changed since its capture
        state = None if attacked else self._state(runs)
        for start in range(0, len(y), batch_size):
            xb = to_inputs(x[start : start + batch_size])
            yb = y[start : start + batch_size]
            if state is None:
                hits = self._graphed_robust_hits(runs, xb, yb)
            else:
                hits = self._clean_hits(state, xb, yb, features_into)
            correct.index_add_(1, yb, hits.t().long())
        return correct
