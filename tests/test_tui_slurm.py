"""The Slurm backend in the TUI: the runs table's backend column (with what Slurm's queue says
of a waiting job) and the new-run form's slurm backend, validated against the cluster and
submitting through it.

The queue and the cluster are faked with tiny `squeue`/`sinfo`/`sbatch` scripts on PATH where a
test is about the TUI's wiring, and real (tests/slurm_cluster.py) where a run goes through
Slurm end to end.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from fake_runs import TINY_RUN, make_fake_run
from slurm_cluster import SlurmCluster, slurm_cluster
from test_tui_new_run import Host, make_context, set_field, settled, text_of
from textual.pilot import Pilot
from textual.widgets import Button, Input, Label, Select, Static
from tui_harness import pinned_context, scenario, wait_for

from srat_engine.errors import SratError
from srat_engine.fsutil import atomic_write_json
from srat_engine.jobs.slurm import NO_SBATCH
from srat_engine.jobs.slurm_options import slurm_options
from srat_engine.runs.home import Home
from srat_engine.runs.index import run_dirs
from srat_engine.runs.rundir import RunDir
from srat_engine.runs.sync import record_in_index
from srat_tui.tui.app import SratApp
from srat_tui.tui.screens.new_run import NewRunScreen, command_line

__all__ = ["slurm_cluster"]  # the fixture, imported for pytest

SLURM_FIELDS = ("partition", "time", "gpus_per_run")


def fake_clients(bin_dir: Path, **outputs: str) -> None:
    """Scripts named after Slurm's clients that print `outputs[name]` (a file's text when
    the value is a path), so a test controls what the queue or the cluster says."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, output in outputs.items():
        script = bin_dir / name
        script.write_text(f"#!/bin/sh\ncat '{output}'\n")
        script.chmod(0o755)


def on_path(monkeypatch: pytest.MonkeyPatch, bin_dir: Path) -> None:
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def slurm_state(run: RunDir, **fields: Any) -> None:
    """The run as `jobs.slurm` leaves it once submitted: backend slurm, its job id."""
    state = {**run.state(), "backend": "slurm", **fields}
    atomic_write_json(run.path / "state.json", state)


# -- the runs table ----------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu_panel = pytest.importorskip("srat_tui.tui.widgets.gpu_panel")
    monkeypatch.setattr(gpu_panel, "probe_gpus", lambda: None)


