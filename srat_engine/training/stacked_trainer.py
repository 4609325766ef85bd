"""The seeds of one configuration trained in one process, in lockstep (`StackedTrainStep`).

Every run is a `Trainer` of its own run directory, as alone: it plans each epoch, records,
keeps best.pt and its checkpoint, and its checkpoints resume alone. What is shared is the
device work: batch i of every run trains in one stacked step, and every evaluation (each
epoch's as `eval` says, and the final one) is one stacked pass of the runs
(`evaluation.stacked`), each run's counts as its own evaluation would give them. A run whose
training loss stops being finite, or whose write fails, ends `failed` and leaves the stack;
the others train on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack, suppress
from typing import Any

import torch

from srat_engine.config.schema import validate_config
from srat_engine.config.stacking import check_stackable
from srat_engine.errors import RunInterrupted, RunPreempted, SratError, failure_message
from srat_engine.evaluation.classwise import AttackParams
from srat_engine.evaluation.stacked import StackedEvaluation
from srat_engine.runs.index import RunIndex
from srat_engine.runs.liveness import HEARTBEAT_S
from srat_engine.runs.rundir import RunDir
from srat_engine.runs.sync import record_in_index
from srat_engine.tf32 import strict_fp32
from srat_engine.training.device import pick_device
from srat_engine.training.graphs import GraphedStackedStep, graphed_stacked_step
from srat_engine.training.stacked_step import StackedTrainStep
from srat_engine.training.trainer import (
    EpochPlan,
    Evaluation,
    Trainer,
    beating,
    mark_running,
    stop_on_signals,
)

RunEventHandler = Callable[[RunDir, dict[str, Any]], None]
FailureHandler = Callable[[Trainer, Exception], None]


class StackEvaluator:
    """The evaluations of a stack's runs, each what its `Trainer.evaluate` would give, run as
    one stacked pass (`evaluation.stacked`).

    Built from every run of the stack (`trainers`, built: `Trainer.begin_run`); each call
    evaluates the runs named, those still in the stack.
    """

    def __init__(
        self, trainers: Sequence[Trainer], on_fallback: Callable[[str], None] | None = None
    ) -> None:
        self.trainers = list(trainers)
        lead = self.trainers[0]
        config = lead.config
        self.evaluation = StackedEvaluation(
            [trainer.eval_model for trainer in self.trainers],
            lead.device,
            attack=AttackParams(config.eval.eps, config.eval.step_size, config.eval.steps),
            clip=lead.data.clip,
            channels_last=lead.train_step.channels_last,
            capture=config.eval.cuda_graphs,
            on_fallback=on_fallback,
        )

    def __call__(self, trainers: Sequence[Trainer], epoch: int | None) -> dict[str, Evaluation]:
        """Each of `trainers`' evaluation of `epoch` (0-based; None: the final one), as
        `Trainer.evaluate` gives it, by run id; the seconds are the stack's."""
        started = time.perf_counter()
        lead = trainers[0]
        # one configuration and one test set: the lead's passes are every run's
        standard, robust = lead.evaluation_sets(epoch)
        runs = [self.trainers.index(trainer) for trainer in trainers]
        seeds = [trainer.evaluation_seed for trainer in trainers]
        classes, batch_size = lead.resolved.num_classes, lead.config.eval.batch_size
        std: list[dict[str, Any] | None] = [None] * len(trainers)
        rob: list[dict[str, Any] | None] = [None] * len(trainers)
        with strict_fp32():
            if standard:
                x, y = standard
                features: list[list[torch.Tensor]] = [[] for _ in trainers]
                counts = self.evaluation.count(
                    runs, x, y, classes,
                    batch_size=batch_size, robust=False, seeds=seeds, features_into=features,
                ).tolist()  # fmt: skip
                std = [
                    trainer.summarize(correct, y, features[k])
                    for k, (trainer, correct) in enumerate(zip(trainers, counts, strict=True))
                ]
            if robust:
                x, y = robust
                counts = self.evaluation.count(
                    runs, x, y, classes, batch_size=batch_size, robust=True, seeds=seeds
                ).tolist()
                rob = [
                    trainer.summarize(correct, y, None)
                    for trainer, correct in zip(trainers, counts, strict=True)
                ]
        seconds = time.perf_counter() - started
        return {
            trainer.run.id: Evaluation(std[k], rob[k], seconds)
            for k, trainer in enumerate(trainers)
        }


