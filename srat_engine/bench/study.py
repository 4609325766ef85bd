"""`srat bench --study`: K runs of one preset at once on one device, against one run alone.

For each K of the study, K runs of the preset (seeds 0..K-1, ``data.dataset=synthetic`` unless
an override says otherwise, a few epochs) are created in a srat home and launched detached
with K slots on the device, the way ``srat run --seeds 0-{K-1} --detach --per-gpu K`` (or
``--slots K`` on the CPU) launches them: the same engine functions (``config.prepare``,
``jobs.supervisor``), so the runs are real runs with their own processes, run directories and
``metrics.jsonl``. The K groups run one after another; nothing else is timed meanwhile.
With ``stacked``, each K > 1 is one stack instead (``srat run --seeds 0-{K-1} --stack
--detach``): one worker process that trains the K seeds as one stacked model
(``training.stacked_trainer``) in one slot.

What is measured, from each run's epoch records (``train_seconds``, ``eval_seconds``, timed
by the run itself) and from when this process first saw each record (polled every
``poll_s``; the records' own timestamps are to the second only):

* per run: epoch 1 apart (cuDNN autotuning, the CUDA graph warm-up and capture), then the
  median ``train_seconds`` and ``eval_seconds`` of the epochs after the first, the evaluation
  split by kind (clean only, or clean + PGD on the robust subset), and the final evaluation
  (the last epoch's record to the final record: checkpoints and the final clean + PGD pass on
  the whole test set);
* aggregate images/s, two ways: **steady**, the sum over runs of training examples per
  epoch / that run's median train seconds (training only, epochs after the first), and
  **wall**, every training example of every epoch of every run / the wall-clock time from the
  first run's first epoch start to the last run's last epoch end (evaluation and the first
  epoch's warm-up included);
* model TFLOP/s: images/s x ``config.workload.pgd_training_forwards`` (2K + 3 forwards for
  PGD-K) x the forward FLOPs of the preset's model (``models.flops.forward_flops``), the
  convention of ``srat bench``; the share of the device's dense bf16 peak (``BF16_PEAKS``,
  or one given); the speed-up of K over K = 1;
* projections: one run of the preset's own length (200 epochs for the paper's presets) at
  that K, its epochs evaluated as its ``eval.every`` / ``eval.robust_every`` say
  (``config.workload.evaluation_due``) and, apart, with every epoch evaluated; and the
  11-method column of Table 2 run K at a time: ceil(11 / K) waves of one packed run.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from srat_engine.config.prepare import PreparedRun, create_run, prepare
from srat_engine.config.seeds import seed_override
from srat_engine.config.workload import evaluation_counts, pgd_training_forwards
from srat_engine.devices import parse_device
from srat_engine.errors import SratError
from srat_engine.jobs.supervisor import kill_run, launch_detached, launch_stack, resolve_devices
from srat_engine.models import build_model
from srat_engine.models.flops import forward_flops
from srat_engine.runs.home import Home
from srat_engine.runs.liveness import ACTIVE, reconcile
from srat_engine.runs.rundir import RunDir

DEFAULT_PRESET = "cifar10-exp100-srat-ldam"
DEFAULT_EPOCHS = 3
COLUMN_RUNS = 11  # the Exp-100 column of the paper's Table 2: 11 methods, one seed
MPS_CONTROL = "nvidia-cuda-mps-control"
# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's datasheets, TFLOP/s: (what it is,
# the peak, a pattern of the names torch.cuda.get_device_name gives that GPU). Names that
# match none get no share rather than a guess (an H100 NVL or H200 NVL is not an SXM part).
BF16_PEAKS: tuple[tuple[str, float, str], ...] = (
    ("H200 SXM", 989.0, r"H200(?!.*NVL)"),
    ("H100 SXM", 989.0, r"H100.*(SXM|HBM3)"),
    ("H100 PCIe", 756.0, r"H100.*PCIe"),
    ("A100", 312.0, r"A100"),
)
# the study's own settings: --epochs, --device and the K seeds, not --set
_OWN_KEYS = {"train.epochs": "--epochs", "device": "--device", "seed": "the study (seeds 0..K-1)"}


class StudyFailed(SratError):
    """A run of the study failed or did not end in time (not bad input): its runs are kept."""


# -- the arithmetic ----------------------------------------------------------------------------
def aggregate_images_per_s(examples: Sequence[int], train_seconds: Sequence[float]) -> float:
    """Steady aggregate throughput of runs trained at once: ``sum_i n_i / t_i``, with n_i run
    i's training examples per epoch and t_i its median training seconds per epoch."""
    if len(examples) != len(train_seconds) or not examples:
        raise ValueError("one example count and one train time per run, at least one run")
    return sum(n / t for n, t in zip(examples, train_seconds, strict=True))


