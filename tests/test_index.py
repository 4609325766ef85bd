"""The run index under concurrent writers, SIGKILL mid-write, corruption and rebuilds."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from srat_engine.config.schema import RunConfig
from srat_engine.errors import SratError
from srat_engine.runs.home import Home
from srat_engine.runs.index import RunIndex, reindex
from srat_engine.runs.rundir import RunDir

REPO = Path(__file__).resolve().parent.parent


def make_index(tmp_path: Path, **kwargs: Any) -> RunIndex:
    return RunIndex(tmp_path / "home" / "index.json", **kwargs)


def make_run(root: Path, run_id: str, **config: Any) -> RunDir:
    """A run directory with a real validated config (no torch, no data needed)."""
    doc = {
        "config": RunConfig(**config).model_dump(mode="json"),
        "resolved": {},
        "source": "test",
        "created": "2024-06-01T10:00:00+00:00",
    }
    return RunDir.create(root, doc, run_id=run_id)


# -- basics ----------------------------------------------------------------------------------
def test_upsert_get_remove_all(tmp_path: Path) -> None:
    index = make_index(tmp_path)
    assert index.all() == [] and index.get("a") is None  # no file yet: empty, nothing created
    assert not index.path.exists()

    index.upsert({"id": "a", "status": "created", "epoch": 0})
    index.upsert({"id": "b", "status": "running", "tags": ["x"]})
    assert index.get("a") == {"id": "a", "status": "created", "epoch": 0}
    assert sorted(r["id"] for r in index.all()) == ["a", "b"]

    index.remove("a")
    index.remove("never-indexed")
    assert index.get("a") is None
    assert index.all() == [{"id": "b", "status": "running", "tags": ["x"]}]
    assert json.loads(index.path.read_text()) == {
        "runs": {"b": {"id": "b", "status": "running", "tags": ["x"]}}
    }


def test_upsert_merges_fields(tmp_path: Path) -> None:
    index = make_index(tmp_path)
    index.upsert({"id": "a", "status": "running", "epoch": 3, "tags": ["paper"]})
    index.upsert({"id": "a", "status": "finished", "epoch": 4})
    assert index.get("a") == {"id": "a", "status": "finished", "epoch": 4, "tags": ["paper"]}
    assert len(index.all()) == 1


def test_upsert_many_merges_in_one_write(tmp_path: Path) -> None:
    index = make_index(tmp_path)
    index.upsert({"id": "a", "status": "running", "notes": ["n"]})
    index.upsert_many([{"id": "a", "status": "dead"}, {"id": "b", "status": "queued"}])
    assert index.get("a") == {"id": "a", "status": "dead", "notes": ["n"]}
    assert index.get("b") == {"id": "b", "status": "queued"}


def test_records_need_an_id(tmp_path: Path) -> None:
    index = make_index(tmp_path)
    for bad in ({}, {"id": ""}, {"id": 3}):
        with pytest.raises(SratError, match="'id'"):
            index.upsert(bad)
    with pytest.raises(SratError, match="'id'"):
        index.replace_all([{"id": "a"}, {"status": "x"}])


def test_the_home_of_the_environment_holds_its_index_and_folders(srat_home: Path) -> None:
    home = Home.from_env()
    assert home.root == srat_home
    folders = (home.runs, home.slots, home.trash, home.sweeps)
    assert folders == tuple(srat_home / name for name in ("runs", "slots", "trash", "sweeps"))
    index = home.index
    assert index.path == srat_home / "index.json"
    index.upsert({"id": "a"})
    assert (srat_home / "index.json").is_file() and (srat_home / "index.json.lock").exists()


def test_replace_all_is_exact_and_keeps_insertion_order(tmp_path: Path) -> None:
    index = make_index(tmp_path)
    index.upsert({"id": "old", "status": "finished"})
    index.replace_all([{"id": f"r{i}", "i": i} for i in range(5)])
    assert [r["id"] for r in index.all()] == [f"r{i}" for i in range(5)]
    assert index.get("old") is None


# -- many writer processes -------------------------------------------------------------------
def _upsert_worker(path: str, worker: int, count: int, barrier: Any) -> None:
    index = RunIndex(Path(path))
    barrier.wait()  # every process starts writing at the same moment
    for i in range(count):
        index.upsert({"id": f"w{worker}-{i:03d}", "worker": worker, "i": i, "status": "running"})


def test_eight_processes_fifty_upserts_each_lose_nothing(tmp_path: Path) -> None:
    workers, count = 8, 50
    index = make_index(tmp_path)
    index.path.parent.mkdir(parents=True)
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(workers)
    processes = [
        context.Process(target=_upsert_worker, args=(str(index.path), w, count, barrier))
        for w in range(workers)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=50)
    exit_codes = [process.exitcode for process in processes]
    assert exit_codes == [0] * workers, f"worker exit codes {exit_codes}"

    document = json.loads(index.path.read_text())  # valid JSON, not only parseable by us
    records = index.all()
    expected = {f"w{w}-{i:03d}" for w in range(workers) for i in range(count)}
    found = {r["id"] for r in records}
    missing = sorted(expected - found)
    assert found == expected and len(records) == len(expected), (
        f"{len(found & expected)}/{len(expected)} records present after {workers} processes "
        f"x {count} upserts; missing {missing[:10]}; unexpected {sorted(found - expected)[:10]}"
    )
    assert len(document["runs"]) == workers * count
    assert all(r == index.get(r["id"]) for r in records[:: count - 1])
    assert all(r["id"] == f"w{r['worker']}-{r['i']:03d}" for r in records)


def test_threads_sharing_one_index_object(tmp_path: Path) -> None:
    index = make_index(tmp_path)

    def write(worker: int) -> None:
        for i in range(25):
            index.upsert({"id": f"t{worker}-{i}"})

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(index.all()) == 100, f"{len(index.all())}/100 records after 4 threads x 25"


# -- SIGKILL while writing -------------------------------------------------------------------
# Appends each id to the side file only after upsert() returned: those ids were committed.
# With a pause count N, the N-th os.replace (the commit of a write) first parks the writer,
# its temp file complete and the lock held, so the kill lands exactly mid-write.
_WRITER = """
import os, sys, time
from pathlib import Path
from srat_engine.runs.index import RunIndex
path, side_path, prefix, pause_at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
replace, calls = os.replace, [0]
def parking_replace(src, dst):
    calls[0] += 1
    if calls[0] == pause_at:
        Path(side_path + ".paused").touch()
        time.sleep(600)
    replace(src, dst)
