"""A CPU stand-in for CUDA graphs (`srat_engine.graph_capture.GraphBackend`), so the graph
caches' bookkeeping is tested where no GPU is: which calls are warm-ups, which capture, which
replay; what is copied into a graph's static inputs and read out of its outputs; the fallback.

A capture records the body and runs nothing, as a CUDA capture launches no kernel; a replay
runs the recorded body on the static tensors. What it cannot show is CUDA's own capture
semantics (host code that runs only at capture time, the RNG offsets of a replay): the `cuda`
tests check those on a GPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


class EmulatedGraph:
    def __init__(self) -> None:
        self.body: Callable[[], None] | None = None
        self.replays = 0

    def replay(self) -> None:
        assert self.body is not None, "replayed before it was captured"
        self.body()
        self.replays += 1


class EmulatedGraphs:
    """The backend: available on any device; `fail` makes every capture raise it."""

    def __init__(self, fail: str | None = None) -> None:
        self.fail = fail
        self.graphs: list[EmulatedGraph] = []
        self.side_stream_runs = 0

    def available(self, device: torch.device) -> bool:
        return True

    def new_graph(self) -> EmulatedGraph:
        graph = EmulatedGraph()
        self.graphs.append(graph)
        return graph

    def capture(
        self,
        graph: EmulatedGraph,  # type: ignore[override]
        device: torch.device,
        generators: Sequence[torch.Generator],
        body: Callable[[], None],
    ) -> None:
        if self.fail is not None:
            raise RuntimeError(self.fail)
        graph.body = body

    def on_side_stream(self, device: torch.device, run: Callable[[], None]) -> None:
        self.side_stream_runs += 1
        run()
