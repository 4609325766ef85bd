"""`srat bench`: the engine's PGD-AT training step against the way common public code does it.

Both paths train the same model (same initial weights, batch size, seed and PGD-10 budget)
in one process, alternating repeats so a noisy neighbour slows both alike:

* engine: :class:`srat_engine.training.step.TrainStep`, what ``srat run`` executes per batch:
  uint8 data resident on the device, per-sample crop/flip drawn there, input-only attack
  gradients with frozen parameters, the run config's precision / channels_last / compile.
* reference: Madry-style PGD-AT as public code writes it (:mod:`srat_engine.bench.reference`):
  a CPU ``DataLoader`` with PIL transforms, ``loss.backward()`` through the whole model in
  every attack step (weight gradients computed and thrown away), fp32, eager.

Throughput is images/s of training examples, median over repeats, warm-up excluded. The
FLOP-based rate counts the *model* FLOPs of a PGD-K training example,
``(2K + 3) x F_fwd``: each attack step is one forward plus an input-only backward (about one
forward's FLOPs), the update one forward plus a full backward (about two). For K = 10 that is
23 forward-equivalents, F_fwd from :func:`srat_engine.models.flops.forward_flops` (2 FLOPs per
multiply-accumulate); both paths are credited with the same useful work, so the reference's
extra weight gradients show up as a lower rate. The FLOPs each path actually executes are
also counted once, on a batch of 2.
"""

from __future__ import annotations

import copy
import math
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from srat_engine.bench.reference import EPS, PAD, STEP_SIZE, reference_loader, reference_step
from srat_engine.config.schema import RunConfig, set_override, validate_config
from srat_engine.config.workload import pgd_training_forwards
from srat_engine.errors import SratError
from srat_engine.models import SratModel, build_model
from srat_engine.models.flops import executed_flops, forward_flops
from srat_engine.training.device import pick_device
from srat_engine.training.graphs import GraphedTrainStep, graphed_step
from srat_engine.training.step import TrainStep, per_sample_loss

# `srat bench --model` names -> architectures (the full names are accepted too)
BENCH_MODELS: dict[str, str] = {
    "small": "small_cnn",
    "resnet18": "resnet18",
    "preact18": "preact_resnet18",
    "wrn34": "wrn34_10",
}
INPUT_SHAPE: tuple[int, int, int] = (3, 32, 32)  # CIFAR-shaped synthetic images
NUM_CLASSES = 10


@dataclass
class PathResult:
    """One path's measurements; ``seconds`` are per repeat of ``iters`` steps."""

    images_per_s: float
    seconds: list[float]
    tflops: float  # model FLOPs (fwd_equivalents x forward FLOPs) per second / 1e12
    executed_fwd_equivalents: float | None  # FLOPs one example costs / forward FLOPs
    peak_memory_mb: float


@dataclass
class BenchResult:
    model: str
    arch: str
    batch: int
    device: str
    seed: int
    attack_steps: int
    repeats: int
    iters: int
    warmup: int
    input_shape: list[int]
    forward_gflops: float  # per image, FlopCounterMode (= 2 x multiply-accumulates)
    fwd_equivalents: int  # model FLOPs of one training example, in forwards: 2K + 3
    engine_precision: str
    engine_channels_last: bool
    engine_compile: str
    engine_fold_bn: int  # BatchNorms folded into convolutions for the attack (0 = off)
    engine_cuda_graphs: bool  # steps after warm-up replayed as one CUDA graph each
    engine_graph_failure: str | None  # why capture failed (the engine then ran eagerly)
    overrides: list[str]
    loader_workers: int
    threads: int
    memory_kind: str
    engine: PathResult
    reference: PathResult
    ratio: float  # engine images/s / reference images/s

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_arch(model: str) -> str:
    if model in BENCH_MODELS:
        return BENCH_MODELS[model]
    if model in BENCH_MODELS.values():
        return model
    known = ", ".join(BENCH_MODELS)
    raise SratError(f"unknown bench model {model!r}; known: {known}")


def bench_config(arch: str, batch: int, steps: int, overrides: Sequence[str] = ()) -> RunConfig:
    """The run config the engine path trains with: PGD-K AT with CE (the reference's loss),
    the engine's defaults for everything else, then ``overrides`` (``section.key=value``, as
    ``srat run --set``), e.g. ``train.precision=bf16`` or ``train.fold_bn=false``."""
    raw: dict[str, Any] = {
        "method": "CE",
        "model": {"arch": arch},
        "data": {"augment": "crop_flip", "pad": PAD},
        "train": {"batch_size": batch},
        "attack": {"eps": EPS, "step_size": STEP_SIZE, "steps": steps, "bn_mode": "eval"},
    }
    for assignment in overrides:
        set_override(raw, assignment)
    config = validate_config(raw)
    fixed = {
        "method": (config.method, "CE"),
        "model.arch": (config.model.arch, arch),
        "train.batch_size": (config.train.batch_size, batch),
        "attack.steps": (config.attack.steps, steps),
        # the reference attacks every example within one eps
        "attack.class_budget": (config.attack.class_budget, False),
    }
    for key, (got, want) in fixed.items():
        if got != want:
            raise SratError(f"--set {key} is fixed by the benchmark (the reference must match)")
    return config


