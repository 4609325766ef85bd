"""One run's index record, derived only from its run directory (so the index can be rebuilt).

Everything here tolerates a run directory in any state a crash or a person can leave it in:
no state.json, a corrupt state.json or meta.json, no metrics yet, a torn last metrics line.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from srat_engine.runs.evaluations import eval_summary, read_eval
from srat_engine.runs.progress import epoch_seconds, forwards, training_ends
from srat_engine.runs.records import (
    METRIC_COLUMNS,
    best_epoch,
    class_count,
    latest_epoch,
    result_columns,
)
from srat_engine.runs.rundir import RunDir, is_valid_run_id

# Display order for tables: what a person scans first, then provenance, then bookkeeping.
summary_columns: tuple[str, ...] = (
    "id",
    "status",
    "method",
    "dataset",
    "imbalance",
    "ratio",
    "arch",
    "seed",
    "epoch",
    "epochs",
    "std_overall",
    "std_under",
    "rob_overall",
    "rob_under",
    "aa_overall",
    "aa_under",
    "aa_n",
    "masking",
    "final",
    "tags",
    "notes",
    "source",
    "created",
    "updated",
    "ends",
    "epoch_seconds",
    "epoch_forwards",
    "final_forwards",
    "device",
    "host",
    "pid",
    "pid_start",
    "backend",
    "slurm_job_id",
    "node",
    "stack",
    "error",
    "config_key",
)


# Fields that never change what a run computes (beyond its seed) or only name it, so runs
# differing in them belong to one group for mean ± std over seeds.
_KEY_EXCLUDED = ("seed", "name", "device")
# Nested fields of the same kind: where data live, bookkeeping cadence, evaluation batching
# and its CUDA-graph replay (evaluation is per-sample, BatchNorm in eval mode; a replay runs
# the recorded eager kernels), the per-epoch evaluation cadence and whether the best epoch's
# weights are kept. A field added later (absent from older runs' configs) that changes no
# result belongs here too, or the older runs and the newer split into two groups.
_KEY_EXCLUDED_NESTED = {
    "data": ("root", "download"),
    "train": ("checkpoint_every", "keep_best"),
    "eval": ("batch_size", "cuda_graphs", "every", "robust_every"),
}


# Fields that do change results, added after runs were made without them, with the value
# that computes what those runs computed: at that value a field is left out of the key, so a
# run from before it and one from after group together; any other value keys apart.
_KEY_ADDED_AT_DEFAULT: dict[str, dict[str, Any]] = {
    "attack": {"loss": "reference"},
    "loss": {"class_weight_scale": "classes"},
}


def config_key(config: dict[str, Any]) -> str:
    """Short stable hash of the config fields that decide a run's results, seed excluded."""
    text = json.dumps(result_fields(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def result_settings(config: dict[str, Any]) -> dict[str, Any]:
    """What decides a run's results, as a person reads it: `result_fields` with every field
    added later at its value, the default where a config from before it has none."""
    fields = result_fields(config)
    for section, defaults in _KEY_ADDED_AT_DEFAULT.items():
        if isinstance(fields.get(section), dict):
            fields[section] = {**defaults, **fields[section]}
    return fields


def result_fields(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a config that `config_key` hashes: what decides a run's results."""
    rest = {k: v for k, v in config.items() if k not in _KEY_EXCLUDED}
    for section, fields in _KEY_EXCLUDED_NESTED.items():
        if isinstance(rest.get(section), dict):
            rest[section] = {k: v for k, v in rest[section].items() if k not in fields}
    for section, defaults in _KEY_ADDED_AT_DEFAULT.items():
        if isinstance(rest.get(section), dict):
            rest[section] = {
                k: v for k, v in rest[section].items() if k not in defaults or v != defaults[k]
            }
    return rest


def with_config(
    record: dict[str, Any], run: RunDir, doc: dict[str, Any] | None = None
) -> dict[str, Any]:
    """`record` with its run's config (config.json's `config`; `doc`: that document, when the
    caller has just read it) under "config", which tables read to name what tells a method's
    rows apart (`reporting.report.settings_of`); the record as it is when the file cannot
    be read (the table then names rows by key)."""
    if doc is None:
        try:
            doc = _as_dict(run.config())
        except (OSError, ValueError):
            return record
    config = doc.get("config")
    return {**record, "config": config} if isinstance(config, dict) else record


def _as_dict(value: Any) -> dict[str, Any]:
    # Valid JSON of the wrong shape (a list, a number) is as useless as invalid JSON.
    return value if isinstance(value, dict) else {}


def _meta(run: RunDir) -> dict[str, Any]:
    try:
        return run.meta()
    except (AttributeError, TypeError):
        # meta.json that is valid JSON but not an object (RunDir.meta assumes a dict)
        return {"tags": [], "notes": []}


def _training_ends(records: list[dict[str, Any]], epochs: Any) -> str | None:
    if not isinstance(epochs, int):
        return None
    ends = training_ends(records, epochs)
    return ends.isoformat(timespec="seconds") if ends is not None else None


def _rounded(seconds: float | None) -> float | None:
    return round(seconds, 3) if seconds is not None else None


def _forwards(doc: dict[str, Any], epochs: Any) -> dict[str, float | None]:
    counted = forwards(doc.get("workload"), epochs)
    epoch_forwards, final_forwards = counted if counted is not None else (None, None)
    return {"epoch_forwards": epoch_forwards, "final_forwards": final_forwards}


def summarize_run(run: RunDir, records: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The index record of one run, read from its directory only (`records`: its
    metrics.jsonl, when the caller has just read it)."""
    config_error: str | None = None
    try:
        doc = _as_dict(run.config())
    except (OSError, ValueError) as err:
        # A record with what is known beats a run missing from `srat runs ls`.
        doc, config_error = {}, f"config.json is unreadable: {err}"
    config = _as_dict(doc.get("config"))
    data = _as_dict(config.get("data"))
    model = _as_dict(config.get("model"))
    train = _as_dict(config.get("train"))

    state = _as_dict(run.state())
    exit_record = _as_dict(run.exit_record())
    status = state.get("status") or exit_record.get("status") or "unknown"

    if records is None:
        records = run.metrics()
    metrics, final = result_columns(records, METRIC_COLUMNS, class_count(doc))
    last = latest_epoch(records)
    meta = _meta(run)

    record: dict[str, Any] = {
        "id": run.id,
        "status": status,
        "method": config.get("method"),
        "dataset": data.get("dataset"),
        "imbalance": data.get("imbalance"),
        "ratio": data.get("ratio"),
        "arch": model.get("arch"),
        "seed": config.get("seed"),
        "epochs": train.get("epochs"),
        "epoch": int(last["epoch"]) if last is not None else 0,
        "source": doc.get("source"),
        "created": doc.get("created"),
        "updated": state.get("updated"),
        # a running run's expected end of training (`progress.training_ends`), UTC ISO
        "ends": _training_ends(records, train.get("epochs")) if status == "running" else None,
        # its pace and its work (`progress.forwards`), what a queued run's expected end is
        # estimated from (`jobs.forecast`): mean seconds an epoch, forward passes an epoch
        # and at the end
        "epoch_seconds": _rounded(epoch_seconds(records)),
        **_forwards(doc, train.get("epochs")),
        "device": state.get("device"),
        "host": state.get("host"),
        "pid": state.get("pid"),
        "pid_start": state.get("pid_start"),
        # where it runs: "local" (a process of this host's srat) or "slurm" (a job, its node)
        "backend": state.get("backend") or "local",
        "slurm_job_id": state.get("slurm_job_id"),
        "node": state.get("node"),
        # the runs trained with it in one process (`srat run --stack`), as its last launch
        # says: a resume trains it alone
        "stack": run.stack(),
        "error": exit_record.get("error") or config_error,
        **metrics,
        # `srat eval` results (eval.json): AutoAttack accuracy and the gradient-masking verdict
        **eval_summary(read_eval(run)),
        # no table can place a run whose config is unreadable (no method, dataset, seed)
        "final": final and config_error is None,
        "tags": meta["tags"],
        "notes": meta["notes"],
        "config_key": config_key(config) if config else None,
    }
    return {column: record[column] for column in summary_columns}


def at_best_epoch(
    record: dict[str, Any], runs_root: Path, records: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The run's index record with the four columns of its best epoch (`records.best_epoch`)
    instead of its final evaluation's, and `best_epoch` its number; a finished run only (one
    still training has no settled best), and none that never measured robust accuracy (those
    come back with final False: tables leave them out). `records`: the run's metrics.jsonl,
    when the caller has just read it."""
    if record.get("status") != "finished" or not is_valid_run_id(str(record.get("id"))):
        return {**record, "final": False}
    run = RunDir(runs_root / str(record["id"]))
    try:
        events = run.metrics() if records is None else records
        chosen = best_epoch(events, class_count(run.config()))
    except (OSError, ValueError):
        chosen = None
    if chosen is None:
        return {**record, "final": False}
    return {**record, **{c: chosen.get(c) for c in METRIC_COLUMNS}, "best_epoch": chosen["epoch"]}
