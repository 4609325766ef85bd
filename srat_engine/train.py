"""The training loop: SRAT's Algorithm 1, which every method of the paper specialises.

Per mini-batch: generate PGD adversarial examples (Line 5/14), then minimise
    (1/N) sum_i w_i L(f(x'_i), y_i) + lambda * L_sep(x')            (Eq. 7)
with w_i = 1 before the reweighting epoch T_d and class-balanced weights from T_d on (DRCB,
SRAT), from epoch 0 (CB), or GAIRAT's geometry weights; lambda = 0 for non-SRAT methods and no
attack for natural training. Data stay on the device as uint8; crop/flip is drawn per sample
there; the only host syncs are once per epoch.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import psutil
import torch
import torch.nn.functional as F

from srat_engine.analysis.separability import feature_separability
from srat_engine.attacks import PGDResult, attack_mode, pgd_linf
from srat_engine.checkpoint import load_checkpoint, save_checkpoint
from srat_engine.config import RunConfig, TrainConfig, validate_config
from srat_engine.data import balanced_subset_indices, imbalanced_indices, load_splits
from srat_engine.data.augment import random_crop_flip
from srat_engine.errors import SratError
from srat_engine.evaluate import AttackParams, class_totals, classwise_correct, to_inputs
from srat_engine.losses import (
    focal_loss,
    gair_weights,
    ldam_loss,
    separation_loss,
    weighted_mean,
)
from srat_engine.metrics import aggregate, per_class_accuracy
from srat_engine.models import SratModel, build_model
from srat_engine.models.fold import BatchNormFoldedView
from srat_engine.resolve import Resolved
from srat_engine.rundir import RunDir, now_iso
from srat_engine.schedule import gair_active, learning_rate, reweighting_active
from srat_engine.step_graph import GraphedTrainStep

EventHandler = Callable[[dict[str, Any]], None]


class RunInterrupted(Exception):
    """SIGTERM/SIGINT reached a running run: it stops and records `killed`."""


@dataclass
class DeviceData:
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    robust_x: torch.Tensor  # balanced subset of the test set for per-epoch robust accuracy
    robust_y: torch.Tensor
    clip: tuple[float, float] | None


def pick_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SratError(f"device {requested} requested but CUDA is not available here")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise SratError(f"{requested}: only {torch.cuda.device_count()} CUDA device(s)")
    return device


def load_device_data(config: RunConfig, resolved: Resolved, device: torch.device) -> DeviceData:
    from pathlib import Path

    splits = load_splits(
        config.data.dataset,
        Path(resolved.data_root),
        download=config.data.download,
        **config.data.options,
    )
    chosen = imbalanced_indices(splits.train_y, resolved.class_counts, seed=config.seed)
    subset = balanced_subset_indices(splits.test_y, config.eval.robust_per_class, seed=0)
    return DeviceData(
        train_x=splits.train_x[chosen].to(device),
        train_y=splits.train_y[chosen].to(device),
        test_x=splits.test_x.to(device),
        test_y=splits.test_y.to(device),
        robust_x=splits.test_x[subset].to(device),
        robust_y=splits.test_y[subset].to(device),
        clip=splits.clip,
    )


def per_sample_loss(
    config: RunConfig, margins: torch.Tensor | None
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The prediction loss L of Eq. 5, unreduced."""
    loss = config.spec.loss
    if loss == "focal":
        return lambda logits, y: focal_loss(logits, y, config.loss.focal_gamma)
    if loss == "ldam":
        assert margins is not None
        return lambda logits, y: ldam_loss(logits, y, margins, config.loss.ldam_scale)
    return lambda logits, y: F.cross_entropy(logits, y, reduction="none")


def _augment(x: torch.Tensor, config: RunConfig, generator: torch.Generator) -> torch.Tensor:
    mode = config.data.augment
    if mode == "none" or x.dim() != 4:
        return x
    pad = config.data.pad if mode in {"crop", "crop_flip"} else 0
    return random_crop_flip(x, pad=pad, flip=mode in {"flip", "crop_flip"}, generator=generator)