def build_pair(
    arch: str, device: torch.device, seed: int
) -> tuple[SratModel, SratModel, Callable[[nn.Module], torch.optim.Optimizer]]:
    """Two copies of one freshly initialised model and the SGD both train with."""
    torch.manual_seed(seed)
    model = build_model(arch, NUM_CLASSES, INPUT_SHAPE).to(device)
    reference = copy.deepcopy(model)

    def sgd(m: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)

    return model, reference, sgd


def bench_engine_step(
    model: SratModel,
    sgd: Callable[[nn.Module], torch.optim.Optimizer],
    config: RunConfig,
    generator: torch.Generator,
) -> TrainStep:
    """The engine's training step as ``srat bench`` times it: ``config``'s loss without LDAM
    margins, inputs clipped to [0, 1], on the device of ``generator``."""
    return TrainStep(
        model,
        sgd(model),
        config,
        per_sample_loss(config, None),
        generator=generator,
        clip=(0.0, 1.0),
        device=generator.device,
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _PeakMemory:
    """Peak memory while a block runs, in MB.

    CUDA: ``torch.cuda.max_memory_allocated`` (tensors only, reset per block). CPU: the process
    RSS sampled every 2 ms by a thread, peak minus the RSS at the block's start, so the figure
    is what the block added (DataLoader worker processes, if any, are not included).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_mb = 0.0

    @property
    def kind(self) -> str:
        if self.device.type == "cuda":
            return "cuda max_memory_allocated"
        return "CPU process RSS above the block's start (sampled every 2 ms)"

    def measure(self, block: Callable[[], None]) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            block()
            peak = torch.cuda.max_memory_allocated(self.device) / 2**20
            self.peak_mb = max(self.peak_mb, peak)
            return
        import psutil

        process = psutil.Process()
        start = process.memory_info().rss
        top = start
        done = threading.Event()

        def sample() -> None:
            nonlocal top
            while not done.wait(0.002):
                top = max(top, process.memory_info().rss)

        watcher = threading.Thread(target=sample, daemon=True)
        watcher.start()
        try:
            block()
        finally:
            done.set()
            watcher.join()
        top = max(top, process.memory_info().rss)
        self.peak_mb = max(self.peak_mb, (top - start) / 2**20)


def run_benchmark(
    *,
    model: str = "resnet18",
    batch: int = 128,
    device: str = "auto",
    repeats: int = 5,
    iters: int = 3,
    warmup: int = 1,
    steps: int = 10,
    seed: int = 0,
    overrides: Sequence[str] = (),
    workers: int | None = None,
    count_executed: bool = True,
) -> BenchResult:
    """Time ``iters`` training steps per repeat for both paths, ``repeats`` times each.

    ``warmup`` steps per path run first and are not timed (allocator, cuDNN autotuning,
    compilation, DataLoader worker start). ``workers`` is the reference DataLoader's worker
    count: None = 0 on CPU (workers would compete with the step for the same cores) and
    min(4, CPUs) on CUDA, as public CIFAR scripts use.
    """
    arch = resolve_arch(model)
    if batch < 1:
        raise SratError(f"--batch must be at least 1 (got {batch})")
    if repeats < 1 or iters < 1 or warmup < 0 or steps < 1:
        raise SratError("repeats, iters and steps must be >= 1 and warmup >= 0")
    dev = pick_device(device)  # SratError for a device that is unknown or absent
    config = bench_config(arch, batch, steps, overrides)
    if workers is None:
        workers = 0 if dev.type == "cpu" else min(4, os.cpu_count() or 1)

    engine_model, ref_model, sgd = build_pair(arch, dev, seed)
    flops = forward_flops(engine_model, INPUT_SHAPE)
    fwd_equivalents = pgd_training_forwards(steps)

    # engine path: device-resident uint8, batches drawn by a device permutation
    generator = torch.Generator(device=dev).manual_seed(seed)
    engine_step = bench_engine_step(engine_model, sgd, config, generator)
    engine_call = graphed_step(engine_step)
    graphs = engine_call.graphs if isinstance(engine_call, GraphedTrainStep) else None
    # CUDA graphs: their eager warm-up steps and the capture step are warm-up too
    engine_warmup = warmup + (graphs.warmup + 1 if graphs is not None else 0)

    # the data: enough distinct images for every step of the run, as uint8
    total_steps = engine_warmup + repeats * iters
    n = batch * total_steps
    data_gen = torch.Generator().manual_seed(seed)
    x_cpu = torch.randint(0, 256, (n, *INPUT_SHAPE), generator=data_gen, dtype=torch.uint8)
    y_cpu = torch.randint(0, NUM_CLASSES, (n,), generator=data_gen)
    x_dev, y_dev = x_cpu.to(dev), y_cpu.to(dev)
    order = torch.randperm(n, generator=generator, device=dev).split(batch)
    engine_batches = iter(order)

    def engine_iter() -> None:
        idx = next(engine_batches)
        engine_call(x_dev[idx], y_dev[idx])

    # reference path: CPU DataLoader with PIL transforms, host-to-device copy per batch
    torch.manual_seed(seed)
    loader = reference_loader(
        x_cpu, y_cpu, batch=batch, workers=workers, pin_memory=dev.type == "cuda", seed=seed
    )
    ref_optimizer = sgd(ref_model)
    ref_batches: Iterator[tuple[Tensor, Tensor]] = iter(loader)
    ref_model.train()

    def reference_iter() -> None:
        xb, yb = next(ref_batches)
        xb = xb.to(dev, non_blocking=True)
        yb = yb.to(dev, non_blocking=True)
        reference_step(ref_model, ref_optimizer, xb, yb, steps=steps)

    engine_model.train()
    for _ in range(engine_warmup):
        engine_iter()
    for _ in range(warmup):
        reference_iter()
    _sync(dev)

    memory = {"engine": _PeakMemory(dev), "reference": _PeakMemory(dev)}
    seconds: dict[str, list[float]] = {"engine": [], "reference": []}
    paths = {"engine": engine_iter, "reference": reference_iter}
    for _ in range(repeats):
        for name, one_step in paths.items():

            def block(one_step: Callable[[], None] = one_step, name: str = name) -> None:
                _sync(dev)
                started = time.perf_counter()
                for _ in range(iters):
                    one_step()
                _sync(dev)
                seconds[name].append(time.perf_counter() - started)

            memory[name].measure(block)

    executed = {"engine": float("nan"), "reference": float("nan")}
    if count_executed:
        executed = _count_executed(engine_step, ref_model, ref_optimizer, x_dev, y_dev, steps)

    def path(name: str) -> PathResult:
        rate = batch * iters / statistics.median(seconds[name])
        return PathResult(
            images_per_s=rate,
            seconds=seconds[name],
            tflops=rate * fwd_equivalents * flops / 1e12,
            executed_fwd_equivalents=None if math.isnan(executed[name]) else executed[name] / flops,
            peak_memory_mb=memory[name].peak_mb,
        )

    engine, reference = path("engine"), path("reference")
    return BenchResult(
        model=model,
        arch=arch,
        batch=batch,
        device=str(dev),
        seed=seed,
        attack_steps=steps,
        repeats=repeats,
        iters=iters,
        warmup=warmup,
        input_shape=list(INPUT_SHAPE),
        forward_gflops=flops / 1e9,
        fwd_equivalents=fwd_equivalents,
        engine_precision=engine_step.precision,
        engine_channels_last=engine_step.channels_last,
        engine_compile=config.train.compile,
        engine_fold_bn=engine_step.folded.folded if engine_step.folded is not None else 0,
        engine_cuda_graphs=graphs is not None and graphs.captured > 0,
        engine_graph_failure=graphs.failed if graphs is not None else None,
        overrides=list(overrides),
        loader_workers=workers,
        threads=torch.get_num_threads(),
        memory_kind=memory["engine"].kind,
        engine=engine,
        reference=reference,
        ratio=engine.images_per_s / reference.images_per_s,
    )


def _count_executed(
    engine_step: TrainStep,
    ref_model: nn.Module,
    ref_optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    steps: int,
) -> dict[str, float]:
    """FLOPs per example each path executes, on 2 examples (counts scale with the batch).

    Runs after timing, so the extra updates it makes do not matter; compiled graphs are not
    counted by FlopCounterMode, so with compilation the engine figure is left as NaN.
    """
    xb, yb = x[:2], y[:2]
    engine = float("nan")
    if engine_step.config.train.compile == "off":
        engine = executed_flops(lambda: engine_step(xb, yb), 2)
    ref_x = engine_step.inputs(xb).contiguous()

    def ref() -> None:
        reference_step(ref_model, ref_optimizer, ref_x, yb, steps=steps)

    return {"engine": engine, "reference": executed_flops(ref, 2)}
