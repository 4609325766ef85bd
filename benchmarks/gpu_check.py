"""The GPU measurements of the fast path, in one pass (tests, bench, epoch and precision took
about 4 minutes on one H200; study, not yet run on a GPU, is sized for 5-8 more with its
stacked and MPS studies, stacked ratios and packed-vs-alone runs; sections run in the order
``--sections`` names them, ``SECTIONS`` by default, and none starts after ``--budget-s``, so
one device call of 600 s returns what fitted: name what matters most first).

    python benchmarks/gpu_check.py --out DIR [--device cuda] [--precisions fp32,tf32,bf16]
        [--compile default] [--study 1,2,4] [--study-epochs 3]
        [--sections tests,bench,study,epoch,precision,compile] [--budget-s 540]

(with srat installed, e.g. by `make install`, or with `PYTHONPATH=.` from the repository root)

Everything goes through the `srat` command line, as a user would run it, in a temporary
SRAT_HOME; CIFAR-10 itself is not needed (``data.dataset=synthetic`` has its exact shapes and
Exp-100 class counts). It writes DIR/summary.json (the figures below) and DIR/log.txt (every
command and its output), and prints the summary:

0. the torch build and GPU, and the GPU count srat's launcher finds without torch (NVML and
   CUDA_VISIBLE_DEVICES, ``srat_engine.hardware``) beside torch's own (``gpu_count_srat_vs_torch``:
   the two numbers should be equal);
1. the CUDA-only tests (no host sync inside a training step or an evaluation; CUDA-graph
   replays train exactly like eager steps);
2. ``srat bench`` for ResNet-18 and the small CNN at batch 128 (engine vs reference step),
   and (section ``compile``) ResNet-18 again with ``train.compile`` set to each ``--compile``
   mode: inductor's fused kernels inside the captured step;
3. one CIFAR-10 Exp-100 epoch (12,406 examples, PGD-10, ResNet-18, batch 128) of
   ``cifar10-exp100-ce`` and ``cifar10-exp100-srat-ldam``: epochs 2-3 of a 3-epoch run, so the
   first epoch's cuDNN autotuning is left out (it is reported too); and the per-epoch
   evaluation (PGD-20 on 1,000 test images, clean on 10,000) with its attack replayed as CUDA
   graphs against eager (``eval.cuda_graphs=false``), epoch 3's ``eval_seconds``;
4. bf16 and tf32 against full fp32 training on the device: ``digits-srat-ldam`` for seeds
   0-2 in each precision, final PGD-20 robust accuracy (the runs go in parallel; the GPU has
   room);
5. several runs on one GPU (section ``study``): ``srat bench --study 1,2,4`` (K synthetic
   ``cifar10-exp100-srat-ldam`` runs of 3 epochs at once: aggregate images/s, TFLOP/s and
   the share of the bf16 peak, projected 200-epoch run and 11-method column), again with
   ``--stack`` for K > 1 (one process training the K seeds as one stacked model) and with
   ``--mps`` for K > 1 (skipped, and said so, without ``nvidia-cuda-mps-control``), the
   issue's targets checked against all three; `benchmarks/bench_stacked_step.py` for the
   widest K, one stacked training step and one stacked per-epoch evaluation against the
   runs' own; and packed against alone:
   ``digits-srat-ldam`` seeds 0-1 queued on one slot (one after another), then on two
   (``--per-gpu 2``), then as one stack (``--stack``), final robust accuracy per run side
   by side.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from srat_engine.fsutil import parse_jsonl

REPO = Path(__file__).resolve().parent.parent
SRAT = [sys.executable, "-m", "srat_tui.cli"]
EPOCH_PRESETS = ("cifar10-exp100-ce", "cifar10-exp100-srat-ldam")
SEEDS = (0, 1, 2)
# The default order (--sections gives another): what #15 most needs first, torch.compile
# (minutes of compiling) last.
SECTIONS = ("tests", "bench", "study", "epoch", "precision", "compile")
PACKED_PRESET = "digits-srat-ldam"
# issue #15's targets on one H200: a 200-epoch SRAT-LDAM run projected within 6 minutes, the
# 11-method column within 45 with packing, aggregate >= 2x one run's, >= 30% of bf16 peak
TARGETS = {"run_minutes": 6.0, "column_minutes": 45.0, "speedup": 2.0, "peak_share": 0.30}


class Log:
    def __init__(self, path: Path) -> None:
        self.file = path.open("w", encoding="utf-8")

    def write(self, text: str) -> None:
        self.file.write(text + "\n")
        self.file.flush()
        print(text, flush=True)


def run(log: Log, args: list[str], env: dict[str, str], timeout: float) -> tuple[int, str]:
    """One command, its output logged; a hung or failed step does not stop the others."""
    log.write(f"$ {' '.join(args)}")
    started = time.perf_counter()
    try:
        done = subprocess.run(
            args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
        )
        code, out, err = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as expired:
        code = 124
        out = expired.stdout or "" if isinstance(expired.stdout, str) else ""
        err = f"timed out after {timeout:.0f} s"
    log.write(out.rstrip())
    if err.strip():
        log.write(err.rstrip()[-4000:])
    log.write(f"[exit {code}, {time.perf_counter() - started:.1f} s]")
    return code, out


def bench(
    log: Log, env: dict[str, str], model: str, device: str, *extra: str, timeout: float = 300
) -> dict[str, Any]:
    args = [*SRAT, "bench", "--model", model, "--batch", "128", "--device", device, "--json"]
    code, out = run(log, [*args, *extra], env, timeout=timeout)
    if code != 0:
        return {"error": f"exit {code}"}
    result = json.loads(out)
    return {
        "command": f"srat bench --model {model} --batch 128 --device {device} {' '.join(extra)}",
        "ratio": round(result["ratio"], 2),
        "engine_images_per_s": round(result["engine"]["images_per_s"], 1),
        "reference_images_per_s": round(result["reference"]["images_per_s"], 1),
        "engine_tflops": round(result["engine"]["tflops"], 1),
        "reference_tflops": round(result["reference"]["tflops"], 1),
        "engine_peak_mb": round(result["engine"]["peak_memory_mb"]),
        "reference_peak_mb": round(result["reference"]["peak_memory_mb"]),
        "engine_precision": result["engine_precision"],
        "engine_compile": result["engine_compile"],
        "engine_cuda_graphs": result["engine_cuda_graphs"],
        "engine_graph_failure": result["engine_graph_failure"],
    }


def epoch_time(log: Log, env: dict[str, str], preset: str, device: str, *extra: str) -> Any:
    sets = ["data.dataset=synthetic", "train.epochs=3", *extra]
    args = [*SRAT, "run", "--preset", preset, "--device", device, "--json"]
    for assignment in sets:
        args += ["--set", assignment]
    code, out = run(log, args, env, timeout=400)
    records = parse_jsonl(out)
    epochs = [r for r in records if r.get("event") == "epoch"]
    if code != 0 or len(epochs) < 3:
        return {"error": f"exit {code}, {len(epochs)} epochs"}
    steady = [r["train_seconds"] for r in epochs[1:]]
    created = next(r for r in records if r.get("event") == "created")
    config = json.loads((Path(created["path"]) / "config.json").read_text())
    examples = sum(config["resolved"]["class_counts"])
    run_log = (Path(created["path"]) / "log.txt").read_text()
    fast_path = [
        line for line in run_log.splitlines() if "fast path" in line or "CUDA graph" in line
    ]
    return {
        "command": f"srat run --preset {preset} --device {device} "
        + " ".join(f"--set {s}" for s in sets),
        "train_seconds_epoch1": round(epochs[0]["train_seconds"], 2),
        "train_seconds_epochs2_3": [round(s, 2) for s in steady],
        "train_seconds": round(statistics.mean(steady), 2),
        "examples": examples,
        "images_per_s": round(examples / statistics.mean(steady), 1),
        "eval_seconds_epochs2_3": [round(r["eval_seconds"], 2) for r in epochs[1:]],
        "fast_path": fast_path,
    }


def eval_graphs(
    log: Log, env: dict[str, str], device: str, epochs: dict[str, Any]
) -> dict[str, Any]:
    """Per-epoch evaluation with its PGD-20 replayed as CUDA graphs (the default) against
    eager (``eval.cuda_graphs=false``), same preset: epoch 3's ``eval_seconds`` (epoch 1 warms
    each batch shape up, epoch 2 captures, epoch 3 only replays)."""
    preset = EPOCH_PRESETS[-1]
    graphed = epochs.get(preset, {})
    eager = epoch_time(log, env, preset, device, "eval.cuda_graphs=false")
    if "error" in graphed or "error" in eager:
        return {"error": graphed.get("error") or eager.get("error"), "eager": eager}
    graphed_s, eager_s = graphed["eval_seconds_epochs2_3"][-1], eager["eval_seconds_epochs2_3"][-1]
    return {
        "preset": preset,
        "eager_command": eager["command"],
        "graphed_eval_seconds_epoch3": graphed_s,
        "eager_eval_seconds_epoch3": eager_s,
        "eager_over_graphed": round(eager_s / graphed_s, 2) if graphed_s else None,
        "graph_lines": [line for line in graphed["fast_path"] if "CUDA graph" in line],
    }


def precision_check(
    log: Log, env: dict[str, str], device: str, precisions: list[str]
) -> dict[str, Any]:
    jobs = {}
    for precision in precisions:
        for seed in SEEDS:
            args = [*SRAT, "run", "--preset", "digits-srat-ldam", "--device", device, "--json"]
            args += ["--set", f"seed={seed}", "--set", f"train.precision={precision}"]
            log.write(f"$ {' '.join(args)} &")
            jobs[(precision, seed)] = subprocess.Popen(
                args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
    robust: dict[str, list[float]] = {precision: [] for precision in precisions}
    for (precision, seed), job in jobs.items():
        out, err = job.communicate(timeout=400)
        finals = [r for r in parse_jsonl(out) if r.get("event") == "final"]
        log.write(f"[{precision} seed {seed}: exit {job.returncode}] {err.strip()[-2000:]}")
        if finals:
            log.write(json.dumps(finals[-1]))
            robust[precision].append(finals[-1]["rob_overall"])
    summary: dict[str, Any] = {
        "command": "srat run --preset digits-srat-ldam --device cuda "
        "--set seed=S --set train.precision=P   (S = 0, 1, 2)",
    }
    for precision, values in robust.items():
        summary[precision] = values
        if len(values) >= 2:
            summary[f"{precision}_mean_sd"] = [
                round(statistics.mean(values), 2),
                round(statistics.stdev(values), 2),
            ]
    return summary


def study(
    log: Log, env: dict[str, str], device: str, counts: str, epochs: int, *extra: str
) -> dict[str, Any]:
    """`srat bench --study`: each K's figures (minutes for the projections)."""
    args = [*SRAT, "bench", "--study", counts, "--device", device, "--epochs", str(epochs)]
    args += ["--timeout", "200", "--json", *extra]
    code, out = run(log, args, env, timeout=900)
    if code != 0:
        return {"error": f"exit {code}"}
    result = json.loads(out)
    packs = {}
    for pack in result["packs"]:
        runs = pack["runs"]
        packs[f"K={pack['per_device']}"] = {
            "images_per_s": round(pack["images_per_s"], 1),
            "images_per_s_wall": round(pack["images_per_s_wall"], 1),
            "tflops": round(pack["tflops"], 1),
            "peak_share": pack["peak_share"] and round(pack["peak_share"], 3),
            "speedup": pack["speedup"] and round(pack["speedup"], 2),
            "speedup_wall": pack["speedup_wall"] and round(pack["speedup_wall"], 2),
            "epoch1_train_s": [round(r["first_train_s"], 2) for r in runs],
            "train_s": [round(r["train_s"], 2) for r in runs],
            "eval_s": [round(r["eval_s"], 2) for r in runs],
            "final_eval_s": [r["final_s"] and round(r["final_s"], 2) for r in runs],
            "run_minutes": round(pack["projected_run_s"] / 60, 2),
            "column_minutes": round(pack["projected_column_s"] / 60, 2),
        }
    return {
        "command": " ".join(["srat", *(a for a in args[len(SRAT) :] if a != "--json")]),
        "device_name": result["device_name"],
        "peak_tflops": result["peak_tflops"],
        "peak_source": result["peak_source"],
        "project_epochs": result["project_epochs"],
        "packs": packs,
    }


