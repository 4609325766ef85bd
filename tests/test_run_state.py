"""Run state under faults, with real processes and real signals: concurrent writers of one run's
JSON files, a foreground run killed or hung up, and a kill at every point of an epoch's end."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from fake_runs import make_fake_run, prepare_from_env
from test_training import TINY
from textual.pilot import Pilot
from tui_harness import pinned_context, scenario, wait_for

from srat_engine.config.prepare import create_run
from srat_engine.config.schema import RunConfig
from srat_engine.errors import SratError
from srat_engine.runs.home import Home
from srat_engine.runs.rundir import RunDir
from srat_engine.runs.sync import record_in_index, refreshed_records
from srat_tui.tui.app import SratApp

REPO = Path(__file__).resolve().parent.parent


def env_for(home: Path) -> dict[str, str]:
    """The environment of a `srat` process on `home`, importing this checkout."""
    paths = [str(REPO), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "SRAT_HOME": str(home), "PYTHONPATH": os.pathsep.join(paths)}


def srat_cli(home: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`srat ARGS...` as a separate process on `home`."""
    return subprocess.run(
        [sys.executable, "-m", "srat_tui.cli", *args],
        env=env_for(home),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll until `condition` holds; the seconds it took (fail naming `what` after timeout)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if condition():
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# -- 1. lost updates -------------------------------------------------------------------------
# Worker `w` makes `count` writes to one run, cycling tag / note / state field; the first
# `cli` tag and note writes go through `srat runs tag` / `srat runs note` processes, the rest
# through the engine API. All workers start together (a go file), to collide as much as possible.
_WRITER = """
import os, subprocess, sys, time
from pathlib import Path
from srat_engine.runs.home import Home
from srat_engine.runs.rundir import RunDir
from srat_engine.runs.sync import add_note, set_tag
home_root, run_id, w, count, cli, go = sys.argv[1:7]
w, count, cli = int(w), int(count), int(cli)
home = Home(Path(home_root))
run = RunDir(home.runs / run_id)
Path(go + f".ready{w}").touch()
while not Path(go).exists():
    time.sleep(0.001)
done_cli = 0
for j in range(count):
    kind, word = j % 3, f"w{w}_{j}"
    if kind < 2 and done_cli < cli:
        verb = ["tag", run_id, f"t_{word}"] if kind == 0 else ["note", run_id, f"n_{word}"]
        subprocess.run([sys.executable, "-m", "srat_tui.cli", "runs", *verb], check=True,
                       stdout=subprocess.DEVNULL)
        done_cli += 1
    elif kind == 0:
        set_tag(run, f"t_{word}", index=home.index)
    elif kind == 1:
        add_note(run, f"n_{word}", index=home.index)
    else:
        run.write_state(**{f"s_{word}": j})
"""


def test_eight_processes_fifty_tag_note_state_writes_lose_nothing(srat_home: Path) -> None:
    workers, count, cli = 8, 50, 2  # 400 writes, 16 of them by `srat runs tag/note` processes
    home = Home(srat_home)
    doc = {"config": RunConfig().model_dump(mode="json"), "resolved": {}, "source": "test"}
    run = RunDir.create(home.runs, doc, run_id="contended")
    record_in_index(run, home.index)
    go = srat_home / "go"
    started = time.monotonic()
    args = [str(srat_home), run.id, "{w}", str(count), str(cli), str(go)]
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, *(a.format(w=w) for a in args)],
            env=env_for(srat_home),
            cwd=REPO,
        )
        for w in range(workers)
    ]
    wait_until(
        lambda: all(Path(f"{go}.ready{w}").exists() for w in range(workers)), 30, "the writers"
    )
    go.touch()
    codes = [process.wait(timeout=60) for process in processes]
    elapsed = time.monotonic() - started
    assert codes == [0] * workers, f"writer exit codes {codes}"

    words = [(f"w{w}_{j}", j) for w in range(workers) for j in range(count)]
    tags = {f"t_{word}" for word, j in words if j % 3 == 0}
    notes = {f"n_{word}" for word, j in words if j % 3 == 1}
    fields = {f"s_{word}": j for word, j in words if j % 3 == 2}
    meta, state = run.meta(), run.state()
    kept = (
        len(tags & set(meta["tags"]))
        + len(notes & set(meta["notes"]))
        + sum(state.get(key) == value for key, value in fields.items())
    )
    assert kept == workers * count, (
        f"{kept}/{workers * count} writes kept after {workers} processes x {count} "
        f"({elapsed:.1f} s): tags {len(tags & set(meta['tags']))}/{len(tags)}, notes "
        f"{len(notes & set(meta['notes']))}/{len(notes)}, state fields "
        f"{sum(state.get(k) == v for k, v in fields.items())}/{len(fields)}"
    )
    assert len(meta["tags"]) == len(tags) and len(meta["notes"]) == len(notes)  # no duplicates
    record = home.index.get(run.id)
    assert record is not None
    assert record["tags"] == meta["tags"], "the index lost tags the run directory holds"
    assert record["notes"] == meta["notes"], "the index lost notes the run directory holds"
    print(f"{kept}/{workers * count} writes kept in {elapsed:.1f} s")