def wall_images_per_s(trained: int, first_start: float, last_end: float) -> float:
    """Wall-clock aggregate throughput: ``N / (t_end - t_start)``, N every training example of
    every epoch of every run, t_start the first run's first epoch start and t_end the last
    run's last epoch end (so evaluation and warm-up count as time)."""
    if last_end <= first_start:
        raise ValueError("the window must end after it starts")
    return trained / (last_end - first_start)


def model_tflops(images_per_s: float, flops_per_forward: float, attack_steps: int) -> float:
    """Model TFLOP/s of PGD-K training: ``r x (2K + 3) x F / 1e12`` for r examples/s and
    F FLOPs per forward (``models.flops``; the convention of ``srat bench``)."""
    return images_per_s * pgd_training_forwards(attack_steps) * flops_per_forward / 1e12


def peak_share(tflops: float, peak: float) -> float:
    """The share of a peak: ``tflops / peak`` (0.3 = 30%)."""
    if peak <= 0:
        raise ValueError("a peak must be positive")
    return tflops / peak


def bf16_peak(device_name: str) -> tuple[str, float] | None:
    """The dense bf16 peak (what, TFLOP/s) of a GPU named `device_name` (as
    ``torch.cuda.get_device_name`` says it), from ``BF16_PEAKS``; None for a GPU not there."""
    for what, peak, pattern in BF16_PEAKS:
        if re.search(pattern, device_name, re.IGNORECASE):
            return what, peak
    return None


def projected_run_seconds(
    epochs: int,
    train_s: float,
    counts: tuple[int, int],
    clean_eval_s: float,
    full_eval_s: float,
    final_s: float,
) -> float:
    """A run's wall time: ``E t + n_c e_c + n_f e_f + f``, for E epochs of t training seconds,
    n_c clean-only evaluations of e_c seconds and n_f clean + robust ones of e_f seconds
    (`counts` = (n_c, n_f)), then the final evaluation's f seconds."""
    clean, full = counts
    return epochs * train_s + clean * clean_eval_s + full * full_eval_s + final_s


def column_seconds(runs: int, per_device: int, run_s: float) -> float:
    """`runs` runs, `per_device` at a time on one device: ``ceil(runs / K) x T``, T one packed
    run's wall time (each wave lasts as long as its slowest run; a last, smaller wave is
    counted as a full one)."""
    return math.ceil(runs / per_device) * run_s


def parse_per_device(text: str) -> list[int]:
    """ "1,2,4" (or "1 2 4") -> [1, 2, 4]: runs at once on the device, each at least 1,
    repeats dropped, order kept; SratError otherwise."""
    tokens = [token for token in re.split(r"[,\s]+", text.strip()) if token]
    if not tokens or not all(token.isascii() and token.isdigit() for token in tokens):
        raise SratError(f"--study expects run counts like 1,2,4 (got {text!r})")
    counts = list(dict.fromkeys(int(token) for token in tokens))
    if min(counts) < 1:
        raise SratError(f"--study: each run count must be at least 1 (got {text!r})")
    return counts