def stacked_ratios(log: Log, env: dict[str, str], device: str, seeds: int) -> dict[str, Any]:
    """`benchmarks/bench_stacked_step.py`: one stacked training step of `seeds` runs, and
    one stacked per-epoch evaluation (the preset's: clean 10,000, PGD on 1,000), against the
    runs' own one after another; ratio > 1: stacking is faster."""
    script = [sys.executable, str(REPO / "benchmarks" / "bench_stacked_step.py")]
    common = ["--device", device, "--seeds", str(seeds), "--json"]
    figures: dict[str, Any] = {}
    for name, extra in (("step", []), ("evaluation", ["--evaluation"])):
        code, out = run(log, [*script, *common, *extra], env, timeout=300)
        if code != 0:
            figures[name] = {"error": f"exit {code}"}
            continue
        result = json.loads(out.strip().splitlines()[-1])
        figures[name] = {
            "command": " ".join(["python benchmarks/bench_stacked_step.py", *common[:-1], *extra]),
            "what": result["what"],
            "alone_s": round(statistics.median(result["alone_s"]), 4),
            "stacked_s": round(statistics.median(result["stacked_s"]), 4),
            "alone_over_stacked": round(result["ratio"], 2),
        }
    return figures


def targets(studies: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's targets against the best K of the studies that ran; one run and the
    speed-ups are against the first study's K=1 (the MPS and stack studies have no K=1 of
    their own)."""
    packs = [p for s in studies for p in s.get("packs", {}).values()]
    alone = studies[0].get("packs", {}).get("K=1")
    if not packs or alone is None:
        return {"error": "no study figures with K=1"}
    for pack in packs:
        pack["speedup_vs_alone"] = round(pack["images_per_s"] / alone["images_per_s"], 2)
    best = {
        "run_minutes": alone["run_minutes"],
        "column_minutes": min(p["column_minutes"] for p in packs),
        "speedup": max(p["speedup_vs_alone"] for p in packs),
        # None where the device has no known peak (--peak-tflops gives one)
        "peak_share": max((p["peak_share"] for p in packs if p["peak_share"]), default=None),
    }
    met = {
        key: None
        if value is None
        else value <= TARGETS[key]
        if key.endswith("minutes")
        else value >= TARGETS[key]
        for key, value in best.items()
    }
    return {"targets": TARGETS, "measured": best, "met": met}


def packed_vs_alone(log: Log, env: dict[str, str], device: str, *extra: str) -> dict[str, Any]:
    """digits-srat-ldam seeds 0-1 one after another on one slot, then packed on two, then as
    one stack (`extra`: more `srat run` arguments, e.g. --set for a quick try on a CPU)."""
    runs_root = Path(env["SRAT_HOME"]) / "runs"
    summary: dict[str, Any] = {
        "command": f"srat run --preset {PACKED_PRESET} --device {device} --seeds 0-1 --detach "
        "--per-gpu P   (P = 1: alone, one after another; P = 2: packed), and --stack",
    }
    modes = {"alone": ["--per-gpu", "1"], "packed": ["--per-gpu", "2"], "stacked": ["--stack"]}
    for mode, placement in modes.items():
        args = [*SRAT, "run", "--preset", PACKED_PRESET, "--device", device, "--seeds", "0-1"]
        args += ["--detach", *placement, "--json", *extra]
        started = time.perf_counter()
        code, out = run(log, args, env, timeout=120)
        if code != 0:
            summary[mode] = {"error": f"exit {code}"}
            continue
        ids = [entry["run_id"] for entry in json.loads(out)]
        deadline = started + 300
        while time.perf_counter() < deadline and not all(
            (runs_root / i / "exit.json").exists() for i in ids
        ):
            time.sleep(0.5)
        wall = time.perf_counter() - started
        result: dict[str, Any] = {"wall_s": round(wall, 1)}
        for seed, run_id in enumerate(ids):
            exit_file = runs_root / run_id / "exit.json"
            if not exit_file.exists():
                run(log, [*SRAT, "runs", "kill", run_id], env, timeout=60)
                result[f"seed {seed}"] = "did not end within 300 s (killed)"
                continue
            ended = json.loads(exit_file.read_text())
            final = ended.get("final") or {}
            log.write(f"[{mode} seed {seed}: {run_id} {ended.get('status')}] {json.dumps(final)}")
            result[f"seed {seed}"] = final.get("rob_overall", ended.get("error"))
        summary[mode] = result
    alone = summary.get("alone", {})
    for mode in ("packed", "stacked"):
        other = summary.get(mode, {})
        summary[f"{mode}_minus_alone"] = {
            seed: round(other[seed] - alone[seed], 2)
            for seed in ("seed 0", "seed 1")
            if isinstance(alone.get(seed), (int, float))
            and isinstance(other.get(seed), (int, float))
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precisions", default="fp32,tf32,bf16", help="for the digits runs")
    parser.add_argument(
        "--compile", default="default", help="train.compile modes for the compile section"
    )
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"which parts to run, comma-separated, in that order: {', '.join(SECTIONS)}",
    )
    parser.add_argument("--study", default="1,2,4", help="runs at once (K) for the study")
    parser.add_argument("--study-epochs", type=int, default=3, help="epochs per study run")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=540.0,
        help="start no section after this many seconds (a device call is limited to 600)",
    )
    args = parser.parse_args()
    started = time.monotonic()
    sections = list(dict.fromkeys(part.strip() for part in args.sections.split(",")))
    if not set(sections) <= set(SECTIONS):
        unknown = sorted(set(sections) - set(SECTIONS))
        parser.error(f"--sections: unknown {', '.join(unknown)}")
    args.out.mkdir(parents=True, exist_ok=True)
    log = Log(args.out / "log.txt")
    env = {**os.environ, "SRAT_HOME": tempfile.mkdtemp(prefix="srat-gpu-check-")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    summary: dict[str, Any] = {}

    def save() -> None:
        (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    _code, out = run(
        log,
        [
            sys.executable,
            "-c",
            "import torch; print(torch.__version__, torch.version.cuda, "
            "torch.cuda.get_device_name())",
        ],
        env,
        timeout=60,
    )
    summary["torch"] = out.strip()
    # the launcher counts GPUs without torch (NVML + CUDA_VISIBLE_DEVICES): the same as torch?
    _code, out = run(
        log,
        [
            sys.executable,
            "-c",
            "from srat_engine.hardware import cuda_device_count; srat = cuda_device_count(); "
            "import torch; print(srat, torch.cuda.device_count())",
        ],
        env,
        timeout=60,
    )
    summary["gpu_count_srat_vs_torch"] = out.strip()

    def due(section: str) -> bool:
        """Asked for, and started while the budget lasts (else noted as skipped)."""
        if section not in sections:
            return False
        elapsed = time.monotonic() - started
        if elapsed > args.budget_s:
            summary.setdefault("skipped", []).append(f"{section} (budget: {elapsed:.0f} s gone)")
            save()
            return False
        log.write(f"== {section} at {elapsed:.0f} s")
        return True

    def tests() -> None:
        # every test marked `cuda` (tests/conftest.py); a test module that cannot be imported
        # there (a package the machine lacks) is reported, not a reason to run none
        selection = ["tests", "-m", "cuda", "--continue-on-collection-errors"]
        pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *selection]
        code, out = run(log, pytest, env, timeout=300)
        summary["cuda_tests"] = out.strip().splitlines()[-1] if out.strip() else f"exit {code}"
        save()

    def benches() -> None:
        summary["bench_resnet18"] = bench(log, env, "resnet18", args.device)
        summary["bench_small"] = bench(log, env, "small", args.device)
        save()

    def studies() -> None:
        summary["study"] = study(log, env, args.device, args.study, args.study_epochs)
        save()
        # K > 1 only: the stack and MPS studies are compared with the first study's K = 1;
        # the stack first (MPS may be absent from the device's image)
        shared = ",".join(k for k in args.study.split(",") if k.strip() != "1") or args.study
        summary["study_stack"] = study(log, env, args.device, shared, args.study_epochs, "--stack")
        save()
        widest = max(int(k) for k in args.study.split(","))
        summary["stacked_ratios"] = stacked_ratios(log, env, args.device, max(widest, 2))
        save()
        if shutil.which("nvidia-cuda-mps-control") is None:
            summary["study_mps"] = {"skipped": "nvidia-cuda-mps-control is not on PATH"}
        else:
            summary["study_mps"] = study(log, env, args.device, shared, args.study_epochs, "--mps")
        save()
        summary["study_targets"] = targets(
            [summary["study"], summary["study_stack"], summary["study_mps"]]
        )
        save()
        summary["packed_vs_alone"] = packed_vs_alone(log, env, args.device)
        save()

    def epochs() -> None:
        summary["epoch"] = {p: epoch_time(log, env, p, args.device) for p in EPOCH_PRESETS}
        save()
        summary["eval_graphs"] = eval_graphs(log, env, args.device, summary["epoch"])
        save()

    def precision() -> None:
        precisions = args.precisions.split(",")
        summary["bf16_vs_fp32"] = precision_check(log, env, args.device, precisions)
        save()

    def compiled() -> None:
        for mode in args.compile.split(","):
            summary[f"bench_resnet18_compile_{mode}"] = bench(
                log, env, "resnet18", args.device, "--set", f"train.compile={mode}", timeout=600
            )
            save()

    parts = {"tests": tests, "bench": benches, "study": studies, "epoch": epochs,
             "precision": precision, "compile": compiled}  # fmt: skip
    for section in sections:  # in the order --sections gives them
        if due(section):
            parts[section]()
    log.write(json.dumps(summary, indent=2))
    # the runs' home: its logs are in log.txt already, and a temp folder left per call adds up
    shutil.rmtree(env["SRAT_HOME"], ignore_errors=True)


if __name__ == "__main__":
    main()
