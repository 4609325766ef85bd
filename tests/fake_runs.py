"""Fake but well-formed run directories for interface tests: no training, fully deterministic.

The config and resolved blocks are the engine's own (a real preset, validated and resolved);
only the metrics are synthetic, following smooth curves so plots have something to show.
"""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path
from typing import Any

import psutil

from srat_engine.config.prepare import PreparedRun, prepare
from srat_engine.fsutil import atomic_write_json
from srat_engine.runs.home import Home
from srat_engine.runs.index import RunIndex
from srat_engine.runs.rundir import RunDir
from srat_engine.runs.sync import record_in_index

CREATED = "2026-11-20T12:00:00+00:00"
# A real digits run small enough to train in about a second per epoch on the CPU: 40 examples
# per class before the imbalance, PGD-2 in training and in evaluation, batch 128 (a step or
# two an epoch) and robust accuracy every epoch whatever the digits protocol says (tests set
# their own epochs).
TINY_RUN: tuple[str, ...] = (
    "data.n_max=40",
    "attack.steps=2",
    "eval.steps=2",
    "eval.robust_per_class=5",
    "eval.batch_size=500",
    "train.batch_size=128",
    "eval.robust_every=1",
    "device=cpu",
)


def prepare_from_env(preset: str, overrides: tuple[str, ...] = ()) -> PreparedRun:
    """`prepare` as a CLI command calls it: presets and datasets where `Home.from_env()` (the
    test's SRAT_HOME, SRAT_PRESETS, SRAT_DATA) says."""
    home = Home.from_env()
    return prepare(
        preset=preset, overrides=overrides, preset_dirs=home.preset_dirs, data_dir=home.data_dir
    )


def epoch_record(epoch: int, epochs: int, num_classes: int, under: list[int]) -> dict[str, Any]:
    """Accuracies that rise with the epoch and fall with the class index (the tail)."""
    progress = 1 - math.exp(-3 * epoch / epochs)
    std = [round(100 * progress * (1 - 0.6 * c / num_classes), 2) for c in range(num_classes)]
    rob = [round(0.6 * s, 2) for s in std]

    def mean(values: list[float], classes: list[int]) -> float:
        return round(sum(values[c] for c in classes) / len(classes), 4)

    everyone = list(range(num_classes))
    return {
        "event": "epoch",
        "epoch": epoch,
        "epochs": epochs,
        "lr": 0.1 if epoch <= 0.8 * epochs else 0.001,
        "loss": round(2.3 * (1 - 0.7 * progress), 4),
        "sep_loss": None,
        "train_acc": round(90 * progress, 2),
        "separability": round(1 + 2 * progress, 4),
        "reweighting": epoch > 0.8 * epochs,
        "gair": False,
        "std_overall": mean(std, everyone),
        "std_under": mean(std, under),
        "std_class": std,
        "rob_overall": mean(rob, everyone),
        "rob_under": mean(rob, under),
        "rob_class": rob,
        "rob_n": 20 * num_classes,
        "train_seconds": 1.0,
        "eval_seconds": 0.5,
        "time": CREATED,
    }


def make_fake_run(
    root: Path,
    run_id: str,
    *,
    preset: str = "digits-srat-ldam",
    overrides: tuple[str, ...] = (),
    epochs_done: int = 5,
    epochs: int = 10,
    status: str = "running",
    index: RunIndex | None = None,
    created: str = CREATED,
) -> RunDir:
    """A run directory as the engine would leave it after `epochs_done` epochs.

    `overrides` go through the real config validation, e.g. ("data.dataset=cifar100",) for a
    100-class run. A `finished` run also gets its final record and exit.json.
    """
    prepared = prepare_from_env(preset, (f"train.epochs={epochs}", *overrides))
    doc = prepared.document()
    doc["created"] = created
    doc["provenance"] = {"git_commit": "0" * 40, "git_dirty": False, "host": "test", "user": None}
    run = RunDir.create(root, doc, run_id=run_id)
    resolved = prepared.resolved
    for epoch in range(1, epochs_done + 1):
        run.append_metrics(
            epoch_record(epoch, epochs, resolved.num_classes, resolved.under_classes)
        )
    state: dict[str, Any] = {"status": status, "epoch": epochs_done, "epochs": epochs,
                             "device": "cpu", "host": "test", "created": created,
                             "updated": created}  # fmt: skip
    if status == "finished":
        final = epoch_record(epochs, epochs, resolved.num_classes, resolved.under_classes)
        final = {**final, "event": "final", "rob_n": 50 * resolved.num_classes}
        run.append_metrics(final)
        run.write_exit({"status": "finished", "final": final})
    if status in ("running", "queued"):
        # the test process itself stands in for the worker, so liveness checks pass
        state.update(pid=os.getpid(), pid_start=psutil.Process().create_time(),
                     host=socket.gethostname())  # fmt: skip
    atomic_write_json(run.path / "state.json", state)
    run.log("fake run for interface tests")
    if index is not None:
        record_in_index(run, index)
    return run