os.replace = parking_replace
index = RunIndex(Path(path))
side = os.open(side_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
Path(side_path + ".ready").touch()
i = 0
while True:
    run_id = f"{prefix}-{i}"
    index.upsert({"id": run_id, "status": "running", "epoch": i, "note": "x" * 200})
    os.write(side, (run_id + "\\n").encode())
    i += 1
"""


def _spawn(code: str, *args: str) -> subprocess.Popen[bytes]:
    paths = [str(REPO), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, cwd=REPO)


def _wait_for(path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout} s"
        time.sleep(0.02)


def test_sigkill_mid_write_keeps_every_committed_record(tmp_path: Path) -> None:
    index = make_index(tmp_path, timeout=10)
    base = [{"id": f"base-{i}", "status": "finished", "pad": "y" * 300} for i in range(1500)]
    index.replace_all(base)  # a sizeable file: each write takes a while
    side = tmp_path / "committed.txt"
    # 0: killed after 0.5 s wherever it is; N: killed parked inside its N-th write
    pauses = (0, 0, 5, 0, 2)
    parked_with_temp_file, committed = 0, []
    for round_, pause_at in enumerate(pauses):
        writer = _spawn(_WRITER, str(index.path), str(side), f"k{round_}", str(pause_at))
        try:
            _wait_for(Path(f"{side}.ready"))
            if pause_at:
                _wait_for(Path(f"{side}.paused"))
            else:
                time.sleep(0.5)
        finally:
            writer.send_signal(signal.SIGKILL)
            writer.wait(timeout=10)
        for marker in (".ready", ".paused"):
            Path(f"{side}{marker}").unlink(missing_ok=True)
        assert writer.returncode == -signal.SIGKILL
        orphans = list(index.path.parent.glob(".index.json.*.tmp"))
        parked_with_temp_file += bool(pause_at and orphans)

        json.loads(index.path.read_text())
        started = time.monotonic()
        present = {r["id"] for r in index.all()}
        index.upsert({"id": f"after-kill-{round_}"})  # the dead writer's lock must not block
        waited = time.monotonic() - started
        committed = side.read_text().split()
        lost = [run_id for run_id in committed if run_id not in present]
        assert not lost, f"{len(lost)}/{len(committed)} committed records lost: {lost[:10]}"
        assert waited < 5, f"the next write waited {waited:.1f} s behind a killed writer"
        if pause_at:
            assert f"k{round_}-{pause_at - 1}" not in present  # its commit never happened
            assert f"k{round_}-{pause_at - 2}" in present

    parked = sum(1 for p in pauses if p)
    assert parked_with_temp_file == parked, f"{parked_with_temp_file}/{parked} mid-write kills"
    document = json.loads(index.path.read_text())
    written = {run_id for run_id in document["runs"] if run_id.startswith("k")}
    unreported = written - set(committed)  # committed, killed before it could say so
    assert len(unreported) <= len(pauses) - parked, f"unexpected records {sorted(unreported)}"
    assert len(document["runs"]) == len(base) + len(written) + len(pauses)
    assert len(committed) >= len(pauses), f"only {len(committed)} upserts committed"
    assert not any(index.path.parent.glob(".index.json.*.tmp")), "orphan temp files remain"
    print(f"kill -9: {len(pauses)} kills ({parked} mid-write), {len(committed)} committed, 0 lost")


_HOLDER = """
import sys, time
from filelock import FileLock
lock = FileLock(sys.argv[1])
lock.acquire()
open(sys.argv[2], "w").close()
time.sleep(600)
"""


def test_lock_of_a_killed_holder_does_not_block(tmp_path: Path) -> None:
    index = make_index(tmp_path, timeout=3)
    index.upsert({"id": "a"})
    ready = tmp_path / "locked"
    holder = _spawn(_HOLDER, str(index.lock_path), str(ready))
    try:
        _wait_for(ready)
        blocked = make_index(tmp_path, timeout=0.3)
        with pytest.raises(SratError, match="held"):
            blocked.upsert({"id": "b"})  # the lock really is held while the holder lives
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
    assert index.lock_path.exists()  # the stale lock file is still there ...
    index.upsert({"id": "b"})  # ... and does not block
    assert {r["id"] for r in index.all()} == {"a", "b"}


# -- corruption and rebuild ------------------------------------------------------------------
@pytest.mark.parametrize(
    "content",
    # "" and blanks: a truncated file, which read as an empty index hid every run
    ['{"runs": {"a": {"id": "a"}', "not json at all", "[1, 2]", '{"runs": [1]}', "", " \n"],
)
def test_corrupt_index_raises_and_is_left_alone(tmp_path: Path, content: str) -> None:
    index = make_index(tmp_path)
    index.path.parent.mkdir(parents=True)
    index.path.write_text(content)
    for read in (index.all, lambda: index.get("a"), lambda: index.upsert({"id": "b"})):
        with pytest.raises(SratError, match=r"is corrupt.*srat runs reindex"):
            read()
    with pytest.raises(SratError, match="corrupt"):
        index.remove("a")
    assert index.path.read_text() == content  # a write never overwrites what it cannot read


def test_reindex_repairs_a_corrupt_index_with_tags_and_notes(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    a = make_run(root, "run-a", method="CE", seed=0)
    b = make_run(root, "run-b", method="CE", seed=1)
    c = make_run(root, "run-c", method="SRAT-LDAM")
    a.write_meta(["paper", "table1"], ["first try"])
    c.write_meta([], ["lr too high", "rerun with 0.05"])
    b.write_state(status="finished")
    (root / "not-a-run").mkdir()  # no config.json: skipped
    (root / "Bad Name").mkdir()  # not a run id: skipped
    (root / "Bad Name" / "config.json").write_text("{}")

    index = make_index(tmp_path)
    index.path.parent.mkdir(parents=True)
    index.path.write_text('{"runs": {"run-a": {"id": "run-a", "tags": ["lost"')
    with pytest.raises(SratError, match="corrupt"):
        index.all()

    assert reindex(root, index) == 3
    records = {r["id"]: r for r in index.all()}
    assert set(records) == {"run-a", "run-b", "run-c"}
    assert records["run-a"]["tags"] == ["paper", "table1"]
    assert records["run-a"]["notes"] == ["first try"]
    assert records["run-c"]["notes"] == ["lr too high", "rerun with 0.05"]
    assert records["run-b"]["status"] == "finished" and records["run-c"]["status"] == "created"
    assert records["run-a"]["config_key"] == records["run-b"]["config_key"]
    assert records["run-a"]["config_key"] != records["run-c"]["config_key"]
    json.loads(index.path.read_text())


def test_reindex_drops_runs_whose_directory_is_gone(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    make_run(root, "run-a")
    index = make_index(tmp_path)
    index.upsert({"id": "deleted-run", "status": "finished"})
    assert reindex(root, index) == 1
    assert [r["id"] for r in index.all()] == ["run-a"]
    assert reindex(tmp_path / "no-such-dir", index) == 0
    assert index.all() == []
