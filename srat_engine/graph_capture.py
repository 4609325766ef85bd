"""CUDA-graph capture and replay of a function that launches the same kernels on every call.

One rule for the two places that replay graphs: the training step (`training/graphs.py`) and
the evaluation attack (`evaluation/graphs.py`). Per key (whatever the kernels bake in: the
batch shape, Python floats such as the learning rate), the first ``warmup`` calls run eagerly
on a side stream (torch.cuda.graph's documented warm-up: lazily made cuBLAS/cuDNN handles and
workspaces must belong to a stream other than the default one before a capture), the next one
is captured (``torch.cuda.graph``), and every later one is a replay. The caller's generators
(one, or a stacked step's one per run) are registered with each graph, so a replay draws fresh
random numbers from each generator's advancing offset as the eager call would. The first
failed capture turns capture off for the rest of the run: every later call is eager, and
``on_fallback`` is told why once.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import torch

Static = TypeVar("Static")  # the tensors one captured graph reads and writes


class Graph(Protocol):
    def replay(self) -> None: ...


class GraphBackend(Protocol):
    """What a GraphCache asks of the device: `CUDA_GRAPHS` in the engine; tests emulate it on
    the CPU to check the cache's bookkeeping (keys, warm-up, what is copied in and out)."""

    def available(self, device: torch.device) -> bool: ...

    def new_graph(self) -> Graph: ...

    def capture(
        self,
        graph: Graph,
        device: torch.device,
        generators: Sequence[torch.Generator],
        body: Callable[[], None],
    ) -> None: ...

    def on_side_stream(self, device: torch.device, run: Callable[[], None]) -> None: ...


class CudaGraphs:
    """`torch.cuda.graph` capture, with the caller's generators registered with the graph."""

    def __init__(self) -> None:
        self._side_streams: dict[torch.device, torch.cuda.Stream] = {}

    def available(self, device: torch.device) -> bool:
        return device.type == "cuda"

    def new_graph(self) -> Graph:
        return torch.cuda.CUDAGraph()

    def capture(
        self,
        graph: Graph,
        device: torch.device,
        generators: Sequence[torch.Generator],
        body: Callable[[], None],
    ) -> None:
        assert isinstance(graph, torch.cuda.CUDAGraph)
        register = getattr(graph, "register_generator_state", None)
        if register is not None:
            with torch.cuda.device(device):
                for generator in generators:
                    register(generator)
        torch.cuda.synchronize(device)
        try:
            with torch.cuda.graph(graph):
                body()
        except Exception:
            torch.cuda.synchronize(device)
            raise

    def on_side_stream(self, device: torch.device, run: Callable[[], None]) -> None:
        stream = self._side_streams.get(device)
        if stream is None:
            stream = self._side_streams[device] = torch.cuda.Stream(device)
        current = torch.cuda.current_stream(device)
        stream.wait_stream(current)
        with torch.cuda.stream(stream):
            run()
        current.wait_stream(stream)


CUDA_GRAPHS = CudaGraphs()


@dataclass
class Replay(Generic[Static]):
    """A captured graph and its static tensors: fill the inputs, ``graph.replay()``, read."""

    graph: Any  # a torch.cuda.CUDAGraph (or the tests' emulated one)
    static: Static


class GraphCache(Generic[Static]):
    """The graphs of one function, by key, on one CUDA device; off CUDA every call is eager.

    ``captured`` counts the graphs made; ``failed`` holds why a capture failed (None if none
    did); ``keep`` graphs are held at once, the least recently replayed dropped first.
    """

    def __init__(
        self,
        device: torch.device,
        generator: torch.Generator | Sequence[torch.Generator] | None,
        *,
        warmup: int,
        keep: int,
        what: str,  # names the work in the fallback message: "training steps"
        on_fallback: Callable[[str], None] | None = None,
        capture: bool = True,  # False: every call eager (a config switch turned graphs off)
        backend: GraphBackend = CUDA_GRAPHS,
    ) -> None:
        self.device = device
        self.capture = capture
        # the generators the captured work draws from: registered with every graph
        if generator is None:
            self.generators: tuple[torch.Generator, ...] = ()
        elif isinstance(generator, torch.Generator):
            self.generators = (generator,)
        else:
            self.generators = tuple(generator)
        self.warmup = warmup
        self.keep = keep
        self.what = what
        self.on_fallback = on_fallback
        self.backend = backend
        self.captured = 0
        self.failed: str | None = None
        self._eager_runs: dict[Hashable, int] = {}
        self._graphs: OrderedDict[Hashable, Replay[Static]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        """Graphs are made and replayed: asked for, on CUDA, until a capture has failed."""
        return self.capture and self.backend.available(self.device) and self.failed is None

    def prepare(
        self,
        key: Hashable,
        eager: Callable[[], None],
        build: Callable[[], Static],
        body: Callable[[Static], None],
    ) -> Replay[Static] | None:
        """The graph of `key`, ready for the caller to fill its inputs and replay; or None
        after running `eager` (graphs off, a warm-up call, or a capture that failed).

        A new graph's static tensors come from `build()` (clones of this call's inputs) and
        `body(static)` is what is captured; a capture runs nothing, so the caller replays it.
        """
        if not self.enabled:
            eager()
            return None
        replay = self._graphs.get(key)
        if replay is None:
            runs = self._eager_runs.get(key, 0)
            if runs < self.warmup:
                self._eager_runs[key] = runs + 1
                self.backend.on_side_stream(self.device, eager)
                return None
            replay = self._capture(key, build(), body)
            if replay is None:
                eager()
                return None
        self._graphs.move_to_end(key)
        return replay

    def _capture(
        self, key: Hashable, static: Static, body: Callable[[Static], None]
    ) -> Replay[Static] | None:
        graph = self.backend.new_graph()
        # a graph of an old key (same shape, earlier lr) is not replayed again
        while len(self._graphs) >= self.keep:
            self._graphs.popitem(last=False)
        try:
            self.backend.capture(graph, self.device, self.generators, lambda: body(static))
        except Exception as err:  # capture is an optimisation: any failure means eager calls
            self.failed = f"{type(err).__name__}: {err}"
            if self.on_fallback is not None:
                message = f"CUDA graph capture failed, {self.what} stay eager: {self.failed}"
                self.on_fallback(message)
            return None
        self.captured += 1
        replay = Replay(graph=graph, static=static)
        self._graphs[key] = replay
        return replay