# -- 2. a foreground run killed or hung up: every view says the same, at once -----------------
@pytest.fixture
def no_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """The TUI's GPU panel finds no GPU (the same screen on any machine)."""
    gpu_panel = pytest.importorskip("srat_tui.tui.widgets.gpu_panel")
    monkeypatch.setattr(gpu_panel, "probe_gpus", lambda: None)


FOREGROUND = ("--set", "train.epochs=30", "--set", "attack.steps=2", "--set", "eval.steps=2",
              "--device", "cpu")  # fmt: skip


def start_foreground(home: Path, log: Path) -> tuple[subprocess.Popen[bytes], RunDir]:
    """A real foreground `srat run` of 30 digits epochs; returns once it has recorded one."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "srat_tui.cli", "run", "-p", "digits-ce", *FOREGROUND],
            env=env_for(home),
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    runs = home / "runs"

    def one_epoch() -> bool:
        assert process.poll() is None, log.read_text()
        found = list(runs.iterdir()) if runs.is_dir() else []
        return len(found) == 1 and any(r["event"] == "epoch" for r in RunDir(found[0]).metrics())

    wait_until(one_epoch, 60, "the foreground run's first epoch")
    (path,) = runs.iterdir()
    return process, RunDir(path)


def tui_status(home: Path, run_id: str) -> str:
    """The status the TUI's runs screen shows for the run after its first load."""
    shown: list[str] = []

    @scenario
    async def look() -> None:
        app = SratApp(pinned_context(home))
        async with app.run_test(size=(160, 40)) as pilot:
            await wait_for(pilot, lambda: _loaded(pilot), "the runs screen")
            screen = app.runs_screen
            assert screen is not None
            shown.append(str(screen.table.get_cell(run_id, "status")))

    look()
    return shown[0]


def _loaded(pilot: Pilot[Any]) -> bool:
    screen = pilot.app.runs_screen  # type: ignore[attr-defined]
    return screen is not None and screen.loaded


