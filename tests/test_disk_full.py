"""A full disk as the srat home: at run start, mid-run (metrics) and mid-checkpoint, for a
foreground and a detached run, on a real small filesystem (a tmpfs mounted per test).

Each ends with one line naming the file and the cause, exit code 1 (for a detached run: its
output.log, which the worker writes), no traceback, the previous checkpoint loadable, and
`srat runs ls` saying what the run directory says. Real `srat run` processes throughout; the
disk fills at the right moment through a `sitecustomize` the test puts on PYTHONPATH, which
wraps the engine's own metrics append in the run's processes (the CLI and the detached worker).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from fake_runs import TINY_RUN

from srat_engine.runs.index import RunIndex
from srat_engine.runs.rundir import RunDir
from srat_engine.training.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
CAUSE = "No space left on device"
FS_KIB = 1024  # each test's filesystem: room for a digits run's files and two checkpoints
PAGE = os.sysconf("SC_PAGE_SIZE")  # tmpfs allocates whole pages
RESERVE = 64 * 1024  # runs.rundir.RESERVE_BYTES
ENDED = ("finished", "failed", "killed", "dead")
# smaller epochs; the files written are a digits-ce run's (its robust accuracy not measured
# every epoch, so no best.pt beside last.pt)
FAST = [arg for item in TINY_RUN if item != "eval.robust_every=1" for arg in ("--set", item)]

# Fills the disk when an epoch's metrics line needs a new page, so that append is the write
# that fails (a line that still fits in the file's last page would be written); or just before
# state.json is written with a given status.
HOOK = """
import json, os
from pathlib import Path


def _fill(path):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while os.write(fd, bytes(64 * 1024)):
            pass
    except OSError:
        pass  # full
    finally:
        os.close(fd)


