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
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import torch

from srat_engine.config.resolve import Resolved
from srat_engine.config.schema import validate_config
from srat_engine.config.workload import evaluation_due
from srat_engine.data.resident import load_device_data
from srat_engine.errors import (
    STOP_SIGNALS,
    RunInterrupted,
    RunPreempted,
    SratError,
    failure_message,
    raise_interrupted,
)
from srat_engine.evaluation.classwise import (
    AttackParams,
    class_totals,
    count_correct,
    evaluation_mode,
    feature_hits,
    pgd_hits,
)
from srat_engine.evaluation.graphs import GraphedHits
from srat_engine.evaluation.metrics import aggregate, per_class_accuracy
from srat_engine.evaluation.separability import feature_separability
from srat_engine.losses.logit_adjustment import class_log_prior
from srat_engine.losses.reat import reat_inner_weights
from srat_engine.models import build_model
from srat_engine.models.posthoc import posthoc_view
from srat_engine.runs.heartbeat import Heartbeat
from srat_engine.runs.index import RunIndex
from srat_engine.runs.liveness import HEARTBEAT_S, process_start
from srat_engine.runs.records import best_epoch, epoch_summary
from srat_engine.runs.rundir import RunDir, now_iso
from srat_engine.runs.sync import record_in_index
from srat_engine.tf32 import strict_fp32
from srat_engine.training.checkpoint import load_checkpoint, save_checkpoint
from srat_engine.training.device import pick_device
from srat_engine.training.graphs import GraphedTrainStep, graphed_step
from srat_engine.training.schedule import (
    attack_budgets,
    awp_active,
    gair_active,
    learning_rate,
    natural_stage,
    reweighting_active,
)
from srat_engine.training.step import TrainStep, per_sample_loss, robal_options

EventHandler = Callable[[dict[str, Any]], None]


@contextmanager
def beating(run: RunDir, interval: float | None) -> Iterator[None]:
    """A Heartbeat for the body, or nothing when `interval` is None."""
    if interval is None:
        yield
        return
    with Heartbeat(run, interval):
        yield


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGTERM/SIGINT, and SIGHUP unless it is ignored, into RunInterrupted for the body
    (main thread only).

    A foreground run whose terminal closes gets SIGHUP, which would end it unrecorded; the
    detached worker ignores SIGHUP (it must outlive the terminal) and so does a run under
    `nohup`, and they keep ignoring it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stops = STOP_SIGNALS
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        stops = (*stops, signal.SIGHUP)
    previous = {sig: signal.signal(sig, raise_interrupted) for sig in stops}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@dataclass
class _EpochPosition:
    """Where an epoch in progress stands: its permutation of the training set, the batches of
    it already trained, and what those batches added to the epoch's sums (and, for REAT, to
    its counts of adversarial predictions per class)."""

    order: torch.Tensor
    batch: int
    sums: torch.Tensor
    pred_counts: torch.Tensor | None = None


@dataclass
class EpochPlan:
    """What every step of an epoch trains with (`Trainer.plan_epoch`), and where it is."""

    epoch: int
    lr: float
    class_w: torch.Tensor | None
    use_gair: bool
    lam: float
    awp: bool
    natural: bool
    position: _EpochPosition
    batches: tuple[torch.Tensor, ...]


# the inputs and labels one evaluation pass runs on; None: the pass is not due
EvaluationSet = tuple[torch.Tensor, torch.Tensor] | None


@dataclass(frozen=True)
class Evaluation:
    """What one evaluation measured: standard and robust accuracy (`Trainer.summarize`'s
    results; None for a pass not run) and its seconds."""

    std: dict[str, Any] | None
    rob: dict[str, Any] | None
    seconds: float