@pytest.mark.usefixtures("no_gpus")
@pytest.mark.parametrize(
    ("signum", "expected"),
    [(signal.SIGKILL, "dead"), (signal.SIGHUP, "killed")],
    ids=["kill-9", "hup"],
)
def test_a_stopped_foreground_run_has_one_status_everywhere(
    srat_home: Path, tmp_path: Path, signum: int, expected: str
) -> None:
    process, run = start_foreground(srat_home, tmp_path / "run.out")
    listed = Home(srat_home).index.get(run.id)
    assert listed is not None and listed["status"] == "running"  # listed as running at once
    os.kill(process.pid, signum)
    code = process.wait(timeout=30)
    # as a shell reports a process the signal ended: 128 + its number (129 for SIGHUP)
    assert code == (-signum if signum == signal.SIGKILL else 128 + signum)
    # Each view gets its own copy of the home as the signal left it: each must find the
    # status in its one call, not after another view has reconciled the run.
    homes = {view: tmp_path / view for view in ("ls", "show", "tui")}
    for copy in homes.values():
        shutil.copytree(srat_home, copy)

    listing = srat_cli(homes["ls"], "runs", "ls", "--json")
    assert listing.returncode == 0, listing.stderr
    assert {r["id"]: r["status"] for r in json.loads(listing.stdout)}[run.id] == expected

    shown = srat_cli(homes["show"], "runs", "show", "--json", run.id)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["summary"]["status"] == expected
    # and the list agrees with the detail view afterwards
    again = json.loads(srat_cli(homes["show"], "runs", "ls", "--json").stdout)
    assert {r["id"]: r["status"] for r in again}[run.id] == expected

    assert tui_status(homes["tui"], run.id) == expected
    if expected == "killed":
        exit_record = RunDir(homes["ls"] / "runs" / run.id).exit_record()
        assert exit_record is not None and exit_record["error"] == "stopped by SIGHUP"


# -- 3. a kill at every point of an epoch's end -----------------------------------------------
# Trains a run with the real save_checkpoint / append_metrics / write_state, each wrapped to
# SIGKILL this process right after the real call of epoch k: wherever the kill lands in an
# epoch's end, a resume must leave every epoch recorded once and the same results.
_KILLED_AT = """
import os, signal, sys
from pathlib import Path
import srat_engine.training.trainer as trainer
from srat_engine.runs.rundir import RunDir
run_path, point, k = sys.argv[1], sys.argv[2], int(sys.argv[3])
def die():
    os.kill(os.getpid(), signal.SIGKILL)
real_save, real_append = trainer.save_checkpoint, RunDir.append_metrics
real_state = RunDir.write_state
def save_checkpoint(path, state):
    real_save(path, state)
    if point == "checkpoint" and state["epoch"] == k:
        die()
def append_metrics(self, record):
    real_append(self, record)
    if point == "metrics" and record.get("event") == "epoch" and record.get("epoch") == k:
        die()
def write_state(self, **fields):
    state = real_state(self, **fields)
    if point == "state" and fields.get("epoch") == k:
        die()
    return state
trainer.save_checkpoint = save_checkpoint
RunDir.append_metrics, RunDir.write_state = append_metrics, write_state
trainer.execute(RunDir(Path(run_path)))
sys.exit(3)  # not killed: the test's point was never reached
"""

# The uninterrupted reference run (the first path), then a resume of every other run.
_RESUME = """
import sys
from pathlib import Path
from srat_engine.runs.rundir import RunDir
from srat_engine.training.trainer import execute
straight, *killed = sys.argv[1:]
execute(RunDir(Path(straight)))
for path in killed:
    execute(RunDir(Path(path)), resume=True)
"""

# (point, epoch k, train.checkpoint_every), for 4 epochs: after the metrics append, after
# the checkpoint and after the state write of a checkpointed epoch; after the metrics of an
# epoch that is not checkpointed (checkpoint_every 2); after the last epoch's checkpoint.
KILL_POINTS = [
    ("metrics", 2, 1),
    ("checkpoint", 2, 1),
    ("state", 2, 1),
    ("metrics", 3, 2),
    ("checkpoint", 4, 1),
]
_TIMING = ("time", "train_seconds", "eval_seconds")