_spec = os.environ.get("SRAT_TEST_FILL_AT_METRICS")
if _spec:
    import srat_engine.fsutil as _fsutil

    _after, _filler = _spec.split(":", 1)
    _real_append = _fsutil.append_jsonl
    _page = os.sysconf("SC_PAGE_SIZE")

    def append_jsonl(path, record):
        if (
            path.name == "metrics.jsonl"
            and record.get("event") == "epoch"
            and record["epoch"] > int(_after)
            and not Path(_filler).exists()
        ):
            size = path.stat().st_size if path.exists() else 0
            allocated = -(-size // _page) * _page
            if size + len(json.dumps(record, separators=(",", ":"))) + 1 > allocated:
                _fill(_filler)
        _real_append(path, record)

    _fsutil.append_jsonl = append_jsonl

_spec = os.environ.get("SRAT_TEST_FILL_AT_STATE")
if _spec:
    import srat_engine.fsutil as _fsutil

    _status, _filler = _spec.split(":", 1)
    _real_write_json = _fsutil.atomic_write_json

    def atomic_write_json(path, data):
        if path.name == "state.json" and data.get("status") == _status:
            if not Path(_filler).exists():
                _fill(_filler)
        _real_write_json(path, data)

    _fsutil.atomic_write_json = atomic_write_json
"""


@dataclass
class SmallHome:
    """A srat home on its own small filesystem, and the environment that points srat at it."""

    mount: Path
    home: Path
    env: dict[str, str]

    def free(self) -> int:
        stat = os.statvfs(self.mount)
        return stat.f_bavail * stat.f_frsize

    def fill(self, leave: int) -> None:
        """Take all free space but `leave` bytes (rounded down to whole pages)."""
        size = max(self.free() - leave, 0) // PAGE * PAGE
        with (self.mount / "filler").open("wb") as handle:
            handle.write(bytes(size))

    def srat(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "srat_tui.cli", *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
        )

    def runs(self) -> list[Path]:
        root = self.home / "runs"
        return sorted(root.iterdir()) if root.is_dir() else []

    def listed(self) -> list[dict]:
        listing = self.srat("runs", "ls", "--json")
        assert listing.returncode == 0, listing.stderr
        return json.loads(listing.stdout)


def _try_mount(where: Path, kib: int) -> str | None:
    """Mount a tmpfs of `kib` KiB at `where`; the reason it could not be, or None."""
    if shutil.which("mount") is None:
        return "no mount command"
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(where)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except OSError as err:
        return f"mount failed: {err}"
    return None if done.returncode == 0 else f"mount not permitted: {done.stderr.strip()}"


@pytest.fixture
def small_home(tmp_path: Path) -> Iterator[SmallHome]:
    mount = tmp_path / "fs"
    mount.mkdir()
    reason = _try_mount(mount, FS_KIB)
    if reason is not None:
        pytest.skip(f"a small filesystem is needed for disk-full runs: {reason}")
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(textwrap.dedent(HOOK))
    env = {
        **os.environ,
        "SRAT_HOME": str(mount / "home"),
        "SRAT_DATA": str(tmp_path / "data"),  # datasets stay off the small filesystem
        "PYTHONPATH": os.pathsep.join([str(hook), str(REPO)]),
        "COLUMNS": "200",
    }
    env.pop("SRAT_PRESETS", None)
    try:
        yield SmallHome(mount=mount, home=mount / "home", env=env)
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory: pytest.TempPathFactory) -> int:
    """The size of a digits-ce checkpoint, from a real one-epoch run on an ordinary disk."""
    home = tmp_path_factory.mktemp("sizing-home")
    env = {**os.environ, "SRAT_HOME": str(home), "SRAT_DATA": str(home / "data")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "srat_tui.cli",
            "run",
            "-p",
            "digits-ce",
            *FAST,
            "-s",
            "train.epochs=1",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    (checkpoint,) = (home / "runs").glob("*/checkpoints/last.pt")
    return checkpoint.stat().st_size


def start_run(home: SmallHome, epochs: int, *, detach: bool) -> subprocess.CompletedProcess[str]:
    args = ["run", "-p", "digits-ce", *FAST, "--set", f"train.epochs={epochs}"]
    return home.srat(*args, *(["--detach", "--device", "cpu"] if detach else []))


def wait_until_ended(run: Path, timeout: float = 120.0) -> None:
    """Until the detached run's state.json says it ended and its worker process is gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = json.loads((run / "state.json").read_text()).get("status")
        except (OSError, ValueError):
            status = None
        pid = json.loads((run / "launch.json").read_text())["pid"]
        if status in ENDED and not _alive(pid):
            return
        time.sleep(0.2)
    raise AssertionError(f"run still {status} after {timeout:g} s: {(run / 'log.txt').read_text()}")


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def assert_one_line(text: str, file_name: str) -> str:
    """Exactly one non-empty line, naming `file_name` and the cause; no traceback."""
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert lines[0].startswith("error:"), lines[0]
    assert "could not write " in lines[0] and file_name in lines[0], lines[0]
    assert lines[0].endswith(CAUSE), lines[0]
    return lines[0]


def assert_failed_and_agreeing(home: SmallHome, run: Path, file_name: str) -> dict:
    """The run directory says `failed` with the cause, the list says the same, the previous
    checkpoint loads, and the failed write left nothing behind; returns the checkpoint."""
    state = json.loads((run / "state.json").read_text())
    ended = json.loads((run / "exit.json").read_text())
    assert state["status"] == ended["status"] == "failed"
    assert file_name in ended["error"] and ended["error"].endswith(CAUSE), ended
    (listed,) = home.listed()
    assert (listed["id"], listed["status"], listed["error"]) == (
        run.name,
        state["status"],
        ended["error"],
    )
    checkpoint = load_checkpoint(run / "checkpoints" / "last.pt")
    assert checkpoint["epoch"] >= 1
    # no temp file of the failed write, every metrics line whole, the reserve spent
    assert not list(run.rglob(".*.tmp")), list(run.rglob("*"))
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert all(isinstance(json.loads(line), dict) for line in lines)
    assert not (run / "space.reserve").exists()
    return checkpoint


@pytest.mark.parametrize("detach", [False, True], ids=["foreground", "detached"])
def test_disk_full_at_run_start(small_home: SmallHome, detach: bool) -> None:
    small_home.fill(leave=0)
    done = start_run(small_home, 2, detach=detach)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert_one_line(done.stderr, str(small_home.home / "runs"))
    assert small_home.runs() == []  # no half-created run
    assert small_home.listed() == []


@pytest.mark.parametrize("detach", [False, True], ids=["foreground", "detached"])
def test_disk_full_mid_checkpoint(
    small_home: SmallHome, checkpoint_bytes: int, detach: bool
) -> None:
    # room for the run's small files, its reserve and one and a half checkpoints: the first
    # checkpoint fits, the second fails halfway through (the first is still on disk)
    small_home.fill(leave=RESERVE + 32 * 1024 + checkpoint_bytes * 3 // 2)
    done = start_run(small_home, 3, detach=detach)
    (run,) = small_home.runs()
    if detach:
        assert done.returncode == 0, done.stderr
        wait_until_ended(run)
        assert_one_line((run / "output.log").read_text(), "checkpoints/last.pt")
    else:
        assert done.returncode == 1, (done.stdout, done.stderr)
        assert_one_line(done.stderr, "checkpoints/last.pt")
    checkpoint = assert_failed_and_agreeing(small_home, run, "checkpoints/last.pt")
    assert checkpoint["epoch"] == 1
    assert os.listdir(run / "checkpoints") == ["last.pt"]


@pytest.mark.parametrize("detach", [False, True], ids=["foreground", "detached"])
def test_disk_full_mid_run_at_the_metrics(small_home: SmallHome, detach: bool) -> None:
    # the disk fills up completely once an epoch after the second needs a new metrics block
    small_home.env["SRAT_TEST_FILL_AT_METRICS"] = f"2:{small_home.mount / 'filler'}"
    done = start_run(small_home, 12, detach=detach)
    (run,) = small_home.runs()
    if detach:
        assert done.returncode == 0, done.stderr
        wait_until_ended(run)
        assert_one_line((run / "output.log").read_text(), "metrics.jsonl")
    else:
        assert done.returncode == 1, (done.stdout, done.stderr)
        assert_one_line(done.stderr, "metrics.jsonl")
    assert (small_home.mount / "filler").exists()
    checkpoint = assert_failed_and_agreeing(small_home, run, "metrics.jsonl")
    lines = (run / "metrics.jsonl").read_text().splitlines()
    epochs = [json.loads(line)["epoch"] for line in lines]
    assert epochs == list(range(1, len(epochs) + 1)) and 2 <= len(epochs) < 12
    # the checkpoint is of the last recorded epoch or of the one whose metrics failed
    assert checkpoint["epoch"] in (epochs[-1], epochs[-1] + 1)


def test_disk_full_at_detached_launch(small_home: SmallHome) -> None:
    # the run is created and its worker started, then the disk fills before the launcher can
    # record it `queued`: the worker is stopped, and the run must not stay `created` (or
    # `queued` with no worker) and unlisted
    small_home.env["SRAT_TEST_FILL_AT_STATE"] = f"queued:{small_home.mount / 'filler'}"
    done = start_run(small_home, 2, detach=True)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert_one_line(done.stderr, "state.json")
    (run,) = small_home.runs()
    worker = json.loads((run / "launch.json").read_text())["pid"]
    assert not _alive(worker)  # stopped before it could write anything of its own
    state = json.loads((run / "state.json").read_text())
    ended = json.loads((run / "exit.json").read_text())
    assert state["status"] == ended["status"] == "failed" and ended["error"].endswith(CAUSE)
    (listed,) = small_home.listed()
    assert (listed["id"], listed["status"]) == (run.name, "failed")


def test_a_full_disk_still_lists_a_dead_run_as_dead(small_home: SmallHome) -> None:
    """Nothing can be written (not state.json, not the index), yet `srat runs ls` and `srat
    runs show` list the run whose process died, with the status its directory implies."""
    done = start_run(small_home, 1, detach=False)
    assert done.returncode == 0, done.stderr
    (run,) = small_home.runs()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    started = psutil.Process(gone.pid).create_time()
    gone.wait()
    state = json.loads((run / "state.json").read_text())
    state.update(status="running", pid=gone.pid, pid_start=started)
    (run / "state.json").write_text(json.dumps(state))
    (run / "exit.json").unlink()
    RunIndex(small_home.home / "index.json").refresh([RunDir(run)])  # listed as running
    small_home.fill(leave=0)
    (listed,) = small_home.listed()
    assert (listed["id"], listed["status"]) == (run.name, "dead")
    shown = small_home.srat("runs", "show", run.name, "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["summary"]["status"] == "dead"
    # nothing could be recorded: the next reading, with room again, records it
    assert json.loads((run / "state.json").read_text())["status"] == "running"
    (small_home.mount / "filler").unlink()
    small_home.listed()
    assert json.loads((run / "state.json").read_text())["status"] == "dead"