@scenario
async def test_runs_table_shows_the_backend_and_the_queue_state(
    srat_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    context = pinned_context(srat_home, poll_seconds=0.1)
    root, index = context.runs_root, context.index
    make_fake_run(root, "run-local", status="finished", epochs_done=10, index=index)
    waiting = make_fake_run(root, "run-waiting", status="queued")
    # submitted, no process yet: only Slurm's queue knows of it
    slurm_state(waiting, slurm_job_id="4242", pid=None, pid_start=None, host=None)
    done = make_fake_run(root, "run-done", status="finished", epochs_done=10)
    slurm_state(done, slurm_job_id="4243", node="node3")
    for run in (waiting, done):
        record_in_index(run, index)
    queue = tmp_path / "queue.txt"
    queue.write_text("4242|PENDING|Priority|\n")
    fake_clients(tmp_path / "bin", squeue=str(queue))
    on_path(monkeypatch, tmp_path / "bin")

    app = SratApp(context)
    async with app.run_test(size=(200, 40)) as pilot:
        await wait_for(pilot, lambda: app.runs_screen is not None and app.runs_screen.loaded)
        screen = app.runs_screen
        assert screen is not None
        labels = [str(column.label).rstrip(" ▲▼") for column in screen.table.ordered_columns]
        assert labels[labels.index("device") + 1] == "backend"

        def cell(run_id: str) -> str:
            return str(screen.table.get_cell(run_id, "backend"))

        assert cell("run-waiting") == "slurm PENDING (Priority)"
        assert cell("run-done") == "slurm"  # ended: the queue is not asked about it
        assert cell("run-local") == "local"

        # the job starts: the next poll's squeue says so
        queue.write_text("4242|RUNNING|None|node3\n")
        await wait_for(pilot, lambda: cell("run-waiting") == "slurm RUNNING on node3", "poll")
        assert str(screen.table.get_cell("run-waiting", "status")) == "queued"


# -- the new-run form --------------------------------------------------------------------------


async def choose_slurm(pilot: Pilot[None]) -> NewRunScreen:
    await settled(pilot)
    return await set_field(pilot, "backend", "slurm")


def error_text(screen: NewRunScreen) -> str:
    error = screen.query_one("#newrun-error", Static)
    return text_of(error).strip() if error.display else ""


def no_runs_created() -> bool:
    return run_dirs(Home.from_env().runs) == []


@scenario
async def test_slurm_fields_replace_the_devices_field() -> None:
    app = Host(make_context())
    async with app.run_test(size=(120, 50)) as pilot:
        screen = await settled(pilot)
        assert screen.query_one("#backend", Select).value == "local"
        for field in SLURM_FIELDS:
            assert not screen.query_one(f"#{field}", Input).display
        assert not screen.query_one("#devices", Input).disabled

        screen = await set_field(pilot, "backend", "slurm")
        for field in SLURM_FIELDS:
            assert screen.query_one(f"#{field}", Input).display
        shown = {str(label.content) for label in screen.query(Label) if label.display}
        assert {"partition", "time limit", "gpus per run"} <= shown
        assert screen.query_one("#devices", Input).disabled
        assert screen.query_one("#time", Input).placeholder.startswith("12:00:00")

        # another preset keeps where the runs go
        screen = await set_field(pilot, "preset", "digits-ce")
        await set_field(pilot, "time", "30")
        screen = await set_field(pilot, "preset", "demo")
        assert screen.query_one("#backend", Select).value == "slurm"
        assert screen.query_one("#time", Input).value == "30"

        screen = await set_field(pilot, "backend", "local")
        assert not screen.query_one("#time", Input).display
        assert not screen.query_one("#devices", Input).disabled


@scenario
async def test_a_bad_time_shows_the_engine_message_and_launches_nothing() -> None:
    app = Host(make_context())
    async with app.run_test(size=(120, 50)) as pilot:
        await choose_slurm(pilot)
        screen = await set_field(pilot, "time", "1h")
        with pytest.raises(SratError) as expected:
            slurm_options(Home.from_env().config_file, {"time": "1h"})
        assert error_text(screen) == str(expected.value)
        assert "'1h' is not a Slurm time" in error_text(screen)
        assert screen.query_one("#launch", Button).disabled
        await pilot.press("ctrl+s")
        await pilot.pause(0.2)
        assert app.screen is screen and app.result is None and no_runs_created()


@scenario
async def test_no_sbatch_on_path_is_refused_in_the_form(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    app = Host(make_context())
    async with app.run_test(size=(120, 50)) as pilot:
        screen = await choose_slurm(pilot)
        assert error_text(screen) == NO_SBATCH
        assert screen.query_one("#launch", Button).disabled
        await pilot.press("ctrl+s")
        await pilot.pause(0.2)
        assert app.screen is screen and no_runs_created()
        # a local run needs no sbatch
        screen = await set_field(pilot, "backend", "local")
        assert error_text(screen) == "" and not screen.query_one("#launch", Button).disabled


@scenario
async def test_config_toml_defaults_show_and_the_command_line_uses_them(
    srat_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (srat_home / "config.toml").write_text(
        '[backend.slurm]\npartition = "gpu"\ntime = "2:00:00"\ngpus_per_run = 2\n'
    )
    partitions = tmp_path / "partitions.txt"
    partitions.write_text("debug*\ngpu\n")
    # sbatch is only looked for while the form is checked, never run
    fake_clients(tmp_path / "bin", sinfo=str(partitions), sbatch="/dev/null")
    on_path(monkeypatch, tmp_path / "bin")
    app = Host(make_context())
    async with app.run_test(size=(120, 50)) as pilot:
        screen = await choose_slurm(pilot)
        placeholders = {f: screen.query_one(f"#{f}", Input).placeholder for f in SLURM_FIELDS}
        assert placeholders == {
            "partition": "gpu (config.toml)",
            "time": "2:00:00 (config.toml)",
            "gpus_per_run": "2 (config.toml)",
        }
        validation = screen.validation
        assert validation is not None and validation.ok and validation.slurm is not None
        assert (validation.slurm.partition, validation.slurm.gpus_per_run) == ("gpu", 2)
        line = command_line("demo", validation)
        assert line.endswith("--backend slurm --partition gpu --time 2:00:00 --gpus-per-run 2")
        assert "--detach" not in line and "--device" not in line
        shown = " ".join(text_of(screen.query_one("#newrun-command", Static)).split())
        assert shown == line

        screen = await set_field(pilot, "partition", "debug")
        screen = await set_field(pilot, "time", "90")
        assert screen.validation is not None and screen.validation.slurm is not None
        assert "--partition debug --time 90 --gpus-per-run 2" in command_line(
            "demo", screen.validation
        )
        screen = await set_field(pilot, "partition", "nope")
        assert error_text(screen) == "unknown Slurm partition 'nope' (this cluster has: debug, gpu)"
        screen = await set_field(pilot, "partition", "")
        screen = await set_field(pilot, "gpus_per_run", "many")
        assert error_text(screen).startswith("--gpus-per-run: ")
        assert screen.query_one("#launch", Button).disabled


@scenario
async def test_a_refused_submission_says_why_and_leaves_no_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sbatch = bin_dir / "sbatch"
    sbatch.write_text("#!/bin/sh\necho 'sbatch: error: Invalid account or account/partition' >&2\n"
                      "exit 1\n")  # fmt: skip
    sbatch.chmod(0o755)
    on_path(monkeypatch, bin_dir)
    app = Host(make_context())
    async with app.run_test(size=(120, 50)) as pilot:
        await choose_slurm(pilot)
        await set_field(pilot, "extra", " ".join(TINY_RUN))
        screen = await set_field(pilot, "epochs", "1")
        assert screen.validation is not None and screen.validation.ok, screen.validation
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: "launch failed" in error_text(screen), "the refusal")
        assert "sbatch refused the job" in error_text(screen)
        assert "Invalid account" in error_text(screen)
        assert app.screen is screen and app.result is None
        assert not screen.launching
    assert no_runs_created()


def wait_status(run: RunDir, wanted: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        state = run.state()
        if state.get("status") == wanted:
            return state
        if state.get("status") in ("failed", "dead", "killed") or time.monotonic() > deadline:
            log = run.launch_record().get("log")
            tail = Path(log).read_text()[-2000:] if log and Path(log).exists() else "no log"
            raise AssertionError(f"run {run.id}: {json.dumps(state)}\n{tail}")
        time.sleep(0.2)


@scenario
async def test_the_form_submits_to_a_real_slurm(
    slurm_cluster: SlurmCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    context = make_context()
    app = Host(context)
    async with app.run_test(size=(120, 50)) as pilot:
        await choose_slurm(pilot)
        await set_field(pilot, "epochs", "1")
        await set_field(pilot, "extra", " ".join(TINY_RUN))
        # two seeds as one stack: one Slurm job trains both (`srat run --stack`)
        await set_field(pilot, "seeds", "0,1")
        await set_field(pilot, "stack", "true")
        await set_field(pilot, "gpus_per_run", "0")  # the test cluster has no GPU
        screen = await set_field(pilot, "partition", "nope")
        assert error_text(screen) == "unknown Slurm partition 'nope' (this cluster has: debug)"
        screen = await set_field(pilot, "partition", "debug")
        validation = screen.validation
        assert validation is not None and validation.ok, validation
        command = " ".join(text_of(screen.query_one("#newrun-command", Static)).split())
        assert command == command_line("demo", validation)
        assert "--seeds 0,1 --stack" in command
        assert command.endswith(" --backend slurm --partition debug --time 12:00:00 "
                                "--gpus-per-run 0")  # fmt: skip
        cost = text_of(screen.query_one("#newrun-cost", Static))
        assert "stacked: one process, one Slurm job" in cost
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: app.result is not None, "the submission", timeout=60)
        assert app.screen is not screen  # dismissed with the new runs
    assert app.result is not None and len(app.result) == 2
    runs = [RunDir(context.runs_root / run_id) for run_id in app.result]
    launches = [run.launch_record() for run in runs]
    assert len({launch["job_id"] for launch in launches}) == 1  # one job for the stack
    for run, launch in zip(runs, launches, strict=True):
        assert launch["backend"] == "slurm" and launch["job_id"]
        assert launch["gpus"] == 0 and launch["device"] == "cpu"
        assert launch["stack"] == app.result and run.stack() == app.result
        assert run.config()["config"]["train"]["epochs"] == 1
        state = wait_status(run, "finished", timeout=60)
        assert state["slurm_job_id"] == launch["job_id"]
        assert state["node"] == slurm_cluster.node
        assert "stacked with 1 other run(s)" in run.log_path.read_text()
        record = context.index.get(run.id)
        assert record is not None and record["backend"] == "slurm"


@scenario
async def test_a_run_training_in_slurm_shows_live_in_the_runs_table(
    slurm_cluster: SlurmCluster, srat_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    from fake_runs import prepare_from_env

    from srat_engine.jobs.slurm import create_and_submit

    home = Home(srat_home)
    options = slurm_options(home.config_file, {"gpus_per_run": 0})
    prepared = prepare_from_env("demo", (*TINY_RUN, "train.epochs=400"))
    (job,) = create_and_submit([prepared], options, home=home)
    run = RunDir(home.runs / job.run_id)
    wait_status(run, "running", timeout=30)

    app = SratApp(pinned_context(srat_home, poll_seconds=0.1))
    async with app.run_test(size=(200, 40)) as pilot:
        await wait_for(pilot, lambda: app.runs_screen is not None and app.runs_screen.loaded)
        screen = app.runs_screen
        assert screen is not None

        def cell(column: str) -> str:
            return str(screen.table.get_cell(run.id, column))

        assert cell("status") == "running"
        assert cell("backend") == f"slurm RUNNING on {slurm_cluster.node}"
        first = int(cell("epoch").split("/")[0])
        # its metrics come in while it trains: the epoch and the accuracy columns move on
        await wait_for(
            pilot, lambda: int(cell("epoch").split("/")[0]) > first and cell("std_overall") != "-",
            "new epochs in the table", timeout=20,
        )  # fmt: skip
    slurm_cluster.scancel(job.job_id)
    wait_status(run, "killed", timeout=20)