def resolve_precision(requested: str, device: torch.device) -> str:
    """The autocast dtype name actually used: ``auto`` is bf16 on CUDA GPUs with bf16 support.

    bf16 keeps fp32's exponent range, so the attack's input gradients do not underflow to zero
    the way fp16's can (sign(0) = 0 would weaken the attack); see README "Performance" for the
    recorded bf16-vs-fp32 robust accuracy check. Evaluation never autocasts.
    """
    if requested != "auto":
        return requested
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def resolve_channels_last(requested: str, device: torch.device, model: torch.nn.Module) -> bool:
    """NHWC for 2-d conv nets: cuDNN's tensor-core kernels want it on CUDA, and oneDNN on CPU
    ran the ResNet-18 and small-CNN PGD-AT steps faster with it (README "Performance");
    ``auto`` leaves other devices (mps) and models without Conv2d alone."""
    convolutional = any(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    if requested == "off" or not convolutional:
        return False
    return requested == "on" or device.type in {"cuda", "cpu"}


class TrainStep:
    """One mini-batch of Algorithm 1 on device-resident data: augment, attack, update.

    Built once per run; the epoch loop passes the epoch's class weights, GAIR switch and
    separation weight lambda. Every quantity is accumulated into a device tensor, so a step
    never waits for the device (no ``.item()``, no data-dependent Python branch). The fast-path
    choices here change speed, not the maths: the attack takes input-only gradients with
    frozen parameters (``pgd_linf`` + ``attack_mode``), bf16 autocast when configured,
    channels_last memory format, and optional ``torch.compile`` of the two forward passes.
    """

    def __init__(
        self,
        model: SratModel,
        optimizer: torch.optim.Optimizer,
        config: RunConfig,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        *,
        generator: torch.Generator,
        clip: tuple[float, float] | None,
        device: torch.device,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.config = config
        self.loss_fn = loss_fn
        self.generator = generator
        self.clip = clip
        self.device = device
        self.adversarial = config.spec.adversarial and config.attack.steps > 0
        self.precision = resolve_precision(config.train.precision, device)
        self.channels_last = resolve_channels_last(config.train.channels_last, device, model)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        if device.type == "cuda":
            # input shapes are fixed within a run: let cuDNN pick its fastest kernels once
            torch.backends.cudnn.benchmark = True
        self.folded: BatchNormFoldedView | None = None
        if self.adversarial and config.train.fold_bn and config.attack.bn_mode == "eval":
            view = BatchNormFoldedView(model)
            self.folded = view if view.folded else None
        self.attack_forward: torch.nn.Module = self.folded or model
        self.update_forward: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
        self.update_forward = self._features_and_logits
        mode = config.train.compile
        if mode != "off":
            # the model itself stays uncompiled, so checkpoints keep their plain keys; the
            # attack's graphs see frozen parameters and need no weight gradients. A run has two
            # batch shapes at most (full, last partial): static kernels for each, never
            # dynamic-shape ones
            inductor_mode = None if mode == "default" else mode
            self.attack_forward = torch.compile(
                self.attack_forward, mode=inductor_mode, dynamic=False
            )
            self.update_forward = torch.compile(
                self._features_and_logits, mode=inductor_mode, dynamic=False
            )

    def _features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.model.features(x)
        return features, self.model.head(features)

    def autocast(self) -> Any:
        if self.precision == "bf16":
            # no cast cache: a CUDA graph capture cannot hold one (the casts are re-done per
            # forward, a few MB each, against a step of hundreds of MB)
            return torch.autocast(self.device.type, dtype=torch.bfloat16, cache_enabled=False)
        return nullcontext()

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Raw (uint8) batch -> augmented float inputs in the step's memory format."""
        xb = to_inputs(_augment(x, self.config, self.generator))
        if self.channels_last and xb.dim() == 4:
            xb = xb.contiguous(memory_format=torch.channels_last)
        return xb

    def attack(self, xb: torch.Tensor, y: torch.Tensor) -> PGDResult:
        """The training attack (Algorithm 1, line 5) on augmented float inputs ``xb``."""
        config = self.config
        if self.folded is not None:
            self.folded.refresh()  # the last update moved weights and BN statistics
        with attack_mode(self.model, config.attack.bn_mode), self.autocast():
            return pgd_linf(
                self.attack_forward,
                xb,
                y,
                eps=config.attack.eps,
                step_size=config.attack.step_size,
                steps=config.attack.steps,
                random_start=config.attack.random_start,
                generator=self.generator,
                clip=self.clip,
            )

    def __call__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        class_w: torch.Tensor | None = None,
        use_gair: bool = False,
        lam: float = 0.0,
        sums: torch.Tensor | None = None,
    ) -> None:
        """Train on raw batch ``x`` (uint8 images or float vectors) with labels ``y``.

        ``sums`` (4 floats on the device), when given, accumulates the batch's total loss x N,
        separation loss x N, adversarial hits and a non-finite-loss flag.
        """
        config = self.config
        xb = self.inputs(x)
        kappa = None
        if self.adversarial:
            result = self.attack(xb, y)
            xb, kappa = result.x_adv, result.kappa
        with self.autocast():
            features, logits = self.update_forward(xb)
            per_sample = self.loss_fn(logits.float(), y)
            weights = class_w[y] if class_w is not None else None
            if use_gair and kappa is not None:
                geometry = gair_weights(
                    kappa, config.attack.steps, config.gair.lam, config.gair.func
                )
                weights = geometry if weights is None else weights * geometry
            loss = weighted_mean(per_sample, weights, config.loss.reduction)
            sep = separation_loss(features.float(), y, config.loss.sep_tau) if lam else None
            total = loss + lam * sep if sep is not None else loss
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        if sums is not None:
            with torch.no_grad():
                sums[0] += total.detach() * len(y)
                if sep is not None:
                    sums[1] += sep.detach() * len(y)
                sums[2] += (logits.argmax(1) == y).sum()
                sums[3] += (~torch.isfinite(total.detach())).float()


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


@contextmanager
def _stop_on_signals() -> Iterator[None]:
    """Turn SIGTERM/SIGINT into RunInterrupted so the run records how it ended."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: object) -> None:
        raise RunInterrupted(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class Trainer:
    """One run, from its run directory to its last metrics line."""

    def __init__(self, run: RunDir, device: torch.device, on_event: EventHandler | None = None):
        doc = run.config()
        self.run = run
        self.config = validate_config(doc["config"])
        resolved = dict(doc["resolved"])
        resolved["input_shape"] = tuple(resolved["input_shape"])
        self.resolved = Resolved(**resolved)
        self.device = device
        self.on_event = on_event or (lambda _record: None)
        self.spec = self.config.spec

    # -- setup -------------------------------------------------------------------------------
    def _build(self) -> None:
        config, resolved, device = self.config, self.resolved, self.device
        self.data = load_device_data(config, resolved, device)
        torch.manual_seed(config.seed)
        self.model = build_model(
            config.model.arch,
            resolved.num_classes,
            resolved.input_shape,
            head=resolved.head,
            cosine_scale=config.loss.ldam_scale,
        ).to(device)
        self.optimizer = torch.optim.SGD(
            self.model.parameters(),
            lr=config.train.lr,
            momentum=config.train.momentum,
            weight_decay=config.train.weight_decay,
        )
        self.generator = torch.Generator(device=device).manual_seed(config.seed)
        margins = resolved.ldam_margins
        self.margins = torch.tensor(margins, device=device) if margins is not None else None
        self.class_weights = torch.tensor(resolved.class_weights, device=device)
        self.loss_fn = per_sample_loss(config, self.margins)
        step = TrainStep(
            self.model,
            self.optimizer,
            config,
            self.loss_fn,
            generator=self.generator,
            clip=self.data.clip,
            device=device,
        )
        self.step = graphed_step(step, on_fallback=self.run.log)
        self.run.log(
            f"fast path: {step.precision} training attacks and updates (evaluation fp32), "
            f"channels_last {'on' if step.channels_last else 'off'}, "
            f"{step.folded.folded if step.folded else 0} BatchNorm(s) folded into the "
            f"attack's convolutions, compile {config.train.compile}, CUDA graphs "
            f"{'on' if isinstance(self.step, GraphedTrainStep) else 'off'}"
        )
        self.start_epoch = 0

    def _checkpoint_state(self, epochs_done: int) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": epochs_done,
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
        }

    def _restore(self) -> None:
        if not self.run.checkpoint_path.exists():
            self.run.log("no checkpoint yet: starting from epoch 1")
            return
        state = load_checkpoint(self.run.checkpoint_path, map_location=self.device)
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.generator.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            self.start_epoch = int(state["epoch"])
        except (KeyError, RuntimeError, ValueError, TypeError) as err:
            raise SratError(f"checkpoint {self.run.checkpoint_path} does not fit: {err}") from None

    # -- one epoch ---------------------------------------------------------------------------
    def _train_epoch(self, epoch: int) -> dict[str, float]:
        config, data, model = self.config, self.data, self.model
        lr = learning_rate(epoch, config, self.resolved)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        class_w = self.class_weights if reweighting_active(epoch, self.resolved) else None
        use_gair = gair_active(epoch, self.resolved)
        lam = config.loss.sep_lambda if self.spec.separation else 0.0
        n = len(data.train_y)
        order = torch.randperm(n, generator=self.generator, device=self.device)
        sums = torch.zeros(4, device=self.device)  # loss, sep loss, adversarial hits, finite
        model.train()
        for batch in order.split(config.train.batch_size):
            self.step(
                data.train_x[batch],
                data.train_y[batch],
                class_w=class_w,
                use_gair=use_gair,
                lam=lam,
                sums=sums,
            )
        loss_sum, sep_sum, hits, non_finite = sums.tolist()
        if non_finite or not math.isfinite(loss_sum):
            raise SratError(
                f"training loss became nan/inf in epoch {epoch + 1} (lr {lr:g}); "
                "the run stopped: try a lower train.lr or check the data"
            )
        return {
            "lr": lr,
            "loss": loss_sum / n,
            "sep_loss": sep_sum / n if lam else None,
            "train_acc": 100.0 * hits / n,
            "reweighting": class_w is not None,
            "gair": use_gair,
        }

    def _evaluate(self, x: torch.Tensor, y: torch.Tensor, robust: bool) -> dict[str, Any]:
        config, resolved = self.config, self.resolved
        attack = None
        if robust:
            attack = AttackParams(config.eval.eps, config.eval.step_size, config.eval.steps)
        # the clean pass also yields the penultimate features for separability: no extra pass
        features: list[torch.Tensor] | None = None if robust else []
        correct = classwise_correct(
            self.model,
            x,
            y,
            resolved.num_classes,
            batch_size=config.eval.batch_size,
            attack=attack,
            clip=self.data.clip,
            seed=config.seed + 1,
            features_into=features,
        ).tolist()
        total = class_totals(y, resolved.num_classes)
        result = {
            "class": per_class_accuracy(correct, total),
            **aggregate(correct, total, resolved.under_classes),
            "n": sum(total),
        }
        if features is not None:
            # penultimate-feature separability (analysis/separability.py) of the same test set,
            # tracked per epoch beside the accuracies
            separability = feature_separability(torch.cat(features), y)
            result["separability"] = separability if math.isfinite(separability) else None
        return result

    def _columns(self, std: dict[str, Any], rob: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "std_overall": std["overall"],
            "std_under": std["under"],
            "std_class": std["class"],
            "separability": std.get("separability"),
            "rob_overall": rob["overall"] if rob else None,
            "rob_under": rob["under"] if rob else None,
            "rob_class": rob["class"] if rob else None,
            "rob_n": rob["n"] if rob else None,
        }

    def _emit(self, record: dict[str, Any]) -> None:
        self.run.append_metrics(record)
        self.on_event(record)

    # -- the run -----------------------------------------------------------------------------
    def train(self, resume: bool = False) -> dict[str, Any]:
        self._build()
        if resume:
            self._restore()
            self._emit({"event": "resume", "from_epoch": self.start_epoch, "time": now_iso()})
        epochs = self.config.train.epochs
        data = self.data
        for epoch in range(self.start_epoch, epochs):
            started = time.perf_counter()
            stats = self._train_epoch(epoch)
            trained = time.perf_counter()
            std = self._evaluate(data.test_x, data.test_y, robust=False)
            rob = None
            due = (epoch + 1) % self.config.eval.robust_every == 0 or epoch + 1 == epochs
            if due and self.robust_eval_enabled:
                rob = self._evaluate(data.robust_x, data.robust_y, robust=True)
            done = time.perf_counter()
            record = {
                "event": "epoch",
                "epoch": epoch + 1,
                "epochs": epochs,
                **stats,
                **self._columns(std, rob),
                "train_seconds": trained - started,
                "eval_seconds": done - trained,
                "time": now_iso(),
            }
            if (epoch + 1) % self.config.train.checkpoint_every == 0 or epoch + 1 == epochs:
                save_checkpoint(self.run.checkpoint_path, self._checkpoint_state(epoch + 1))
            self.run.write_state(epoch=epoch + 1, epochs=epochs)
            self._emit(record)
        final_std = self._evaluate(data.test_x, data.test_y, robust=False)
        final_rob = None
        if self.robust_eval_enabled:
            final_rob = self._evaluate(data.test_x, data.test_y, robust=True)
        final = {"event": "final", **self._columns(final_std, final_rob), "time": now_iso()}
        self._emit(final)
        return final

    @property
    def robust_eval_enabled(self) -> bool:
        return self.config.eval.steps > 0 and self.config.eval.eps > 0


def execute(
    run: RunDir,
    *,
    device: str | None = None,
    resume: bool = False,
    on_event: EventHandler | None = None,
) -> dict[str, Any]:
    """Train a created run in this process, recording state and exit in its directory."""
    config = validate_config(run.config()["config"])
    torch_device = pick_device(device or config.device)
    pid = os.getpid()
    run.clear_exit()
    run.write_state(
        status="running",
        pid=pid,
        pid_start=psutil.Process(pid).create_time(),
        host=socket.gethostname(),
        device=str(torch_device),
        started=now_iso(),
    )
    run.log(f"{'resumed' if resume else 'started'} on {torch_device} (pid {pid})")
    try:
        with _stop_on_signals():
            final = Trainer(run, torch_device, on_event).train(resume=resume)
    except RunInterrupted as stop:
        run.write_state(status="killed")
        run.write_exit({"status": "killed", "error": f"stopped by {stop}"})
        run.log(f"killed by {stop}")
        raise
    except SratError as err:
        run.write_state(status="failed")
        run.write_exit({"status": "failed", "error": str(err)})
        run.log(f"failed: {err}")
        raise
    except Exception as err:
        message = f"{type(err).__name__}: {err}"
        run.write_state(status="failed")
        run.write_exit({"status": "failed", "error": message})
        run.log(f"failed: {message}")
        raise
    run.write_state(status="finished")
    run.write_exit({"status": "finished", "final": final})
    run.log("finished")
    return final
