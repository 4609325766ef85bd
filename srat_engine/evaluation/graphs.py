"""Replay the evaluation attack as CUDA graphs: one graph per batch shape.

Robust evaluation is PGD-k on every batch: k forward/backward pairs of the model in eval mode,
a few hundred kernels each, the same kernels for every batch of one shape. Captured once (after
`srat_engine.graph_capture`'s warm-up), a batch's whole attack and prediction is one launch,
so the host's launch rate no longer bounds it. The model's parameters and BatchNorm statistics
are read in place by each replay, so training between two evaluations is seen; the random
starts come from the generator registered with the graphs, re-seeded by `count_correct` at
the start of every evaluation, so a replayed evaluation draws what the eager one would.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass

import torch

from srat_engine.evaluation.classwise import BatchHits
from srat_engine.graph_capture import CUDA_GRAPHS, GraphBackend, GraphCache


@dataclass
class HitsStatic:
    """What one captured evaluation batch reads (inputs, labels) and writes (its hits)."""

    x: torch.Tensor
    y: torch.Tensor
    hits: torch.Tensor


def replayed_hits(
    graphs: GraphCache[HitsStatic],
    key: Hashable,
    hits: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    xb: torch.Tensor,
    yb: torch.Tensor,
) -> torch.Tensor:
    """``hits(xb, yb)`` of one batch: run eagerly (graphs off, a warm-up, a failed capture)
    or as the replay of `key`'s graph, captured from `hits` on static copies of the batch.
    The one rule for a lone run's (`GraphedHits`) and a stack's (`evaluation.stacked`)."""
    result: list[torch.Tensor] = []

    def eager() -> None:
        result.append(hits(xb, yb))

    def build() -> HitsStatic:
        return HitsStatic(x=xb.clone(), y=yb.clone(), hits=torch.empty(0))

    def body(static: HitsStatic) -> None:
        static.hits = hits(static.x, static.y)

    replay = graphs.prepare(key, eager, build, body)
    if replay is None:
        made = result[0]
        if made.is_cuda:  # made on the warm-up's side stream, read on this one
            made.record_stream(torch.cuda.current_stream(made.device))
        return made
    replay.static.x.copy_(xb)
    replay.static.y.copy_(yb)
    replay.graph.replay()
    return replay.static.hits.clone()


class GraphedHits:
    """A BatchHits whose batches, on CUDA and after warm-up, are graph replays of `hits`.

    Pass ``generator=graphed.generator`` to `count_correct`: a call with any other generator
    runs `hits` eagerly (the graphs draw from the one they were captured with). Off CUDA, with
    ``capture=False``, or after a failed capture, every call is eager: `hits` itself. `hits`
    must read no host value that changes between calls (a replay would not see it) and must
    not sync with the host.
    """

    def __init__(
        self,
        hits: BatchHits,
        device: torch.device,
        *,
        # eager batches per shape before its capture: one chooses cuDNN's algorithms (training
        # turns cudnn.benchmark on) and makes the handles; a run's 2nd evaluation is replayed
        warmup: int = 1,
        keep: int = 3,  # the full batch and up to two last partial ones (subset, test set)
        capture: bool = True,  # eval.cuda_graphs
        on_fallback: Callable[[str], None] | None = None,
        backend: GraphBackend = CUDA_GRAPHS,
    ) -> None:
        self.hits = hits
        self.generator = torch.Generator(device=device)
        self.graphs: GraphCache[HitsStatic] = GraphCache(
            device,
            self.generator,
            warmup=warmup,
            keep=keep,
            what="evaluation attacks",
            on_fallback=on_fallback,
            capture=capture,
            backend=backend,
        )

    def __call__(
        self, xb: torch.Tensor, yb: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        if generator is not self.generator:
            return self.hits(xb, yb, generator)
        key = (tuple(xb.shape), xb.dtype)
        return replayed_hits(self.graphs, key, lambda x, y: self.hits(x, y, self.generator), xb, yb)