def _results(run: RunDir) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The epoch records and the final record, without their timings."""
    records = [{k: v for k, v in r.items() if k not in _TIMING} for r in run.metrics()]
    finals = [r for r in records if r["event"] == "final"]
    assert len(finals) == 1, f"{len(finals)} final records in {run.id}"
    return [r for r in records if r["event"] == "epoch"], finals[0]


def test_a_kill_at_any_point_of_an_epochs_end_loses_and_repeats_no_epoch(
    tmp_path: Path,
) -> None:
    def tiny(name: str, checkpoint_every: int) -> RunDir:
        overrides = (*TINY, "method=SRAT-LDAM", f"train.checkpoint_every={checkpoint_every}")
        return create_run(prepare_from_env("digits-ce", overrides), tmp_path / name)

    straight = tiny("straight", 1)
    killed = {point: tiny(f"{point[0]}-{point[1]}-{point[2]}", point[2]) for point in KILL_POINTS}
    env = env_for(tmp_path)
    started = time.monotonic()
    drivers = {
        point: subprocess.Popen(
            [sys.executable, "-c", _KILLED_AT, str(run.path), point[0], str(point[1])],
            env=env,
            cwd=REPO,
        )
        for point, run in killed.items()
    }
    for point, driver in drivers.items():
        assert driver.wait(timeout=120) == -signal.SIGKILL, f"{point}: not killed there"
    subprocess.run(
        [
            sys.executable,
            "-c",
            _RESUME,
            str(straight.path),
            *(str(r.path) for r in killed.values()),
        ],
        env=env,
        cwd=REPO,
        check=True,
        timeout=300,
    )
    elapsed = time.monotonic() - started

    epochs, final = _results(straight)
    assert [r["epoch"] for r in epochs] == [1, 2, 3, 4]
    for point, run in killed.items():
        resumed_epochs, resumed_final = _results(run)
        assert [r["epoch"] for r in resumed_epochs] == [1, 2, 3, 4], f"killed at {point}"
        assert resumed_epochs == epochs, f"killed at {point}: epoch records differ"
        assert resumed_final == final, f"killed at {point}: final metrics differ"
        assert [r["event"] for r in run.metrics()].count("resume") == 1
        assert run.exit_record()["status"] == "finished"
    print(f"{len(KILL_POINTS)} kill points, killed + resumed + reference in {elapsed:.1f} s")


def test_drop_epochs_after_keeps_every_other_line_as_it_was(tmp_path: Path) -> None:
    doc = {"config": RunConfig().model_dump(mode="json"), "resolved": {}, "source": "test"}
    run = RunDir.create(tmp_path, doc, run_id="trim")
    lines = [
        '{"event":"epoch","epoch":1}\n',
        '{"event": "epoch", "epoch": 2, "loss": 0.5}\n',  # spacing kept: bytes are not re-dumped
        '{"event":"epoch","epoch":3}\n',
        '{"event":"resume","from_epoch":2}\n',
        '{"event":"epoch","epoch":"4"}\n',  # not an integer epoch: not a record to drop
        '{"event":"epoch","epo\n',  # a torn line stays for readers to skip
        '{"event":"epoch","epoch":4}\n',
        '{"event":"final","epoch":9}\n',
    ]
    run.metrics_path.write_text("".join(lines))
    assert run.drop_epochs_after(2) == 2
    assert run.metrics_path.read_text() == "".join(lines[i] for i in (0, 1, 3, 4, 5, 7))
    assert run.drop_epochs_after(2) == 0
    assert run.drop_epochs_after(0) == 2
    assert run.metrics_path.read_text() == "".join(lines[i] for i in (3, 4, 5, 7))
    assert not list(tmp_path.glob("trim/.metrics.jsonl.*.tmp"))


@pytest.mark.parametrize("state_status", ["running", "queued"])
def test_a_record_listed_as_created_is_read_again_from_its_directory(
    srat_home: Path, state_status: str
) -> None:
    """The index says created (a foreground run indexed before it started); state.json says it
    ran, with a process that is gone: the listing finds it dead in one call."""
    home = Home(srat_home)
    doc = {"config": RunConfig().model_dump(mode="json"), "resolved": {}, "source": "test"}
    run = RunDir.create(home.runs, doc, run_id="started")
    record_in_index(run, home.index)
    process = subprocess.Popen(["sleep", "60"])
    started = psutil.Process(process.pid).create_time()
    process.kill()
    process.wait()
    run.write_state(status=state_status, pid=process.pid, pid_start=started)
    listed = {r["id"]: r["status"] for r in refreshed_records(home.index, home.runs)}
    assert listed["started"] == "dead"
    assert home.index.get("started")["status"] == "dead"  # type: ignore[index]
    assert run.state()["status"] == "dead"


def test_a_kill_mid_checkpoint_write_is_a_kill_and_leaves_the_checkpoint_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM while torch.save writes: the stop waits for the file (whole, loadable) and is
    then raised as RunInterrupted; cut mid-write, torch's writer raised a RuntimeError of its
    own ("unexpected pos") and the run recorded `failed` (seen in a Slurm scancel test)."""
    import torch

    from srat_engine import fsutil
    from srat_engine.errors import RunInterrupted, raise_interrupted
    from srat_engine.training.checkpoint import load_checkpoint, save_checkpoint

    sent: list[int] = []
    original = fsutil._RecordingWriter.write

    def write_and_be_killed(self: Any, data: bytes) -> int:
        if not sent:  # the first chunk torch.save writes
            sent.append(signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, data)

    monkeypatch.setattr(fsutil._RecordingWriter, "write", write_and_be_killed)
    previous = signal.signal(signal.SIGTERM, raise_interrupted)
    try:
        path = tmp_path / "last.pt"
        with pytest.raises(RunInterrupted, match="SIGTERM"):
            save_checkpoint(path, {"model": {"w": torch.arange(4.0)}, "epoch": 3})
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert sent and load_checkpoint(path)["model"]["w"].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert signal.getsignal(signal.SIGTERM) is previous