# -- the results -------------------------------------------------------------------------------
@dataclass
class RunTiming:
    """One run of a pack; seconds from its epoch records, `final_s` and the window from when
    the study saw the records."""

    run_id: str
    seed: int
    examples: int  # training examples per epoch
    train_seconds: list[float]  # every epoch, as recorded
    eval_seconds: list[float]
    eval_kinds: list[str]  # per epoch: "full" (clean + robust), "clean" or "none"
    first_train_s: float  # epoch 1: warm-up and autotuning
    first_eval_s: float
    train_s: float  # median of the epochs after the first
    eval_s: float
    clean_eval_s: float | None  # median over the epochs after the first of that kind
    full_eval_s: float | None
    final_s: float | None  # last epoch record -> final record, as seen by the study
    images_per_s: float  # examples / train_s
    projected_run_s: float  # the preset's length, evaluated as configured
    projected_run_every_epoch_s: float  # the same, every epoch fully evaluated
    std_overall: float | None  # the final record's accuracies
    rob_overall: float | None
    start_s: float  # first epoch start, seconds since the pack was launched
    end_s: float  # last epoch end, likewise


@dataclass
class PackResult:
    """K runs at once on the device."""

    per_device: int
    runs: list[RunTiming]
    images_per_s: float  # steady: sum of the runs' examples / median train seconds
    wall_s: float  # first epoch start -> last epoch end, over all runs
    images_per_s_wall: float  # every example of every epoch / wall_s
    tflops: float
    tflops_wall: float
    peak_share: float | None
    peak_share_wall: float | None
    speedup: float | None  # images_per_s / K = 1's (None without K = 1 in the study)
    speedup_wall: float | None
    projected_run_s: float  # the slowest run's projection: a wave ends with it
    projected_run_every_epoch_s: float
    waves: int  # ceil(column_runs / K)
    projected_column_s: float


@dataclass
class StudyResult:
    preset: str
    device: str
    device_name: str
    mps: bool
    stacked: bool  # each K > 1 one stacked process (`--stack`), not K processes
    epochs: int
    overrides: list[str]
    arch: str
    attack_steps: int
    forward_gflops: float
    fwd_equivalents: int
    precision: str  # train.precision as configured (auto: bf16 on CUDA GPUs that have it)
    project_epochs: int
    eval_every: int
    robust_every: int
    column_runs: int
    peak_tflops: float | None
    peak_source: str  # where the peak came from, or why there is none
    home: str
    packs: list[PackResult]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- homes, devices, MPS -------------------------------------------------------------------------
@contextmanager
def study_home(user: Home, root: Path | None = None) -> Iterator[Home]:
    """The home a study's runs go in. `root` given: that home, kept (its runs are listed by
    ``SRAT_HOME=root srat runs ls``). Else a new temporary home that searches `user`'s presets
    and uses its datasets' folder, so the user's own run index is never touched; removed
    afterwards, unless a run failed or timed out (StudyFailed): then kept, and the error says
    where."""
    if root is not None:
        yield Home(root, user.extra_presets, user.data_override)
        return
    temp = Path(tempfile.mkdtemp(prefix="srat-study-"))
    try:
        yield Home(temp, (*user.extra_presets, user.presets), user.data_dir)
    except StudyFailed as failure:
        raise StudyFailed(f"{failure} (the study's home is kept: {temp})") from None
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    shutil.rmtree(temp, ignore_errors=True)


def study_device(device: str) -> str:
    """The one device a study packs its runs on: cpu or cuda:N (auto: cuda:0 when a GPU is
    visible, else cpu; cuda: cuda:0); SratError for a device that is unknown, absent or
    cannot run detached."""
    # auto: every visible GPU, else the CPU; an absent cuda:N fails here
    devices, _ = resolve_devices(device=str(parse_device(device)))
    return devices[0]


