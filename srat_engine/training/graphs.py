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
before capture, so the captured update is the steady-state one.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from srat_engine.config.schema import TrainConfig

if TYPE_CHECKING:  # the step is built by training/step.py; only its type is needed here
    from srat_engine.training.step import TrainStep


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    x: torch.Tensor
    y: torch.Tensor
    class_w: torch.Tensor | None
    sums: torch.Tensor


class GraphedTrainStep:
    """Calls like :class:`TrainStep`; on CUDA, steps after warm-up are graph replays.

    Anywhere else (CPU, or a step that cannot be captured) it runs the eager step, so it is
    always safe to use; ``captured`` counts the graphs made, ``failed`` holds the reason a
    capture failed (the step then stays eager for the rest of the run).
    """

    def __init__(
        self,
        step: TrainStep,
        *,
        warmup: int = 3,  # eager steps per key before its capture
        keep: int = 4,
        on_fallback: Callable[[str], None] | None = None,
    ) -> None:
        self.step = step
        self.on_fallback = on_fallback
        self.warmup = warmup
        self.keep = keep  # graphs kept at once (full batch, last partial batch, lr changes)
        self.captured = 0
        self.failed: str | None = None
        self._eager_runs: dict[Hashable, int] = {}
        self._graphs: OrderedDict[Hashable, _Captured] = OrderedDict()
        self._side_stream: torch.cuda.Stream | None = None

    @property
    def enabled(self) -> bool:
        """Graphs are made and replayed: on CUDA, until a capture has failed."""
        return self.step.device.type == "cuda" and self.failed is None

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

        if not self.enabled:
            eager()
            return
        key = self._key(x, class_w, switches)
        captured = self._graphs.get(key)
        if captured is None:
            runs = self._eager_runs.get(key, 0)
            if runs < self.warmup:
                self._eager_runs[key] = runs + 1
                self._on_side_stream(eager)
                return
            captured = self._capture(key, x, y, class_w, switches)
            if captured is None:  # capture failed: this run stays eager
                eager()
                return
        self._graphs.move_to_end(key)
        captured.x.copy_(x)
        captured.y.copy_(y)
        if class_w is not None and captured.class_w is not None:
            captured.class_w.copy_(class_w)
        captured.graph.replay()
        if sums is not None:
            sums += captured.sums

    def _on_side_stream(self, run: Callable[[], None]) -> None:
        # lazily created handles and workspaces must belong to a stream other than the
        # default one before a capture (torch.cuda.graph's documented warm-up)
        if self._side_stream is None:
            self._side_stream = torch.cuda.Stream(self.step.device)
        current = torch.cuda.current_stream(self.step.device)
        self._side_stream.wait_stream(current)
        with torch.cuda.stream(self._side_stream):
            run()
        current.wait_stream(self._side_stream)

    def _capture(
        self,
        key: Hashable,
        x: torch.Tensor,
        y: torch.Tensor,
        class_w: torch.Tensor | None,
        switches: dict[str, Any],
    ) -> _Captured | None:
        device = self.step.device
        static = _Captured(
            graph=torch.cuda.CUDAGraph(),
            x=x.clone(),
            y=y.clone(),
            class_w=class_w.clone() if class_w is not None else None,
            sums=torch.zeros(4, device=device),
        )
        # a graph of an old key (same shape, earlier lr) is not replayed again
        while len(self._graphs) >= self.keep:
            self._graphs.popitem(last=False)
        try:
            register = getattr(static.graph, "register_generator_state", None)
            if register is not None:
                with torch.cuda.device(device):
                    register(self.step.generator)
            torch.cuda.synchronize(device)
            with torch.cuda.graph(static.graph):
                static.sums.zero_()
                self.step(static.x, static.y, class_w=static.class_w, sums=static.sums, **switches)
        except Exception as err:  # capture is an optimisation: any failure means eager steps
            self.failed = f"{type(err).__name__}: {err}"
            torch.cuda.synchronize(device)
            if self.on_fallback is not None:
                self.on_fallback(
                    f"CUDA graph capture failed, training steps stay eager: {self.failed}"
                )
            return None
        self.captured += 1
        self._graphs[key] = static
        return static


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
