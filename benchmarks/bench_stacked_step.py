"""One stacked training step of K seeds against the K runs' steps one after another, in one
process: the ratio says what stacking (`srat run --stack`) buys per step on this device; with
``--evaluation``, one per-epoch evaluation of the K runs (clean test set and PGD robust
subset, `StackEvaluator`) against their K evaluations alone (`Trainer.evaluate`).

    python benchmarks/bench_stacked_step.py [--arch resnet18] [--seeds 2] [--batch 128]
        [--steps 10] [--repeats 3] [--device cpu] [--set section.key=value ...] [--profile]
        [--evaluation] [--json]

The runs are `cifar10-exp100-srat-ldam` on synthetic 32x32 data (balanced, 200 per class:
only the shapes matter), built as a run builds them (`Trainer.begin_run`), each in its last
epoch (DRCB's class weights and the separation term acting); a step is one batch of each run.
Both ways run in alternation, `--repeats` times, after four untimed steps each (on CUDA:
three warm-ups and the capture); the median per step is reported, with the ratio alone /
stacked (> 1: stacking is faster). On CUDA each timing ends with a synchronize, and both ways
replay CUDA graphs as runs do.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from srat_engine.config.prepare import create_run, prepare
from srat_engine.runs.home import Home
from srat_engine.training.graphs import graphed_stacked_step
from srat_engine.training.stacked_step import StackedTrainStep
from srat_engine.training.stacked_trainer import StackEvaluator
from srat_engine.training.trainer import EpochPlan, Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--seeds", type=int, default=2, help="K: runs in the stack")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="PGD steps of the attack")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument(
        "--profile", action="store_true", help="then torch.profiler's top ops of one step each way"
    )
    parser.add_argument(
        "--evaluation",
        action="store_true",
        help="time a per-epoch evaluation (eval.* sets its size) instead of a training step",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args()
    if args.seeds < 2 or args.repeats < 1:
        parser.error("--seeds must be at least 2 and --repeats at least 1")
    root = Path(tempfile.mkdtemp(prefix="srat-bench-stacked-"))
    os.environ["SRAT_HOME"] = str(root)
    try:
        measure(args, Home.from_env())
    finally:
        shutil.rmtree(root, ignore_errors=True)


def measure(args: argparse.Namespace, home: Home) -> None:
    device = torch.device(args.device)
    overrides = (
        "data.dataset=synthetic", "data.n_max=200", "data.ratio=1", f"model.arch={args.arch}",
        f"train.batch_size={args.batch}", f"attack.steps={args.steps}", f"device={args.device}",
        *args.overrides,
    )  # fmt: skip
    trainers = []
    for seed in range(args.seeds):
        prepared = prepare(
            preset="cifar10-exp100-srat-ldam",
            overrides=(*overrides, f"seed={seed}"),
            preset_dirs=home.preset_dirs,
            data_dir=home.data_dir,
        )
        trainer = Trainer(create_run(prepared, home.runs), device)
        trainer.begin_run(resume=False)
        trainers.append(trainer)
    steps = [t.train_step for t in trainers]
    stacked = graphed_stacked_step(StackedTrainStep(steps), steps)  # CUDA graphs on CUDA
    last = trainers[0].config.train.epochs - 1
    plans: list[EpochPlan] = [t.plan_epoch(last) for t in trainers]
    lead = plans[0]

    evaluate = StackEvaluator(trainers)

    def alone() -> None:
        if args.evaluation:
            for trainer in trainers:
                trainer.evaluate(last)
            return
        for trainer, plan in zip(trainers, plans, strict=True):
            trainer.train_batch(plan, 0)

    def together() -> None:
        if args.evaluation:
            evaluate(trainers, last)
            return
        stacked(
            [t.train_step for t in trainers],
            [t.data.train_x[p.batches[0]] for t, p in zip(trainers, plans, strict=True)],
            [t.data.train_y[p.batches[0]] for t, p in zip(trainers, plans, strict=True)],
            class_w=lead.class_w,
            use_gair=lead.use_gair,
            lam=lead.lam,
            sums=[p.position.sums for p in plans],
        )

    def timed(step: object) -> float:
        assert callable(step)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - started

    for _ in range(4):  # untimed: allocation, autotuning, CUDA-graph warm-up and capture
        alone()
        together()
    times: dict[str, list[float]] = {"alone": [], "stacked": []}
    for _ in range(args.repeats):
        times["alone"].append(timed(alone))
        times["stacked"].append(timed(together))
    alone_s, stacked_s = (statistics.median(times[k]) for k in ("alone", "stacked"))
    if args.evaluation:
        config, data = trainers[0].config, trainers[0].data
        what = (
            f"{args.arch}, {args.seeds} seeds, one per-epoch evaluation (clean on "
            f"{len(data.test_y)}, PGD-{config.eval.steps} on {len(data.robust_y)}, batch "
            f"{config.eval.batch_size}) on {device}"
        )
        unit = "evaluation"
    else:
        what = f"{args.arch}, {args.seeds} seeds, batch {args.batch}, PGD-{args.steps} on {device}"
        unit = "step"
    if args.json:
        figures = {
            "what": what,
            "unit": unit,
            "seeds": args.seeds,
            "alone_s": times["alone"],
            "stacked_s": times["stacked"],
            "ratio": alone_s / stacked_s,
        }
        print(json.dumps(figures))
        return
    print(
        f"{what} ({torch.get_num_threads()} threads): {args.seeds} {unit}s alone "
        f"{alone_s:.3f} s (runs {', '.join(f'{t:.3f}' for t in times['alone'])}), one "
        f"stacked {unit} {stacked_s:.3f} s (runs "
        f"{', '.join(f'{t:.3f}' for t in times['stacked'])}); "
        f"alone / stacked = {alone_s / stacked_s:.2f}x",
        file=sys.stdout,
    )
    if args.profile:
        from torch.profiler import profile

        for name, step in (("alone", alone), ("stacked", together)):
            with profile() as profiled:
                step()
            table = profiled.key_averages().table(sort_by="self_cpu_time_total", row_limit=10)
            print(f"{name}:\n{table}")


if __name__ == "__main__":
    main()
