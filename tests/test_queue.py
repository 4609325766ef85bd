"""A queue that costs nothing while it waits: 30 real detached workers behind a held slot stay
small (no torch before the slot), start in the order they were queued, and a batch with one
bad preset or override creates nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from cli_harness import Srat, make_invoker
from fake_runs import TINY_RUN

from srat_engine.jobs.slots import hold_slot, slots_for
from srat_engine.runs.home import Home
from srat_engine.runs.rundir import RunDir

TINY = (*TINY_RUN, "train.epochs=1")
QUEUED = 30
RAN = 3  # runs let through after the blocker goes; the rest are killed while still queued
MB = 2**20


@pytest.fixture
def srat(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Srat:
    return make_invoker(capsys, monkeypatch)


def write_presets(home: Path, names: list[str], body: str = 'extends = "digits-ce"\n') -> None:
    """User presets in the home's own preset folder (first on the search path after extras)."""
    folder = home / "presets"
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / f"{name}.toml").write_text(body, encoding="utf-8")


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def workers() -> Iterator[list[int]]:
    """Worker pids the test starts; whatever is left of them is SIGKILLed at the end."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if alive(pid):  # each worker leads its own process group
            os.killpg(pid, signal.SIGKILL)


def test_thirty_queued_runs_are_small_and_start_first_come_first_served(
    srat: Srat, srat_home: Path, workers: list[int]
) -> None:
    home = Home(srat_home)
    names = [f"q-{k:02d}" for k in range(QUEUED)]
    write_presets(srat_home, names)
    # the blocker: the only CPU slot, held (an fcntl lock, as a running run holds it)
    with hold_slot("0-blocker", slots_for(["cpu"], 1), root=home.slots, poll_seconds=0.05):
        result = srat(
            "run", "--preset", "q-*", *(f"--set={o}" for o in TINY),
            "--detach", "--device", "cpu", "--slots", "1", "--json",
        )  # fmt: skip
        assert result.code == 0, result.err
        launched = json.loads(result.out)
        workers.extend(entry["pid"] for entry in launched)
        assert [entry["source"] for entry in launched] == names
        runs = [RunDir.open(home.runs, entry["run_id"]) for entry in launched]
        tickets = [home.slots / "queue" / run.id for run in runs]

        def all_waiting() -> bool:
            for run, ticket in zip(runs, tickets, strict=True):
                pid = run.launch_record()["pid"]
                assert alive(pid), (run.path / "output.log").read_text()
                if run.state().get("pid") != pid or not ticket.exists():
                    return False
            return True

        wait_for(all_waiting, 60, f"{QUEUED} workers to queue for the held slot")
        processes = [psutil.Process(run.launch_record()["pid"]) for run in runs]
        rss = [p.memory_info().rss for p in processes]
        torch_loaded = [
            p.pid for p in processes if any("libtorch" in m.path for m in p.memory_maps())
        ]
        print(f"{QUEUED} waiting workers: {sum(rss) / MB:.0f} MB, max {max(rss) / MB:.0f} MB")
        assert torch_loaded == []  # torch comes only with the slot
        assert max(rss) < 80 * MB, [round(r / MB) for r in rss]
        assert sum(rss) < 2 * 1024 * MB
        assert {run.state()["status"] for run in runs} == {"queued"}
    # the blocker is gone: the queue drains one run at a time, oldest first
    wait_for(
        lambda: all(run.exit_record() is not None for run in runs[:RAN]),
        120,
        f"the first {RAN} queued runs to finish",
    )
    # the rest still waiting: each with an expected start and end (`jobs.forecast`), by the
    # finished runs' pace, in the order they were queued
    listed = srat("runs", "ls", "--json")
    assert listed.code == 0, listed.err
    waiting = [r for r in json.loads(listed.out) if r["status"] == "queued" and "starts" in r]
    assert len(waiting) >= QUEUED - RAN - 3, len(waiting)
    # (ISO seconds: a tiny run's training ends within the second it starts)
    assert all(r["ends"] is not None and r["ends"] >= r["starts"] for r in waiting), waiting[0]
    in_queue_order = sorted(waiting, key=lambda r: names.index(r["source"]))
    assert [r["starts"] for r in in_queue_order] == sorted(r["starts"] for r in waiting)
    for process in processes:
        if alive(process.pid):
            os.killpg(process.pid, signal.SIGTERM)
    wait_for(lambda: not any(alive(p.pid) for p in processes), 30, "the workers to stop")

    started = [run.state().get("started") for run in runs]
    ran = [k for k, when in enumerate(started) if when is not None]
    assert ran == list(range(len(ran))), ran  # the runs that got the slot are the oldest ones
    assert len(ran) >= RAN
    assert started[: len(ran)] == sorted(started[: len(ran)])
    for run in runs[: len(ran) - 1]:  # one slot: each ran to its end before the next began
        assert run.exit_record()["status"] == "finished", run.exit_record()
    for run in runs[len(ran) :]:
        assert run.exit_record()["status"] == "killed", run.exit_record()
        assert "while queued" in run.exit_record()["error"]


def test_waiters_are_served_by_queue_time_not_by_run_id(tmp_path: Path) -> None:
    """Run ids are to the second: a batch queued within one second is served in the order its
    launcher queued it (`queued_ns`), whatever the ids and the order the waiters registered."""
    root, log = tmp_path / "slots", tmp_path / "acquired.txt"
    code = (
        "import sys\nfrom pathlib import Path\n"
        "from srat_engine.jobs.slots import hold_slot, slots_for\n"
        "run_id, ns, root, log = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]\n"
        "with hold_slot(run_id, slots_for(['cpu'], 1), root=root, poll_seconds=0.02,"
        " queued_ns=ns):\n"
        "    open(log, 'a').write(run_id + '\\n')\n"
    )
    waiters = []
    with hold_slot("0-blocker", slots_for(["cpu"], 1), root=root, poll_seconds=0.02):
        for run_id, queued_ns in (("a", 3), ("m", 2), ("z", 1)):  # registered a, m, z
            waiters.append(
                subprocess.Popen(
                    [sys.executable, "-c", code, run_id, str(queued_ns), str(root), str(log)]
                )
            )
            ticket = root / "queue" / run_id
            wait_for(ticket.exists, 30, f"{run_id} to register its ticket")
    for waiter in waiters:
        assert waiter.wait(timeout=30) == 0
    assert log.read_text().split() == ["z", "m", "a"]


def test_waiting_worker_imports_nothing_heavy() -> None:
    """What `python -m srat_engine.jobs.worker` holds while it waits: no torch, numpy, sklearn,
    scipy or pandas (the training code is imported only once the slot is held)."""
    code = (
        "import sys, srat_engine.jobs.worker\n"
        "heavy = ('torch', 'torchvision', 'numpy', 'sklearn', 'scipy', 'pandas')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(heavy)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--preset", "b-*"), "train.epochs"),  # b-2 is broken: b-1 and b-3 are not created
        (("--preset", "b-1", "--preset", "b-nope"), "b-nope"),
        (("--preset", "b-[13]", "--set", "loss.sep_lambda=-1"), "loss.sep_lambda"),
        (("--preset", "b-[13]", "--set", "method=foo"), "method"),
    ],
    ids=["bad-preset", "unknown-preset", "bad-override", "bad-method"],
)
def test_one_bad_preset_or_override_rejects_the_whole_batch(
    srat: Srat, srat_home: Path, args: tuple[str, ...], fragment: str
) -> None:
    write_presets(srat_home, ["b-1", "b-3"])
    write_presets(srat_home, ["b-2"], 'extends = "digits-ce"\n[train]\nepochs = 0\n')
    result = srat("run", *args, "--detach", "--device", "cpu", "--slots", "1")
    assert result.code == 2, result
    lines = result.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.err
    assert fragment in lines[0], lines[0]
    assert sorted(path.name for path in srat_home.iterdir()) == ["presets"]  # no run, no index
