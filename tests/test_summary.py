"""summarize_run: a run's index record from its directory, whatever state it was left in."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from srat_engine.config.schema import RunConfig
from srat_engine.runs.rundir import RunDir
from srat_engine.runs.summary import (
    _KEY_ADDED_AT_DEFAULT,
    config_key,
    summarize_run,
    summary_columns,
)


def make_run(root: Path, run_id: str = "run-a", **config: Any) -> RunDir:
    """A created run with a real validated config (no torch, no data needed)."""
    doc = {
        "config": RunConfig(**config).model_dump(mode="json"),
        "resolved": {},
        "source": "exp100-ldam",
        "created": "2024-06-01T10:00:00+00:00",
    }
    return RunDir.create(root, doc, run_id=run_id)


def epoch_record(epoch: int, std: float, rob: float | None) -> dict[str, Any]:
    return {
        "event": "epoch",
        "epoch": epoch,
        "epochs": 10,
        "std_overall": std,
        "std_under": std - 20,
        "rob_overall": rob,
        "rob_under": rob - 10 if rob is not None else None,
    }


def test_columns_are_the_record_fields_in_display_order(tmp_path: Path) -> None:
    record = summarize_run(make_run(tmp_path))
    assert tuple(record) == summary_columns
    assert summary_columns[:2] == ("id", "status") and len(set(summary_columns)) == 38
    # where the run runs: local unless its state.json says otherwise
    assert (record["backend"], record["slurm_job_id"], record["node"]) == ("local", None, None)


def test_a_slurm_run_summarises_with_its_backend_job_and_node(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    run.write_state(status="queued", backend="slurm", slurm_job_id="1234_5", node="gpu12")
    record = summarize_run(run)
    assert (record["backend"], record["slurm_job_id"], record["node"]) == (
        "slurm",
        "1234_5",
        "gpu12",
    )


def test_real_finished_digits_run(tmp_path: Path) -> None:
    from fake_runs import prepare_from_env

    from srat_engine.config.prepare import create_run
    from srat_engine.training.trainer import execute

    overrides = (
        "method=SRAT-CE",
        "train.epochs=1",
        "data.n_max=20",
        "attack.steps=1",
        "eval.steps=1",
        "eval.robust_per_class=5",
        "eval.batch_size=500",
        "device=cpu",
        "seed=3",
    )
    run = create_run(prepare_from_env("digits-ce", overrides), root=tmp_path / "runs")
    final = execute(run)
    record = summarize_run(run)

    assert record["id"] == run.id
    assert record["status"] == "finished" and record["error"] is None
    assert (record["method"], record["dataset"], record["arch"]) == (
        "SRAT-CE",
        "digits",
        "small_cnn",
    )
    assert (record["imbalance"], record["ratio"], record["seed"]) == ("exp", 10.0, 3)
    assert (record["epoch"], record["epochs"], record["final"]) == (1, 1, True)
    for column in ("std_overall", "std_under", "rob_overall", "rob_under"):
        assert record[column] == final[column]
    assert record["source"] == "digits-ce"
    assert record["created"] == run.config()["created"]
    assert record["updated"] == run.state()["updated"]
    assert record["pid"] == os.getpid() and record["pid_start"] == run.state()["pid_start"]
    assert (record["device"], record["host"]) == ("cpu", socket.gethostname())
    assert (record["tags"], record["notes"]) == ([], [])
    assert len(record["config_key"]) == 12 and int(record["config_key"], 16) >= 0
    # its pace and work: one epoch of N examples with PGD-1, 5N, its evaluation T + 3R
    # (R <= 5 a class), the final 4T; the epoch's seconds as metrics.jsonl has them
    resolved = run.config()["resolved"]
    n, test = resolved["train_size"], resolved["test_class_counts"]
    robust = sum(min(count, 5) for count in test)
    assert record["epoch_forwards"] == 5 * n + sum(test) + 3 * robust
    assert record["final_forwards"] == 4 * sum(test)
    epoch = next(r for r in run.metrics() if r["event"] == "epoch")
    assert record["epoch_seconds"] == round(epoch["train_seconds"] + epoch["eval_seconds"], 3)
    json.dumps(record)  # the index stores it as JSON


def test_fresh_run_has_no_metrics(tmp_path: Path) -> None:
    run = make_run(tmp_path, method="SRAT-LDAM", seed=1)
    record = summarize_run(run)
    assert record["status"] == "created"
    assert (record["epoch"], record["epochs"], record["final"]) == (0, 200, False)
    assert all(record[c] is None for c in ("std_overall", "std_under", "rob_overall", "rob_under"))
    assert all(record[c] is None for c in ("pid", "pid_start", "device", "host", "error"))
    # no timed epoch; and this config.json, like those made before it did, has no workload
    assert record["epoch_seconds"] is record["epoch_forwards"] is record["final_forwards"] is None
    assert record["updated"] == run.state()["updated"] and record["updated"] is not None
    assert record["source"] == "exp100-ldam" and record["created"] == "2024-06-01T10:00:00+00:00"


def test_torn_last_metrics_line_is_skipped(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    run.append_metrics(epoch_record(1, 50.0, 30.0))
    run.append_metrics(epoch_record(2, 55.0, 33.0))
    with run.metrics_path.open("a") as handle:  # a crash mid-append
        handle.write('{"event": "epoch", "epoch": 3, "std_overall": 99.0, "std_und')
    record = summarize_run(run)
    assert record["epoch"] == 2 and record["final"] is False
    assert (record["std_overall"], record["std_under"]) == (55.0, 35.0)
    assert (record["rob_overall"], record["rob_under"]) == (33.0, 23.0)


def test_metrics_since_reads_only_complete_lines_and_resumes_at_the_offset(
    tmp_path: Path,
) -> None:
    run = make_run(tmp_path)
    assert run.metrics_since(0) == ([], 0)  # no file yet
    run.append_metrics(epoch_record(1, 50.0, 30.0))
    first, offset = run.metrics_since(0)
    assert [r["epoch"] for r in first] == [1] and offset == run.metrics_path.stat().st_size
    with run.metrics_path.open("a") as handle:  # a writer halfway through a line
        handle.write('{"event": "epoch", "epoch": 2, "std_ov')
    assert run.metrics_since(offset) == ([], offset)
    with run.metrics_path.open("a") as handle:
        handle.write('erall": 60.0}\n')
    second, after = run.metrics_since(offset)
    assert second == [{"event": "epoch", "epoch": 2, "std_overall": 60.0}]
    assert after == run.metrics_path.stat().st_size


def test_robust_columns_come_from_the_last_epoch_that_measured_them(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    run.append_metrics(epoch_record(1, 50.0, 30.0))
    run.append_metrics(epoch_record(2, 55.0, None))  # eval.robust_every > 1
    record = summarize_run(run)
    assert record["epoch"] == 2
    assert (record["std_overall"], record["rob_overall"]) == (55.0, 30.0)


def test_final_record_wins_and_resume_progress_is_file_order(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    for epoch in (1, 2, 3):
        run.append_metrics(epoch_record(epoch, 50.0 + epoch, 30.0))
    run.append_metrics({"event": "resume", "from_epoch": 2})
    run.append_metrics(epoch_record(3, 60.0, 31.0))
    assert summarize_run(run)["epoch"] == 3
    final = {"std_overall": 70.0, "std_under": 50.0, "rob_overall": 40.0, "rob_under": 20.0}
    run.append_metrics({"event": "final", **final, "std_class": [70.0] * 10})
    record = summarize_run(run)
    assert record["final"] is True
    assert {c: record[c] for c in final} == final


def test_missing_or_corrupt_state_json(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    (run.path / "state.json").unlink()
    record = summarize_run(run)
    assert record["status"] == "unknown" and record["updated"] is None

    run.write_exit({"status": "failed", "error": "training loss became nan/inf in epoch 1"})
    record = summarize_run(run)
    assert record["status"] == "failed"
    assert record["error"] == "training loss became nan/inf in epoch 1"

    (run.path / "state.json").write_text('{"status": "runn')  # torn by hand
    assert summarize_run(run)["status"] == "failed"
    (run.path / "state.json").write_text('["not", "an", "object"]')
    assert summarize_run(run)["status"] == "failed"


def test_state_json_status_beats_exit_json(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    run.write_exit({"status": "killed", "error": "stopped by SIGTERM"})
    run.write_state(status="running", pid=123, pid_start=1.5, host="h", device="cuda:1")
    record = summarize_run(run)
    assert record["status"] == "running" and record["error"] == "stopped by SIGTERM"
    assert (record["pid"], record["pid_start"], record["host"], record["device"]) == (
        123,
        1.5,
        "h",
        "cuda:1",
    )


def test_meta_tags_and_notes_and_a_corrupt_meta(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    run.write_meta(["paper"], ["looks good"])
    record = summarize_run(run)
    assert (record["tags"], record["notes"]) == (["paper"], ["looks good"])
    (run.path / "meta.json").write_text("[1, 2")
    assert summarize_run(run)["tags"] == []
    (run.path / "meta.json").write_text("[1, 2]")  # valid JSON, wrong shape
    assert summarize_run(run)["tags"] == []


def test_unreadable_config_still_gives_a_record(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    (run.path / "config.json").write_text("{")
    record = summarize_run(run)
    assert record["status"] == "created" and record["method"] is None
    assert record["config_key"] is None and "config.json" in record["error"]


@pytest.mark.parametrize(
    ("other", "same"),
    [
        ({"seed": 4}, True),
        ({"seed": 1, "name": "rerun", "device": "cuda:3"}, True),
        ({"method": "SRAT-LDAM"}, False),
        ({"data": {"ratio": 10}}, False),
        # evaluation's batching and graph replay change no count
        ({"eval": {"batch_size": 64, "cuda_graphs": False}}, True),
        ({"eval": {"steps": 10}}, False),
        # fields added later: their default computes what runs from before them did
        ({"attack": {"loss": "reference"}, "loss": {"class_weight_scale": "classes"}}, True),
        ({"attack": {"loss": "training"}}, False),
        ({"loss": {"class_weight_scale": "head"}}, False),
    ],
)
def test_config_key_groups_seeds_only(tmp_path: Path, other: dict[str, Any], same: bool) -> None:
    base = summarize_run(make_run(tmp_path / "a", method="CE", seed=0))["config_key"]
    key = summarize_run(make_run(tmp_path / "b", **{"method": "CE", **other}))["config_key"]
    assert (key == base) is same
    assert base == config_key(RunConfig(method="CE").model_dump(mode="json"))


def test_a_run_from_before_a_field_was_added_keys_with_one_at_its_default() -> None:
    config = RunConfig(method="SRAT-LDAM").model_dump(mode="json")
    older = json.loads(json.dumps(config))
    for section, defaults in _KEY_ADDED_AT_DEFAULT.items():
        for field, default in defaults.items():
            # the schema's default is the value the key leaves out (one answer, checked here,
            # as the run files' layer may not import the config's)
            assert config[section][field] == default, (section, field)
            del older[section][field]
    assert config_key(older) == config_key(config)
