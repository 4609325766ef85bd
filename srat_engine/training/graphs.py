"""Replay whole training steps as CUDA graphs.

A PGD-10 training step of a CIFAR ResNet launches a few thousand small kernels (ten attack
forward/backward pairs, the update, the optimiser); on a fast GPU the host cannot issue them as
fast as the device runs them. Every step of a run has the same shapes and the same kernel
sequence, so the step is captured once as a CUDA graph and then replayed with one launch
(PyTorch's "whole-network capture", ``torch.cuda.graph``).

The maths is the eager step's, run by the same kernels: parameters, optimiser momenta, BN
statistics and the RNG generator are updated in place by each replay (the generator is
registered with the graph, so each replay draws fresh random starts, crops and flips from the
generator's advancing offset, as the eager step would). Whatever a step's kernels bake in is
part of the graph's key: the batch shape, the learning rate (a Python float in SGD's update),
whether class weights are used, GAIR on/off, lambda, AWP on/off and TAET's stage; a new key
is warmed up eagerly and captured anew. The first ``warmup`` steps of each key run eagerly
(on a side stream, as capture requires), which also creates the optimiser's momentum buffers
before capture, so the captured update is the steady-state one. Warm-up, capture, replay and
the eager fallback are `srat_engine.graph_capture`'s, shared with the evaluation attack.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from srat_engine.config.schema import TrainConfig
from srat_engine.graph_capture import CUDA_GRAPHS, GraphBackend, GraphCache

if TYPE_CHECKING:  # the steps are built by training/step.py and stacked_step.py
    from srat_engine.training.stacked_step import StackedTrainStep
    from srat_engine.training.step import TrainStep


@dataclass
class _StepStatic:
    x: torch.Tensor
    y: torch.Tensor
    class_w: torch.Tensor | None
    sums: torch.Tensor


class GraphedTrainStep:
    """Calls like :class:`TrainStep`; on CUDA, steps after warm-up are graph replays.

    Anywhere else (CPU, or a step that cannot be captured) it runs the eager step, so it is
    always safe to use; ``graphs.captured`` counts the graphs made, ``graphs.failed`` holds the
    reason a capture failed (the step then stays eager for the rest of the run).
    """

    def __init__(
        self,
        step: TrainStep,
        *,
        warmup: int = 3,  # eager steps per key before its capture
        keep: int = 4,  # graphs kept at once (full batch, last partial batch, lr changes)
        on_fallback: Callable[[str], None] | None = None,
        backend: GraphBackend = CUDA_GRAPHS,
    ) -> None:
        self.step = step
        self.graphs: GraphCache[_StepStatic] = GraphCache(
            step.device,
            step.generator,
            warmup=warmup,
            keep=keep,
            what="training steps",
            on_fallback=on_fallback,
            backend=backend,
        )

    def _key(
        self, x: torch.Tensor, class_w: torch.Tensor | None, switches: dict[str, Any]
    ) -> Hashable:
        lrs = tuple(float(group["lr"]) for group in self.step.optimizer.param_groups)
        return (tuple(x.shape), x.dtype, class_w is None, *switches.values(), lrs)

    def __call__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        class_w: torch.Tensor | None = None,
        use_gair: bool = False,
        lam: float = 0.0,
        awp: bool = False,
        natural_stage: bool = False,
        sums: torch.Tensor | None = None,
    ) -> None:
        switches = {"use_gair": use_gair, "lam": lam, "awp": awp, "natural_stage": natural_stage}

        def eager() -> None:
            self.step(x, y, class_w=class_w, sums=sums, **switches)

        def build() -> _StepStatic:
            return _StepStatic(
                x=x.clone(),
                y=y.clone(),
                class_w=class_w.clone() if class_w is not None else None,
                sums=torch.zeros(4, device=self.step.device),
            )

        def body(static: _StepStatic) -> None:
            static.sums.zero_()
            self.step(static.x, static.y, class_w=static.class_w, sums=static.sums, **switches)

        key = self._key(x, class_w, switches) if self.graphs.enabled else None
        replay = self.graphs.prepare(key, eager, build, body)
        if replay is None:
            return
        static = replay.static
        static.x.copy_(x)
        static.y.copy_(y)
        if class_w is not None and static.class_w is not None:
            static.class_w.copy_(class_w)
        replay.graph.replay()
        if sums is not None:
            sums += static.sums


# torch.compile modes that capture CUDA graphs themselves (cudagraph trees); a whole-step
# capture around them would nest one capture in another
COMPILE_MODES_WITH_OWN_GRAPHS = frozenset({"reduce-overhead", "max-autotune"})


def uses_cuda_graphs(train: TrainConfig, device: torch.device) -> bool:
    """Whether training steps are replayed as CUDA graphs: ``train.cuda_graphs`` asks for it,
    the device is CUDA, and the compile mode (if any) makes no graphs of its own. Compiled
    kernels (``default``, ``max-autotune-no-cudagraphs``) are captured like eager ones."""
    return (
        train.cuda_graphs
        and device.type == "cuda"
        and train.compile not in COMPILE_MODES_WITH_OWN_GRAPHS
    )


def graphed_step(
    step: TrainStep, on_fallback: Callable[[str], None] | None = None
) -> TrainStep | GraphedTrainStep:
    """``step`` replayed as CUDA graphs where :func:`uses_cuda_graphs` says so."""
    if uses_cuda_graphs(step.config.train, step.device):
        return GraphedTrainStep(step, on_fallback=on_fallback)
    return step


@dataclass
class _StackStatic:
    xs: list[torch.Tensor]
    ys: list[torch.Tensor]
    class_w: torch.Tensor | None
    sums: list[torch.Tensor]


class GraphedStackedStep:
    """Calls like :class:`StackedTrainStep`; on CUDA, steps after warm-up are graph replays,
    as :class:`GraphedTrainStep` replays a lone run's. Every run's generator is registered with
    each graph (each replay draws each run's crops, flips and attack starts afresh). The key
    holds each run's batch shape, so a run that leaves the stack makes a new graph of the
    others."""

    def __init__(
        self,
        stacked: StackedTrainStep,
        steps: Sequence[TrainStep],
        *,
        warmup: int = 3,
        keep: int = 4,
        on_fallback: Callable[[str], None] | None = None,
        backend: GraphBackend = CUDA_GRAPHS,
    ) -> None:
        self.stacked = stacked
        self.graphs: GraphCache[_StackStatic] = GraphCache(
            steps[0].device,
            [step.generator for step in steps],
            warmup=warmup,
            keep=keep,
            what="stacked training steps",
            on_fallback=on_fallback,
            backend=backend,
        )

    def __call__(
        self,
        steps: Sequence[TrainStep],
        xs: Sequence[torch.Tensor],
        ys: Sequence[torch.Tensor],
        *,
        class_w: torch.Tensor | None = None,
        use_gair: bool = False,
        lam: float = 0.0,
        sums: Sequence[torch.Tensor] | None = None,
    ) -> None:
        switches = {"use_gair": use_gair, "lam": lam}

        def eager() -> None:
            self.stacked(steps, xs, ys, class_w=class_w, sums=sums, **switches)

        def build() -> _StackStatic:
            device = steps[0].device
            return _StackStatic(
                xs=[x.clone() for x in xs],
                ys=[y.clone() for y in ys],
                class_w=class_w.clone() if class_w is not None else None,
                sums=[torch.zeros(4, device=device) for _ in steps],
            )

        def body(static: _StackStatic) -> None:
            for run_sums in static.sums:
                run_sums.zero_()
            self.stacked(
                steps, static.xs, static.ys, class_w=static.class_w, sums=static.sums, **switches
            )

        key = None
        if self.graphs.enabled:
            lrs = tuple(float(g["lr"]) for step in steps for g in step.optimizer.param_groups)
            # one shape per run: a run that leaves the stack (runs only leave) changes the key
            shapes = tuple(tuple(x.shape) for x in xs)
            key = (shapes, xs[0].dtype, class_w is None, use_gair, lam, lrs)
        replay = self.graphs.prepare(key, eager, build, body)
        if replay is None:
            return
        static = replay.static
        for held, x in zip(static.xs, xs, strict=True):
            held.copy_(x)
        for held, y in zip(static.ys, ys, strict=True):
            held.copy_(y)
        if class_w is not None and static.class_w is not None:
            static.class_w.copy_(class_w)
        replay.graph.replay()
        if sums is not None:
            for run_sums, held in zip(sums, static.sums, strict=True):
                run_sums += held


def graphed_stacked_step(
    stacked: StackedTrainStep,
    steps: Sequence[TrainStep],
    on_fallback: Callable[[str], None] | None = None,
) -> StackedTrainStep | GraphedStackedStep:
    """``stacked`` replayed as CUDA graphs where :func:`uses_cuda_graphs` says so."""
    if uses_cuda_graphs(steps[0].config.train, steps[0].device):
        return GraphedStackedStep(stacked, steps, on_fallback=on_fallback)
    return stacked