class Trainer:
    """One run, from its run directory to its last metrics line.

    With `checkpoint_request`, an event another thread sets (the Slurm job's signal handler),
    training stops at the next safe point once it is set: after a training batch, or after an
    epoch's record and checkpoint. It saves a checkpoint of that exact position and raises
    RunPreempted; a resume continues from there to the results of an uninterrupted run.
    """

    def __init__(
        self,
        run: RunDir,
        device: torch.device,
        on_event: EventHandler | None = None,
        checkpoint_request: threading.Event | None = None,
    ):
        doc = run.config()
        self.run = run
        self.config = validate_config(doc["config"])
        resolved = dict(doc["resolved"])
        resolved["input_shape"] = tuple(resolved["input_shape"])
        self.resolved = Resolved(**resolved)
        self.device = device
        self.on_event = on_event or (lambda _record: None)
        self.checkpoint_request = checkpoint_request
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
            robal=robal_options(config, resolved.class_counts),
        ).to(device)
        self.optimizer = torch.optim.SGD(
            self.model.parameters(),
            lr=config.train.lr,
            momentum=config.train.momentum,
            weight_decay=config.train.weight_decay,
        )
        self.generator = torch.Generator(device=device).manual_seed(config.seed)
        # LDAM's or RoBal's per-class margins (a method has one loss)
        margins = resolved.ldam_margins or resolved.robal_margins
        self.margins = torch.tensor(margins, device=device) if margins is not None else None
        self.class_weights = torch.tensor(resolved.class_weights, device=device)
        log_prior = class_log_prior(resolved.class_counts).to(device)
        self.loss_fn = per_sample_loss(config, self.margins, log_prior)
        # what every evaluation pass reads (eval.posthoc_tau); training uses self.model
        self.eval_model = posthoc_view(self.model, log_prior, config.eval.posthoc_tau)
        # the per-epoch and final robust evaluation's attack, replayed as CUDA graphs on CUDA
        robust_attack = AttackParams(config.eval.eps, config.eval.step_size, config.eval.steps)
        self.robust_hits = GraphedHits(
            pgd_hits(self.eval_model, robust_attack, self.data.clip),
            device,
            capture=config.eval.cuda_graphs,
            on_fallback=self.run.log,
        )
        step = TrainStep(
            self.model,
            self.optimizer,
            config,
            self.loss_fn,
            generator=self.generator,
            clip=self.data.clip,
            device=device,
            class_counts=resolved.class_counts,
        )
        self.train_step = step  # the eager step, whose class-wise budgets each epoch sets
        self.step = graphed_step(step, on_fallback=self.run.log)
        self.run.log(
            f"fast path: {step.precision} training attacks and updates (evaluation fp32), "
            f"channels_last {'on' if step.channels_last else 'off'}, "
            f"{step.folded.folded if step.folded else 0} BatchNorm(s) folded into the "
            f"attack's convolutions, compile {config.train.compile}, CUDA graphs "
            f"{'on' if isinstance(self.step, GraphedTrainStep) else 'off'} for training, "
            f"{'on' if self.robust_hits.graphs.enabled else 'off'} for robust evaluation"
        )
        self.start_epoch = 0
        # set by a resume from a checkpoint taken mid-epoch: the next epoch continues it
        self.position: _EpochPosition | None = None
        # the epoch record whose weights best.pt holds (train.keep_best)
        self.best_record: dict[str, Any] | None = None
        # REAT: the counts m_c of adversarial predictions per class that the next epoch's (or
        # the current one's) attack weights come from; the reference starts from m = n
        self.reat_m: list[int] = list(resolved.class_counts)

    def _checkpoint_state(
        self, epochs_done: int, position: _EpochPosition | None = None
    ) -> dict[str, Any]:
        state: dict[str, Any] = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": epochs_done,
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
        }
        if position is not None:
            # the generator has already drawn this epoch's order and the done batches' crops
            # and attack starts: the order itself and the partial sums must travel with it
            state.update(batch=position.batch, order=position.order, sums=position.sums)
        state.update(self._reat_state(position))
        return state

    def _reat_state(self, position: _EpochPosition | None) -> dict[str, torch.Tensor]:
        """REAT's per-epoch state for a checkpoint (tensors only): the m its attack weights
        come from and, mid-epoch, the done batches' counts of adversarial predictions."""
        if not self.train_step.reat:
            return {}
        state = {"reat_m": torch.tensor(self.reat_m, dtype=torch.int64)}
        counts = self.train_step.reat_pred_counts
        if position is not None and counts is not None:
            state["reat_pred_counts"] = counts.detach().clone()
        return state

    def _restore_reat(self, state: dict[str, Any]) -> None:
        """REAT's per-epoch state from a checkpoint, checked against this run's classes."""
        classes = len(self.resolved.class_counts)
        names = ["reat_m", *(["reat_pred_counts"] if self.position is not None else [])]
        for name in names:
            value = state[name]
            if (
                not isinstance(value, torch.Tensor)
                or value.shape != (classes,)
                or value.is_floating_point()
                or bool((value < 0).any())
            ):
                raise ValueError(f"its {name} are not {classes} counts")
        self.reat_m = [int(m) for m in state["reat_m"].tolist()]
        if self.position is not None:
            self.position.pred_counts = state["reat_pred_counts"].to(self.device)

    def checkpoint_requested(self) -> bool:
        return self.checkpoint_request is not None and self.checkpoint_request.is_set()

    def _preempt(self, epochs_done: int, position: _EpochPosition | None) -> RunPreempted:
        """Save the checkpoint of this exact position; the RunPreempted to raise."""
        save_checkpoint(self.run.checkpoint_path, self._checkpoint_state(epochs_done, position))
        return RunPreempted(epochs_done, position.batch if position is not None else 0)

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
            # a checkpoint from an epoch boundary (every one before checkpoint requests) has no
            # position: the next epoch starts afresh
            if int(state.get("batch", 0)):
                self.position = self._restored_position(state)
            if self.train_step.reat:
                self._restore_reat(state)
        except (KeyError, RuntimeError, ValueError, TypeError) as err:
            raise SratError(f"checkpoint {self.run.checkpoint_path} does not fit: {err}") from None

    def _restored_position(self, state: dict[str, Any]) -> _EpochPosition:
        """The mid-epoch position a checkpoint holds, checked against this run."""
        order, sums, batch = state["order"], state["sums"], int(state["batch"])
        n = len(self.data.train_y)
        batches = math.ceil(n / self.config.train.batch_size)
        if not isinstance(order, torch.Tensor) or order.shape != (n,) or order.is_floating_point():
            raise ValueError(f"its epoch order is not an order of the {n} training examples")
        if not isinstance(sums, torch.Tensor) or sums.shape != (4,):
            raise ValueError("its epoch sums are not 4 numbers")
        if not 0 < batch <= batches or self.start_epoch >= self.config.train.epochs:
            raise ValueError(
                f"batch {batch} of epoch {self.start_epoch + 1} is not in this run "
                f"({self.config.train.epochs} epochs of {batches} batches)"
            )
        return _EpochPosition(order.to(self.device), batch, sums.to(self.device))

    # -- one epoch ---------------------------------------------------------------------------
    def plan_epoch(self, epoch: int) -> EpochPlan:
        """Set the epoch's learning rate, attack budgets and REAT weights; its plan: what
        every step of it trains with, and where it starts (a resumed position, or a new
        permutation from the run's generator)."""
        config, data = self.config, self.data
        lr = learning_rate(epoch, config, self.resolved)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        budgets = attack_budgets(epoch, config, self.resolved)
        if budgets is not None:
            self.train_step.set_class_budgets(*budgets)
        n = len(data.train_y)
        position, self.position = self.position, None
        if position is None:
            order = torch.randperm(n, generator=self.generator, device=self.device)
            sums = torch.zeros(4, device=self.device)  # loss, sep loss, adversarial hits, finite
            position = _EpochPosition(order, 0, sums)
        if self.train_step.reat:
            # RBL weights from the previous epoch's counts; this epoch's count from 0, or on
            # from a checkpointed position's
            inner_w = reat_inner_weights(self.resolved.class_counts, self.reat_m)
            self.train_step.set_reat_state(inner_w, position.pred_counts)
        self.model.train()
        return EpochPlan(
            epoch=epoch,
            lr=lr,
            class_w=self.class_weights if reweighting_active(epoch, self.resolved) else None,
            use_gair=gair_active(epoch, self.resolved),
            lam=config.loss.sep_lambda if self.spec.separation else 0.0,
            awp=awp_active(epoch, self.resolved),
            natural=natural_stage(epoch, self.resolved),
            position=position,
            batches=position.order.split(config.train.batch_size),
        )

    def train_batch(self, plan: EpochPlan, index: int) -> None:
        batch = plan.batches[index]
        self.step(
            self.data.train_x[batch],
            self.data.train_y[batch],
            class_w=plan.class_w,
            use_gair=plan.use_gair,
            lam=plan.lam,
            awp=plan.awp,
            natural_stage=plan.natural,
            sums=plan.position.sums,
        )

    def preempt_if_requested(self, plan: EpochPlan, index: int) -> None:
        """After batch `index`: on a checkpoint request, checkpoint this position and raise
        RunPreempted (checked after the last batch too: before the epoch's evaluation)."""
        if self.checkpoint_requested():
            raise self.checkpoint_mid_epoch(plan, index)

    def checkpoint_mid_epoch(self, plan: EpochPlan, index: int) -> RunPreempted:
        """Checkpoint the position after batch `index` of `plan`'s epoch (SratError instead if
        its loss is not finite: a nan is never checkpointed); the RunPreempted to raise."""
        plan.position.batch = index + 1
        self._check_finite(plan.position.sums, plan.epoch, plan.lr)
        return self._preempt(plan.epoch, plan.position)

    def checkpoints_after(self, epoch: int) -> bool:
        """Whether epoch `epoch` (0-based) ends with a checkpoint: every
        ``train.checkpoint_every`` epochs, and the last."""
        done = epoch + 1
        return done % self.config.train.checkpoint_every == 0 or done == self.config.train.epochs

    def checkpoint_epoch_end(self, epoch: int) -> RunPreempted:
        """After epoch `epoch`'s record: its checkpoint (saved already where
        `checkpoints_after` says so); the RunPreempted to raise."""
        if self.checkpoints_after(epoch):
            return RunPreempted(epoch + 1, 0)
        return self._preempt(epoch + 1, None)

    def end_epoch(self, plan: EpochPlan) -> dict[str, Any]:
        """The epoch's training columns, once its last batch has trained (SratError when its
        loss was not finite)."""
        n = len(self.data.train_y)
        loss_sum, sep_sum, hits, _ = self._check_finite(plan.position.sums, plan.epoch, plan.lr)
        if self.train_step.reat and self.train_step.reat_pred_counts is not None:
            # the epoch boundary: this epoch's counts weight the next epoch's attacks
            self.reat_m = [int(m) for m in self.train_step.reat_pred_counts.tolist()]
        return {
            "lr": plan.lr,
            "loss": loss_sum / n,
            "sep_loss": sep_sum / n if plan.lam else None,
            "train_acc": 100.0 * hits / n,
            "reweighting": plan.class_w is not None,
            "gair": plan.use_gair,
            "awp": plan.awp,
            "natural_stage": plan.natural,
        }

    def _train_epoch(self, epoch: int) -> dict[str, Any]:
        plan = self.plan_epoch(epoch)
        for index in range(plan.position.batch, len(plan.batches)):
            self.train_batch(plan, index)
            self.preempt_if_requested(plan, index)
        return self.end_epoch(plan)

    @staticmethod
    def _check_finite(sums: torch.Tensor, epoch: int, lr: float) -> list[float]:
        """The epoch's sums on the host, or SratError when the training loss is not finite."""
        values = sums.tolist()
        if values[3] or not math.isfinite(values[0]):
            raise SratError(
                f"training loss became nan/inf in epoch {epoch + 1} (lr {lr:g}); "
                "the run stopped: try a lower train.lr or check the data"
            )
        return values

    @property
    def evaluation_seed(self) -> int:
        """What every evaluation's attack generator is seeded with (`count_correct`)."""
        return self.config.seed + 1

    def _evaluate(self, x: torch.Tensor, y: torch.Tensor, robust: bool) -> dict[str, Any]:
        config = self.config
        # the clean pass also yields the penultimate features for separability: no extra pass
        features: list[torch.Tensor] = []
        if robust:
            hits, generator = self.robust_hits, self.robust_hits.generator
        else:
            hits, generator = feature_hits(self.eval_model, features), None
        with strict_fp32(), evaluation_mode(self.eval_model):
            correct = count_correct(
                x,
                y,
                self.resolved.num_classes,
                batch_size=config.eval.batch_size,
                hits=hits,
                seed=self.evaluation_seed,
                generator=generator,
            ).tolist()
        return self.summarize(correct, y, None if robust else features)

    def summarize(
        self, correct: list[int], y: torch.Tensor, features: list[torch.Tensor] | None
    ) -> dict[str, Any]:
        """One pass's result from its correct predictions per class: class-wise, overall and
        under-represented accuracy, and, with the clean pass's `features`, separability."""
        resolved = self.resolved
        total = class_totals(y, resolved.num_classes)
        result = {
            "class": per_class_accuracy(correct, total),
            **aggregate(correct, total, resolved.under_classes),
            "n": sum(total),
        }
        if features is not None:
            # penultimate-feature separability (evaluation/separability.py) of the same test set,
            # tracked per epoch beside the accuracies
            separability = feature_separability(torch.cat(features), y, resolved.num_classes)
            result["separability"] = separability if math.isfinite(separability) else None
        return result

    def evaluation_sets(self, epoch: int | None) -> tuple[EvaluationSet, EvaluationSet]:
        """The (inputs, labels) of the standard and the robust pass that end epoch `epoch`
        (0-based), None for a pass not due: the test set and the balanced robust subset, as
        ``eval.every`` and ``eval.robust_every`` say (`config.workload.evaluation_due`); with
        `epoch` None the final evaluation, both passes on the whole test set. The one rule for
        a run's evaluations, alone or stacked."""
        data = self.data
        test = (data.test_x, data.test_y)
        if epoch is None:
            return test, test if self.robust_eval_enabled else None
        standard, robust = evaluation_due(epoch + 1, self.config.train.epochs, self.config.eval)
        subset = (data.robust_x, data.robust_y)
        return test if standard else None, subset if robust and self.robust_eval_enabled else None

    def evaluate(self, epoch: int | None) -> Evaluation:
        """The evaluation that ends epoch `epoch` (0-based; None: the final one): the passes
        `evaluation_sets` names, timed."""
        started = time.perf_counter()
        standard, robust = self.evaluation_sets(epoch)
        std = self._evaluate(*standard, robust=False) if standard else None
        rob = self._evaluate(*robust, robust=True) if robust else None
        return Evaluation(std, rob, time.perf_counter() - started)

    def _columns(self, std: dict[str, Any] | None, rob: dict[str, Any] | None) -> dict[str, Any]:
        """The record's measurement columns; None for what this epoch did not measure."""
        return {
            "std_overall": std["overall"] if std else None,
            "std_under": std["under"] if std else None,
            "std_class": std["class"] if std else None,
            "separability": std.get("separability") if std else None,
            "rob_overall": rob["overall"] if rob else None,
            "rob_under": rob["under"] if rob else None,
            "rob_class": rob["class"] if rob else None,
            "rob_n": rob["n"] if rob else None,
        }

    def _keep_if_best(self, record: dict[str, Any]) -> None:
        """Save best.pt (model weights and epoch) when `record` is the run's best epoch so far,
        by the one rule of `records.best_epoch` (the earliest of equals)."""
        if not self.config.train.keep_best or record.get("rob_overall") is None:
            return
        if self.best_record is not None and best_epoch([self.best_record, record]) is not record:
            return
        best = {"model": self.model.state_dict(), "epoch": record["epoch"],
                "rob_overall": record["rob_overall"]}  # fmt: skip
        save_checkpoint(self.run.best_checkpoint_path, best)
        self.best_record = record

    def _restore_best(self) -> None:
        """On resume: the best epoch among the records kept, and no best.pt of an epoch the
        resume trains again (saved after its record, before the checkpoint a kill prevented)."""
        self.best_record = best_epoch(self.run.metrics(), self.resolved.num_classes)
        path = self.run.best_checkpoint_path
        if not path.is_file():
            return
        try:
            epoch = load_checkpoint(path).get("epoch")
        except SratError as err:  # the best epoch's copy must not stop training: set aside
            aside = path.with_name(f"best.pt.corrupt-{int(time.time())}")
            path.replace(aside)
            self.run.log(f"{err}; moved to {aside.name}")
            return
        if not isinstance(epoch, int) or epoch > self.start_epoch:
            path.unlink()
            self.run.log(
                f"removed best.pt of epoch {epoch}: after the checkpoint's epoch "
                f"{self.start_epoch}, it is trained again"
            )

    def _emit(self, record: dict[str, Any]) -> None:
        self.run.append_metrics(record)
        self.on_event(record)

    # -- the run -----------------------------------------------------------------------------
    def begin_run(self, resume: bool) -> None:
        """Build the run and, on resume, restore its checkpoint and records."""
        self._build()
        if not resume:
            return
        self._restore()
        # epochs recorded after the checkpoint are trained (and recorded) again
        dropped = self.run.drop_epochs_after(self.start_epoch)
        if dropped:
            self.run.log(
                f"dropped {dropped} epoch record(s) after epoch {self.start_epoch}, the "
                "checkpoint's: they are trained again"
            )
        self._restore_best()
        from_batch = self.position.batch if self.position is not None else 0
        self._emit(
            {
                "event": "resume",
                "from_epoch": self.start_epoch,
                "from_batch": from_batch,
                "time": now_iso(),
            }
        )

    def close_epoch(
        self,
        epoch: int,
        stats: dict[str, Any],
        train_seconds: float,
        evaluation: Evaluation | None = None,
    ) -> None:
        """Evaluate the trained epoch as `eval` says (`evaluate`, unless a stack evaluated
        it: `evaluation`), record it, keep best.pt and the checkpoint; on a checkpoint
        request, RunPreempted."""
        epochs = self.config.train.epochs
        if evaluation is None:
            evaluation = self.evaluate(epoch)
        record = {
            "event": "epoch",
            "epoch": epoch + 1,
            "epochs": epochs,
            **stats,
            **self._columns(evaluation.std, evaluation.rob),
            "train_seconds": train_seconds,
            "eval_seconds": evaluation.seconds,
            "time": now_iso(),
        }
        # Metrics first, then the checkpoint: a checkpoint never runs ahead of the metrics,
        # and a resume drops the records that run ahead of its checkpoint, so a kill at any
        # point of this epoch's end leaves every epoch recorded exactly once after resume.
        self.run.append_metrics(record)
        self._keep_if_best(record)
        if self.checkpoints_after(epoch):
            save_checkpoint(self.run.checkpoint_path, self._checkpoint_state(epoch + 1))
        self.run.write_state(epoch=epoch + 1, epochs=epochs)
        # the log of a detached run (`srat runs logs -f`, the run screen's Log tab) follows it
        self.run.log(epoch_summary(record))
        self.on_event(record)
        # after the last epoch too: a request stops before the final evaluation, which a
        # resume (at epoch `epochs`, no epoch left) then runs
        if self.checkpoint_requested():
            raise self.checkpoint_epoch_end(epoch)

    def final_record(self, evaluation: Evaluation | None = None) -> dict[str, Any]:
        """The final evaluation on the whole test set (`evaluate(None)`, unless a stack
        evaluated it: `evaluation`), recorded."""
        if evaluation is None:
            evaluation = self.evaluate(None)
        final = {
            "event": "final",
            **self._columns(evaluation.std, evaluation.rob),
            "time": now_iso(),
        }
        self._emit(final)
        return final

    def train(self, resume: bool = False) -> dict[str, Any]:
        self.begin_run(resume)
        for epoch in range(self.start_epoch, self.config.train.epochs):
            started = time.perf_counter()
            stats = self._train_epoch(epoch)
            self.close_epoch(epoch, stats, time.perf_counter() - started)
        return self.final_record()

    @property
    def robust_eval_enabled(self) -> bool:
        return self.config.eval.steps > 0 and self.config.eval.eps > 0