def device_name(device: str) -> str:
    """What the device is: for cuda:N ``torch.cuda.get_device_name``, asked in a short child
    process so this one never holds a CUDA context beside the runs (nor outside an MPS
    server the runs share)."""
    if device == "cpu":
        return f"{os.cpu_count()} logical cores"
    index = parse_device(device).index or 0
    probe = "import sys, torch; print(torch.cuda.get_device_name(int(sys.argv[1])))"
    try:
        done = subprocess.run(
            [sys.executable, "-c", probe, str(index)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise SratError(f"asking {device}'s name timed out") from None
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SratError(f"asking {device}'s name failed: {tail}")
    return done.stdout.strip()


def _peak(device: str, name: str, given: float | None) -> tuple[float | None, str]:
    if given is not None:
        return given, "given (--peak-tflops)"
    if device == "cpu":
        return None, "no share on a CPU (no bf16 peak table for CPUs; --peak-tflops gives one)"
    found = bf16_peak(name)
    if found is None:
        known = ", ".join(what for what, _, _ in BF16_PEAKS)
        return None, f"{name} is not in the bf16 peak table ({known}): no share; --peak-tflops"
    what, peak = found
    return peak, f"dense bf16 peak of the {what} (NVIDIA datasheet)"


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """`values` set in os.environ for the body (the workers launched in it inherit them)."""
    before = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def cuda_mps(log_dir: Path) -> Iterator[dict[str, str]]:
    """A private CUDA MPS control daemon for the body: ``nvidia-cuda-mps-control -d`` with its
    own CUDA_MPS_PIPE_DIRECTORY (a new temporary folder) and CUDA_MPS_LOG_DIRECTORY
    (`log_dir`), both set in os.environ for the workers launched meanwhile; stopped by
    ``quit`` on its stdin afterwards, also when the body fails. SratError when the binary is
    not on PATH or does not start."""
    binary = _mps_binary()
    log_dir.mkdir(parents=True, exist_ok=True)
    pipe = Path(tempfile.mkdtemp(prefix="srat-mps-"))  # short: it holds a Unix socket
    values = {"CUDA_MPS_PIPE_DIRECTORY": str(pipe), "CUDA_MPS_LOG_DIRECTORY": str(log_dir)}
    env = {**os.environ, **values}
    started = log_dir / "srat-start.txt"
    try:
        try:
            # output to a file, not a pipe: the daemon it forks could hold a pipe open forever
            with started.open("w") as output:
                code = subprocess.run(
                    [binary, "-d"],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    timeout=60,
                    check=False,
                ).returncode
        except subprocess.TimeoutExpired:
            with suppress(SratError, OSError, subprocess.SubprocessError):
                _quit_mps(binary, env)
            raise SratError(f"--mps: {MPS_CONTROL} -d did not return within 60 s") from None
        if code != 0:
            said = " ".join(started.read_text(errors="replace").split())[-300:]
            raise SratError(f"--mps: {MPS_CONTROL} -d exited {code}: {said or 'no output'}")
        try:
            with _environment(values):
                yield values
        except BaseException:
            with suppress(SratError, OSError, subprocess.SubprocessError):
                _quit_mps(binary, env)
            raise
        _quit_mps(binary, env)
    finally:
        shutil.rmtree(pipe, ignore_errors=True)


def _mps_binary() -> str:
    """Where nvidia-cuda-mps-control is; SratError when it is not on PATH."""
    binary = shutil.which(MPS_CONTROL)
    if binary is None:
        raise SratError(f"--mps: {MPS_CONTROL} is not on PATH (it comes with the NVIDIA driver)")
    return binary


def _quit_mps(binary: str, env: dict[str, str]) -> None:
    done = subprocess.run(
        [binary], input="quit\n", env=env, capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        said = " ".join((done.stderr or done.stdout).split())[-300:]
        raise SratError(f"--mps: stopping the MPS daemon failed (exit {done.returncode}): {said}")


# -- the study ---------------------------------------------------------------------------------
def run_study(
    home: Home,
    preset: str = DEFAULT_PRESET,
    per_device: Sequence[int] = (1, 2, 4),
    *,
    epochs: int = DEFAULT_EPOCHS,
    device: str = "auto",
    overrides: Sequence[str] = (),
    peak_tflops: float | None = None,
    mps: bool = False,
    stacked: bool = False,
    timeout_s: float = 1800.0,
    project_epochs: int | None = None,
    column_runs: int = COLUMN_RUNS,
    poll_s: float = 0.1,
    say: Callable[[str], None] | None = None,
) -> StudyResult:
    """Run the study in `home` (see the module docstring) and return what it measured.

    `overrides` are ``section.key=value`` as ``srat run --set``, after the study's
    ``data.dataset=synthetic`` (so ``data.dataset=...`` replaces it) and before its own seed,
    ``train.epochs`` and device, which they may not set. `timeout_s` bounds each K's runs;
    `project_epochs` (default: the preset's ``train.epochs``) is the projected run's length.
    Everything is checked before the first run is created (SratError); a run that fails or
    outlives `timeout_s` raises StudyFailed naming it and its log, after every run still
    active has been killed.
    """
    say = say or (lambda _line: None)
    counts = list(dict.fromkeys(per_device))
    if not counts or min(counts) < 1:
        raise SratError("--study: each run count must be at least 1")
    if epochs < 2:
        raise SratError(f"--epochs must be at least 2: the first is warm-up (got {epochs})")
    if not 0 < timeout_s < math.inf:  # NaN too: it compared false and bounded nothing
        raise SratError(f"--timeout must be a positive number of seconds (got {timeout_s})")
    if not 0 < poll_s < math.inf or column_runs < 1:
        raise SratError("the poll interval and the column's runs must be positive")
    if peak_tflops is not None and not peak_tflops > 0:
        raise SratError(f"--peak-tflops must be positive (got {peak_tflops})")
    for assignment in overrides:
        key = assignment.partition("=")[0].strip()
        if key in _OWN_KEYS:
            raise SratError(f"--set {key} is the study's own: use {_OWN_KEYS[key]}")
    if mps and stacked:
        raise SratError("--mps shares a GPU between processes; a --stack is one process")
    target = study_device(device)
    if mps and not target.startswith("cuda"):
        raise SratError(f"--mps needs a CUDA device (got {target})")
    if mps:
        _mps_binary()  # before any run is created
    for k in counts:
        resolve_devices(device=target, slots=k, per_gpu=k)
    # synthetic data unless --set names a dataset (then the record shows only that one)
    chosen = any(o.split("=", 1)[0].strip() == "data.dataset" for o in overrides)
    base = tuple(overrides) if chosen else ("data.dataset=synthetic", *overrides)
    as_preset = prepare(preset=preset, overrides=base, preset_dirs=home.preset_dirs,
                        data_dir=home.data_dir)  # fmt: skip
    length = as_preset.config.train.epochs if project_epochs is None else project_epochs
    if length < 1:
        raise SratError(f"the projected run needs at least one epoch (got {length})")
    runs_of = [
        prepare(
            preset=preset,
            overrides=(*base, seed_override(seed), f"train.epochs={epochs}", f'device="{target}"'),
            preset_dirs=home.preset_dirs,
            data_dir=home.data_dir,
        )
        for seed in range(max(counts))
    ]
    config, resolved = runs_of[0].config, runs_of[0].resolved
    if stacked and max(counts) > 1:
        from srat_engine.config.stacking import check_stackable

        check_stackable([item.config for item in runs_of])
    flops = forward_flops(
        build_model(config.model.arch, resolved.num_classes, resolved.input_shape),
        resolved.input_shape,
    )
    name = device_name(target)
    peak, peak_source = _peak(target, name, peak_tflops)
    eval_counts = evaluation_counts(length, config.eval)
    packs: list[PackResult] = []
    with cuda_mps(home.root / "mps-log") if mps else nullcontext():
        for k in counts:
            how = "stacked in one process" if stacked and k > 1 else "at once"
            say(f"K={k}: {k} run(s) of {preset} {how} on {target}, {epochs} epochs each")
            seen, launched = _run_pack(
                home, runs_of[:k], target, k, timeout_s, poll_s, stacked=stacked
            )
            timings = [_timing(entry, launched, length, eval_counts) for entry in seen.values()]
            packs.append(_pack(k, timings, flops, config.attack.steps, peak, column_runs))
            say(f"K={k}: {packs[-1].images_per_s:,.1f} images/s (steady, all runs)")
    alone = next((pack for pack in packs if pack.per_device == 1), None)
    if alone is not None:
        for pack in packs:
            pack.speedup = pack.images_per_s / alone.images_per_s
            pack.speedup_wall = pack.images_per_s_wall / alone.images_per_s_wall
    return StudyResult(
        preset=preset,
        device=target,
        device_name=name,
        mps=mps,
        stacked=stacked,
        epochs=epochs,
        overrides=list(base),
        arch=config.model.arch,
        attack_steps=config.attack.steps,
        forward_gflops=flops / 1e9,
        fwd_equivalents=pgd_training_forwards(config.attack.steps),
        precision=config.train.precision,
        project_epochs=length,
        eval_every=config.eval.every,
        robust_every=config.eval.robust_every,
        column_runs=column_runs,
        peak_tflops=peak,
        peak_source=peak_source,
        home=str(home.root),
        packs=packs,
    )


def _run_pack(
    home: Home,
    prepared: Sequence[PreparedRun],
    device: str,
    k: int,
    timeout_s: float,
    poll_s: float,
    *,
    stacked: bool = False,
) -> tuple[dict[str, dict[str, Any]], float]:
    """Create and launch one run per prepared config with `k` slots on `device` (`stacked`:
    the k runs as one stack, in one slot), and poll
    them until all have ended; returns, per run id, the run, its records and when each was
    first seen (time.monotonic), and when the pack was launched. StudyFailed for a run that
    did not finish or a pack that outlived `timeout_s`; every run still active is killed on
    the way out, however it is left (Ctrl-C included: the runs live in their own sessions)."""
    stack = stacked and k > 1
    slots = 1 if stack else k  # a stack holds one slot
    devices, per_device = resolve_devices(device=device, slots=slots, per_gpu=slots)
    seen: dict[str, dict[str, Any]] = {}
    pids: list[int] = []
    launched = time.monotonic()
    try:
        for item in prepared:
            run = create_run(item, home.runs)
            seen[run.id] = {"run": run, "offset": 0, "records": [], "epochs": {}, "final": None}
            if not stack:
                pids.append(launch_detached(run, devices, per_device, home=home))
        if stack:
            runs = [entry["run"] for entry in seen.values()]
            pids.append(launch_stack(runs, devices, per_device, home=home))
        deadline = launched + timeout_s
        pending = set(seen)
        while pending:
            for run_id in sorted(pending):
                entry = seen[run_id]
                ended = reconcile(entry["run"]) not in ACTIVE  # before reading: nothing missed
                records, entry["offset"] = entry["run"].metrics_since(entry["offset"])
                entry["records"].extend(records)
                now = time.monotonic()
                for record in records:
                    if record.get("event") == "epoch" and isinstance(record.get("epoch"), int):
                        entry["epochs"].setdefault(record["epoch"], now)
                    elif record.get("event") == "final":
                        entry["final"] = now
                if ended:
                    pending.discard(run_id)
            if pending and time.monotonic() > deadline:
                raise StudyFailed(
                    f"K={k}: runs {', '.join(sorted(pending))} did not end within "
                    f"{timeout_s:.0f} s (killed); their logs: "
                    + ", ".join(str(seen[r]["run"].log_path) for r in sorted(pending))
                )
            if pending:
                time.sleep(poll_s)
    finally:
        for entry in seen.values():
            with suppress(SratError, OSError):
                if reconcile(entry["run"]) in ACTIVE:
                    kill_run(entry["run"], home=home)
        # the workers are this process's children: reap them, waiting (a little) for those
        # still recording their runs' ends in the index, which would otherwise write into a
        # temporary home after it is removed
        _reap(pids, deadline=time.monotonic() + 30.0)
    for run_id, entry in seen.items():
        run = entry["run"]
        status = reconcile(run)
        if status != "finished":
            error = (run.exit_record() or {}).get("error") or "no error recorded"
            raise StudyFailed(
                f"K={k}: run {run_id} {status}: {' '.join(str(error).split())}; its log: "
                f"{run.log_path} (worker output: {run.path / 'output.log'})"
            )
    return seen, launched


def _reap(pids: Sequence[int], deadline: float) -> None:
    """Wait for the child processes `pids` to exit, until `deadline` (time.monotonic)."""
    waiting = list(pids)
    while waiting:
        for pid in list(waiting):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except (ChildProcessError, OSError):  # not ours, or already reaped
                done = pid
            if done == pid:
                waiting.remove(pid)
        if waiting:
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)


def _median_of(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _timing(
    entry: dict[str, Any], launched: float, length: int, counts: tuple[int, int]
) -> RunTiming:
    """One run's timing from its records and when the study saw them (`entry` of
    `_run_pack`); the projections are of a `length`-epoch run evaluated `counts` times."""
    run: RunDir = entry["run"]
    records, document = entry["records"], run.config()
    epochs = sorted(
        (r for r in records if r.get("event") == "epoch" and isinstance(r.get("epoch"), int)),
        key=lambda r: r["epoch"],
    )
    final = next((r for r in reversed(records) if r.get("event") == "final"), {})
    if len(epochs) < 2 or any(r["epoch"] not in entry["epochs"] for r in epochs):
        raise StudyFailed(f"run {run.id} recorded {len(epochs)} epoch(s): too few to time")
    train = [float(r["train_seconds"]) for r in epochs]
    evals = [float(r["eval_seconds"]) for r in epochs]
    kinds = [
        "full" if r.get("rob_overall") is not None
        else "clean" if r.get("std_overall") is not None
        else "none"
        for r in epochs
    ]  # fmt: skip
    clean = _median_of([e for e, kind in zip(evals[1:], kinds[1:], strict=True) if kind == "clean"])
    full = _median_of([e for e, kind in zip(evals[1:], kinds[1:], strict=True) if kind == "full"])
    last_seen = entry["epochs"][epochs[-1]["epoch"]]
    final_s = None if entry["final"] is None else max(0.0, entry["final"] - last_seen)
    train_s = statistics.median(train[1:])
    # a kind of evaluation the epochs after the first never did costs what the other did
    clean_cost = clean if clean is not None else full if full is not None else 0.0
    full_cost = full if full is not None else clean_cost
    examples = int(document["resolved"]["train_size"])
    first_seen = entry["epochs"][epochs[0]["epoch"]]
    return RunTiming(
        run_id=run.id,
        seed=int(document["config"]["seed"]),
        examples=examples,
        train_seconds=train,
        eval_seconds=evals,
        eval_kinds=kinds,
        first_train_s=train[0],
        first_eval_s=evals[0],
        train_s=train_s,
        eval_s=statistics.median(evals[1:]),
        clean_eval_s=clean,
        full_eval_s=full,
        final_s=final_s,
        images_per_s=examples / train_s,
        projected_run_s=projected_run_seconds(
            length, train_s, counts, clean_cost, full_cost, final_s or 0.0
        ),
        projected_run_every_epoch_s=projected_run_seconds(
            length, train_s, (0, length), clean_cost, full_cost, final_s or 0.0
        ),
        std_overall=final.get("std_overall"),
        rob_overall=final.get("rob_overall"),
        start_s=first_seen - train[0] - evals[0] - launched,
        end_s=last_seen - launched,
    )


def _pack(
    k: int,
    runs: list[RunTiming],
    flops: float,
    steps: int,
    peak: float | None,
    column_runs: int,
) -> PackResult:
    steady = aggregate_images_per_s([r.examples for r in runs], [r.train_s for r in runs])
    start, end = min(r.start_s for r in runs), max(r.end_s for r in runs)
    trained = sum(r.examples * len(r.train_seconds) for r in runs)
    wall = wall_images_per_s(trained, start, end)
    tflops, tflops_wall = model_tflops(steady, flops, steps), model_tflops(wall, flops, steps)
    run_s = max(r.projected_run_s for r in runs)
    return PackResult(
        per_device=k,
        runs=runs,
        images_per_s=steady,
        wall_s=end - start,
        images_per_s_wall=wall,
        tflops=tflops,
        tflops_wall=tflops_wall,
        peak_share=None if peak is None else peak_share(tflops, peak),
        peak_share_wall=None if peak is None else peak_share(tflops_wall, peak),
        speedup=None,  # set once the study's K = 1 is known
        speedup_wall=None,
        projected_run_s=run_s,
        projected_run_every_epoch_s=max(r.projected_run_every_epoch_s for r in runs),
        waves=math.ceil(column_runs / k),
        projected_column_s=column_seconds(column_runs, k, run_s),
    )