class StackedTrainer:
    """K `Trainer`s of one configuration (their seeds apart), trained stacked.

    `on_failure(trainer, error)` is told of a run that fails on its own (a non-finite loss, a
    failed write); that run leaves the stack. An error of the stacked step itself (out of
    memory, say) is every run's and is raised. A stop signal (RunInterrupted) stops every run;
    each resumes, alone or stacked again, from its last checkpoint.

    With `checkpoint_request` (a Slurm job's warning signal sets it), the stack stops at the
    next safe point as a lone `Trainer` does, after a batch or after an epoch's records, every
    run checkpointing that same position, and RunPreempted is raised; the stack resumed
    continues from there (the trainers' own requests are not used: one request stops all).
    """

    def __init__(
        self,
        trainers: Sequence[Trainer],
        on_failure: FailureHandler,
        checkpoint_request: threading.Event | None = None,
    ) -> None:
        self.trainers = list(trainers)
        self.on_failure = on_failure
        self.checkpoint_request = checkpoint_request

    def _preempt_if_requested(self, save: Callable[[Trainer], RunPreempted]) -> None:
        """On a checkpoint request: every live run saves its checkpoint (`save`; a run whose
        save fails, or whose loss is not finite, leaves the stack), then RunPreempted."""
        if self.checkpoint_request is None or not self.checkpoint_request.is_set():
            return
        stops = [self._attempt(trainer, save, trainer) for trainer in list(self.live)]
        stop = next((stop for stop in stops if stop is not None), None)
        if stop is not None:
            raise stop

    def _fail(self, trainer: Trainer, err: Exception) -> None:
        self.live.remove(trainer)
        self.on_failure(trainer, err)

    def _attempt(self, trainer: Trainer, action: Callable[..., Any], *args: Any) -> Any:
        """`action(*args)` of one run; a run whose own action fails leaves the stack (None)."""
        try:
            return action(*args)
        except RunInterrupted:
            raise
        except Exception as err:
            self._fail(trainer, err)
            return None

    def train(self, resume: bool = False) -> dict[str, dict[str, Any]]:
        """Train every run to its final record; the final records of the runs that finished,
        by run id."""
        self.live = list(self.trainers)
        for trainer in self.trainers:
            trainer.begin_run(resume)
        lead = self.trainers[0]
        starts = {
            trainer.run.id: (trainer.start_epoch, trainer.position.batch if trainer.position else 0)
            for trainer in self.trainers
        }
        if len(set(starts.values())) > 1:
            where = ", ".join(f"{run} at {e}/{b}" for run, (e, b) in starts.items())
            raise SratError(
                f"the runs of a stack resume from different points (epoch/batch: {where}): "
                "resume them one by one"
            )
        for trainer in self.trainers[1:]:
            if trainer.resolved != lead.resolved:
                raise SratError(
                    f"runs {lead.run.id} and {trainer.run.id} resolve to different data or "
                    "class weights: they cannot share one stack"
                )
        steps = [trainer.train_step for trainer in self.trainers]

        def fallback(message: str) -> None:
            for trainer in self.trainers:
                trainer.run.log(message)

        step = graphed_stacked_step(StackedTrainStep(steps), steps, on_fallback=fallback)
        evaluate = StackEvaluator(self.trainers, on_fallback=fallback)
        graphs = "on" if isinstance(step, GraphedStackedStep) else "off"
        eval_graphs = "on" if evaluate.evaluation.graphs.enabled else "off"
        others = len(self.trainers) - 1
        for trainer in self.trainers:
            trainer.run.log(
                f"stacked with {others} other run(s): the training steps and evaluations run "
                f"as one stacked model, CUDA graphs {graphs} for training, {eval_graphs} for "
                "robust evaluation"
            )
        for epoch in range(lead.start_epoch, lead.config.train.epochs):
            if not self.live:
                break
            started = time.perf_counter()
            plans: dict[str, EpochPlan] = {}
            for trainer in list(self.live):
                plan = self._attempt(trainer, trainer.plan_epoch, epoch)
                if plan is not None:
                    plans[trainer.run.id] = plan
            if not self.live:
                break
            first = plans[self.live[0].run.id]
            for index in range(first.position.batch, len(first.batches)):
                batch = [(t, plans[t.run.id]) for t in self.live]
                step(
                    [t.train_step for t, _ in batch],
                    [t.data.train_x[plan.batches[index]] for t, plan in batch],
                    [t.data.train_y[plan.batches[index]] for t, plan in batch],
                    class_w=first.class_w,
                    use_gair=first.use_gair,
                    lam=first.lam,
                    sums=[plan.position.sums for _, plan in batch],
                )
                self._preempt_if_requested(
                    lambda t, i=index, p=plans: t.checkpoint_mid_epoch(p[t.run.id], i)  # type: ignore[misc]
                )
            train_seconds = time.perf_counter() - started
            ended: dict[str, dict[str, Any]] = {}
            for trainer in list(self.live):
                stats = self._attempt(trainer, trainer.end_epoch, plans[trainer.run.id])
                if stats is not None:
                    ended[trainer.run.id] = stats
            if not self.live:
                break
            evaluations = evaluate(self.live, epoch)
            for trainer in list(self.live):
                self._attempt(
                    trainer,
                    trainer.close_epoch,
                    epoch,
                    ended[trainer.run.id],
                    train_seconds,
                    evaluations[trainer.run.id],
                )
            # after the last epoch too: a request stops before the final evaluation
            self._preempt_if_requested(lambda t, e=epoch: t.checkpoint_epoch_end(e))  # type: ignore[misc]
        finals: dict[str, dict[str, Any]] = {}
        if not self.live:
            return finals
        evaluations = evaluate(self.live, None)
        for trainer in list(self.live):
            final = self._attempt(trainer, trainer.final_record, evaluations[trainer.run.id])
            if final is not None:
                finals[trainer.run.id] = final
        return finals