def mark_running(
    run: RunDir, device: torch.device, *, resume: bool, index: RunIndex | None, note: str = ""
) -> None:
    """Record that `run` trains in this process now (state, log line, and `index` if given).
    A write that fails (a full disk) raises: the run then ends `failed`, from the first on."""
    pid = os.getpid()
    run.hold_reserve()
    run.write_state(
        status="running",
        pid=pid,
        **process_start(pid),
        host=socket.gethostname(),
        device=str(device),
        started=now_iso(),
    )
    run.log(f"{'resumed' if resume else 'started'} on {device} (pid {pid}){note}")
    if index is not None:
        record_in_index(run, index)


def execute(
    run: RunDir,
    *,
    device: str | None = None,
    resume: bool = False,
    on_event: EventHandler | None = None,
    index: RunIndex | None = None,
    heartbeat_s: float | None = HEARTBEAT_S,
    checkpoint_request: threading.Event | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Train a created run in this process, recording state and exit in its directory.

    `threads`: torch's intra-op threads for this process (None: torch's own choice), e.g. a
    CPU slot's share of the cores.

    With `index`, the run is listed there as running once it has started (a foreground run;
    the caller records how it ended there, as it also reports it). While it trains, a heartbeat
    (`runs.heartbeat`) is written every `heartbeat_s` seconds; None: the caller beats (the
    detached worker, from the time it queues).

    Once `checkpoint_request` is set, training checkpoints its exact position at the next safe
    point (see Trainer) and RunPreempted is raised: no end is recorded (no exit.json, the
    status stays as it was), only a log line; the caller decides what the run's status becomes,
    and `resume=True` later continues it to an uninterrupted run's results.
    """
    config = validate_config(run.config()["config"])
    torch_device = pick_device(device or config.device)
    if threads is not None:
        torch.set_num_threads(threads)
    run.clear_exit()
    try:
        mark_running(run, torch_device, resume=resume, index=index)
        # the heartbeat stops (leaving this block) before the end is recorded below
        with beating(run, heartbeat_s), stop_on_signals():
            trainer = Trainer(run, torch_device, on_event, checkpoint_request=checkpoint_request)
            final = trainer.train(resume=resume)
    except RunPreempted as stop:
        run.log(f"preempted: {stop} (not ended: resume continues from there)")
        raise
    except RunInterrupted as stop:
        run.record_end("killed", error=f"stopped by {stop}", log=f"killed by {stop}")
        raise
    except KeyboardInterrupt:
        # Ctrl-C before stop_on_signals took SIGINT over (marking the run running, building
        # the trainer): Python's own KeyboardInterrupt, which left the run "running" with a
        # pid about to end, so read "dead" later. It is the same stop as one a moment after
        run.record_end("killed", error="stopped by SIGINT", log="killed by SIGINT")
        raise RunInterrupted("SIGINT") from None
    except Exception as err:
        message = failure_message(err)
        # no room even without the reserve: the error raised below is still the cause
        with suppress(SratError):
            run.record_end("failed", error=message, log=f"failed: {message}")
        raise
    run.record_end("finished", final=final, log="finished")
    return final