@pytest.mark.parametrize("status", ["finished", "failed", "killed"])
def test_an_ended_status_is_never_read_without_its_exit_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, status: str
) -> None:
    """record_end writes exit.json before state.json says the run ended: a reader that sees
    "finished" (and then reads the final metrics or the error) always finds them. Seen once
    the other way round: a detached run's test read status finished, then exit.json None."""
    doc = {"config": RunConfig().model_dump(mode="json"), "resolved": {}, "source": "test"}
    run = RunDir.create(tmp_path, doc, run_id="ending")
    run.write_state(status="running")
    seen: list[tuple[str, dict[str, Any] | None]] = []
    write_state = RunDir.write_state

    def watched(self: RunDir, **fields: Any) -> dict[str, Any]:
        if "status" in fields:
            seen.append((fields["status"], self.exit_record()))
        return write_state(self, **fields)

    monkeypatch.setattr(RunDir, "write_state", watched)
    run.record_end(status, error=None if status == "finished" else "boom")
    assert len(seen) == 1
    written, exit_record = seen[0]
    assert written == status
    assert exit_record is not None and exit_record["status"] == status


@pytest.mark.parametrize("damage", ['{"oops', "[1, 2]", '{"pid": 3}', None])
def test_a_damaged_state_file_reads_as_the_exit_record_says(
    srat_home: Path, damage: str | None
) -> None:
    """state.json unreadable, wrongly shaped, without a status or gone: an ended run's status is
    its exit record's, so `srat runs resume` takes a killed run (it said "is unknown")."""
    from srat_engine.jobs.supervisor import check_resumable
    from srat_engine.runs.liveness import reconcile

    run = make_fake_run(srat_home / "runs", "run-k", status="running", epochs_done=2)
    run.record_end("killed", error="stopped by SIGTERM", log="killed")
    if damage is None:
        (run.path / "state.json").unlink()
    else:
        (run.path / "state.json").write_text(damage)
    assert reconcile(run) == "killed"
    check_resumable(run)  # no SratError
    (run.path / "exit.json").unlink()  # nothing says how it ended: unknown, and not resumed
    assert reconcile(run) == "unknown"
    with pytest.raises(SratError, match=r"status is unknown .*it is not resumed"):
        check_resumable(run)