def execute_stacked(
    runs: Sequence[RunDir],
    *,
    device: str | None = None,
    resume: bool = False,
    on_event: RunEventHandler | None = None,
    index: RunIndex | None = None,
    heartbeat_s: float | None = HEARTBEAT_S,
    threads: int | None = None,
    checkpoint_request: threading.Event | None = None,
) -> dict[str, dict[str, Any]]:
    """Train created runs of one configuration (seeds apart) as one stack in this process,
    recording each one's state and end in its own directory, as `trainer.execute` does for
    one: the final records of the runs that finished, by run id. A run that fails alone
    ends `failed` and the others train on; a stop signal ends every unfinished one `killed`
    (RunInterrupted is raised), an error of the stack every unfinished one `failed`. Once
    `checkpoint_request` is set, every unfinished run checkpoints one position and
    RunPreempted is raised with no end recorded, as `trainer.execute` does.
    """
    configs = [validate_config(run.config()["config"]) for run in runs]
    check_stackable(configs)
    torch_device = pick_device(device or configs[0].device)
    if threads is not None:
        torch.set_num_threads(threads)
    report = on_event or (lambda _run, _record: None)
    ended: set[str] = set()

    def record_end(run: RunDir, status: str, **fields: Any) -> None:
        ended.add(run.id)
        # no room even without the reserve: the error raised is still the cause
        with suppress(SratError):
            run.record_end(status, **fields)
        if index is not None:
            with suppress(SratError):
                record_in_index(run, index)

    def failed(trainer: Trainer, err: Exception) -> None:
        message = failure_message(err)
        record_end(trainer.run, "failed", error=message, log=f"failed: {message}")

    def unfinished() -> list[RunDir]:
        return [run for run in runs if run.id not in ended]

    for run in runs:
        run.clear_exit()
    try:
        note = f", stacked with {len(runs) - 1} other run(s)"
        for run in runs:
            mark_running(run, torch_device, resume=resume, index=index, note=note)
        with ExitStack() as scope:
            for run in runs:
                scope.enter_context(beating(run, heartbeat_s))
            scope.enter_context(stop_on_signals())
            trainers = [
                Trainer(run, torch_device, lambda record, run=run: report(run, record))  # type: ignore[misc]
                for run in runs
            ]
            stack = StackedTrainer(trainers, failed, checkpoint_request=checkpoint_request)
            finals = stack.train(resume=resume)
    except RunPreempted as stop:
        for run in unfinished():
            run.log(f"preempted: {stop} (not ended: resume continues from there)")
        raise
    except RunInterrupted as stop:
        for run in unfinished():
            record_end(run, "killed", error=f"stopped by {stop}", log=f"killed by {stop}")
        raise
    except Exception as err:
        message = failure_message(err)
        for run in unfinished():
            record_end(run, "failed", error=message, log=f"failed: {message}")
        raise
    for run in unfinished():
        record_end(run, "finished", final=finals[run.id], log="finished")
    return finals
