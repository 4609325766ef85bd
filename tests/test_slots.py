"""Device slots: kernel-lock exclusivity, release on SIGKILL, FIFO tickets, holders.

Every multi-process test runs slot holders and waiters as forked child processes (never the
test process itself, so no lock fd is inherited by a child) with `root=tmp_path`; each child
appends `<run id> <slot name>` to a shared file the moment it acquires a slot.
"""

from __future__ import annotations

import fcntl
import json
import multiprocessing as mp
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import pytest

from srat_engine.jobs.slots import Slot, hold_slot, slots_for

POLL = 0.05
CTX = mp.get_context("fork")


def slot_holders(root: Path) -> dict[str, str]:
    """Slot name -> run id for every slot whose lock a live process holds (a test observer:
    srat itself never asks; the lock file keeps the last holder's id after it lets go)."""
    holders: dict[str, str] = {}
    for path in sorted(root.glob("*.lock")):
        fd = os.open(path, os.O_RDWR)  # a separate open file: flock sees even our own holds
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holders[path.stem] = path.read_text().strip()
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
    return holders


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll `condition` until it holds; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)


def _child(
    root: Path,
    run_id: str,
    devices: list[str],
    per_device: int,
    poll: float,
    log: Path,
    waits: Any,
    release: Path | None,
) -> None:
    def on_wait() -> None:
        waits.value += 1  # this process is its only writer

    candidates = slots_for(devices, per_device)
    with hold_slot(run_id, candidates, poll_seconds=poll, on_wait=on_wait, root=root) as slot:
        with log.open("a", encoding="utf-8") as handle:
            handle.write(f"{run_id} {slot.name}\n")
        deadline = time.monotonic() + 60
        while release is not None and not release.exists() and time.monotonic() < deadline:
            time.sleep(0.005)


@dataclass
class Child:
    run_id: str
    process: BaseProcess
    waits: Any  # a lock-free shared int: a SIGKILLed child must not die holding a lock
    release_file: Path | None

    def release(self) -> None:
        """Let a holder give its slot back (a file, not an mp.Event: see `waits`)."""
        assert self.release_file is not None
        self.release_file.touch()

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def has_waited(self, times: int = 1) -> bool:
        """It has found its slot taken (or deferred to an older ticket) `times` times."""
        return self.waits.value >= times


class Slots:
    """Starts holder/waiter processes on one slot root and reads who acquired what."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.log = root / "acquired.txt"
        self.children: list[Child] = []

    def start(
        self,
        run_id: str,
        devices: tuple[str, ...] = ("cpu",),
        per_device: int = 1,
        *,
        hold: bool = False,
        poll: float = POLL,
    ) -> Child:
        """A process waiting for a slot; with `hold` it keeps it until `Child.release()`."""
        waits = CTX.Value("i", 0, lock=False)
        release = self.root / f"release-{run_id}" if hold else None
        process = CTX.Process(
            target=_child,
            args=(self.root, run_id, list(devices), per_device, poll, self.log, waits, release),
            daemon=True,
        )
        process.start()
        child = Child(run_id, process, waits, release)
        self.children.append(child)
        return child

    def acquired(self) -> list[str]:
        """`<run id> <slot>` lines in acquisition order."""
        if not self.log.exists():
            return []
        return self.log.read_text(encoding="utf-8").splitlines()

    def acquired_ids(self) -> list[str]:
        return [line.split()[0] for line in self.acquired()]

    def holding(
        self, run_id: str, devices: tuple[str, ...] = ("cpu",), per_device: int = 1
    ) -> Child:
        """Start a holder and wait until it has its slot."""
        child = self.start(run_id, devices, per_device, hold=True)
        wait_for(lambda: run_id in self.acquired_ids(), f"{run_id} to acquire a slot")
        return child

    def tickets(self) -> list[str]:
        queue = self.root / "queue"
        return sorted(p.name for p in queue.iterdir()) if queue.is_dir() else []

    def stop_all(self) -> None:
        for child in self.children:
            if child.release_file is not None:
                child.release()
        for child in self.children:
            child.process.join(timeout=5)
            if child.process.is_alive():
                os.kill(child.pid, signal.SIGKILL)
                child.process.join(timeout=5)


@pytest.fixture
def slots(tmp_path: Path) -> Iterator[Slots]:
    manager = Slots(tmp_path / "slots")
    manager.root.mkdir()
    try:
        yield manager
    finally:
        manager.stop_all()


def finished(child: Child) -> bool:
    return not child.process.is_alive()


# --- names ----------------------------------------------------------------------------------


def test_slots_for_names_every_slot_per_device() -> None:
    names = [slot.name for slot in slots_for(["cuda:0", "cuda:1"], 2)]
    assert names == ["cuda0-0", "cuda0-1", "cuda1-0", "cuda1-1"]
    assert slots_for(["cuda:1"], 1) == [Slot("cuda:1", 0)]
    assert [slot.name for slot in slots_for(["cpu"], 3)] == ["cpu-0", "cpu-1", "cpu-2"]


# --- exclusivity ----------------------------------------------------------------------------


def test_second_process_waits_for_the_only_slot_until_it_is_released(slots: Slots) -> None:
    holder = slots.holding("h")
    waiter = slots.start("w")
    wait_for(
        lambda: waiter.has_waited(3) or len(slots.acquired()) > 1,
        "the second process to poll the taken slot",
    )
    assert slots.acquired() == ["h cpu-0"], "the second process took a slot that was held"
    assert slot_holders(slots.root) == {"cpu-0": "h"}

    holder.release()
    wait_for(lambda: len(slots.acquired()) == 2, "the waiter to get the released slot")
    assert slots.acquired() == ["h cpu-0", "w cpu-0"]
    wait_for(lambda: finished(waiter), "the waiter to exit")
    assert waiter.process.exitcode == 0


def test_two_slots_serve_two_processes_at_once(slots: Slots) -> None:
    slots.holding("h1", per_device=2)
    slots.holding("h2", per_device=2)
    assert sorted(slots.acquired()) == ["h1 cpu-0", "h2 cpu-1"]
    assert slot_holders(slots.root) == {"cpu-0": "h1", "cpu-1": "h2"}


def test_sigkilled_holder_releases_its_slot(slots: Slots) -> None:
    holder = slots.holding("h")
    waiter = slots.start("w")
    wait_for(lambda: waiter.has_waited(), "the waiter to queue")
    assert slots.acquired_ids() == ["h"]

    os.kill(holder.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    wait_for(lambda: "w" in slots.acquired_ids(), "the waiter to take the dead holder's slot")
    elapsed = time.monotonic() - killed_at
    holder.process.join(timeout=5)
    assert holder.process.exitcode == -signal.SIGKILL
    # nothing to clean up: the kernel dropped the lock, the waiter saw it at its next polls
    assert elapsed < 10 * POLL, f"took {elapsed:.2f} s (poll interval {POLL} s)"
    assert slots.acquired() == ["h cpu-0", "w cpu-0"]


# --- first come, first served ---------------------------------------------------------------


def test_waiters_acquire_in_ticket_order(slots: Slots) -> None:
    holder = slots.holding("0-holder")
    # The oldest waiter polls slowest and the youngest fastest, so without tickets the
    # youngest would almost always grab the slot first.
    for run_id, poll in (("a", 0.2), ("b", POLL), ("c", 0.01)):
        child = slots.start(run_id, poll=poll)
        wait_for(lambda child=child: child.has_waited(), f"{run_id} to register its ticket")
    assert slots.tickets() == ["a", "b", "c"]
    assert slots.acquired_ids() == ["0-holder"]

    holder.release()
    wait_for(lambda: len(slots.acquired()) == 4, "all three waiters to acquire")
    assert slots.acquired_ids() == ["0-holder", "a", "b", "c"]
    wait_for(lambda: slots.tickets() == [], "the tickets to be removed")


def test_older_waiter_for_another_slot_does_not_block(slots: Slots) -> None:
    holder = slots.holding("h", devices=("cuda:0",))
    older = slots.start("a", devices=("cuda:0",))
    wait_for(lambda: older.has_waited(), "the older waiter to queue for cuda0-0")
    younger = slots.start("b", devices=("cuda:1",))
    wait_for(lambda: "b" in slots.acquired_ids(), "the younger waiter to take the free cuda1-0")
    assert slots.acquired() == ["h cuda0-0", "b cuda1-0"]
    assert older.process.is_alive() and slots.tickets() == ["a"]
    wait_for(lambda: finished(younger), "the younger waiter to exit")

    holder.release()
    wait_for(lambda: "a" in slots.acquired_ids(), "the older waiter to get cuda0-0")
    assert slots.acquired()[-1] == "a cuda0-0"


def test_stale_ticket_file_blocks_nobody(slots: Slots) -> None:
    queue = slots.root / "queue"
    queue.mkdir()
    (queue / "a").write_text(json.dumps(["cpu-0"]))  # an older ticket nobody holds a lock on
    child = slots.start("b")
    wait_for(lambda: "b" in slots.acquired_ids(), "b to ignore the stale ticket")
    wait_for(lambda: finished(child), "b to exit")
    assert not (queue / "a").exists(), "the stale ticket was not cleaned up"


def test_ticket_of_a_sigkilled_waiter_blocks_nobody(slots: Slots) -> None:
    holder = slots.holding("h")
    dead = slots.start("a")
    wait_for(lambda: dead.has_waited(), "a to queue")
    live = slots.start("b")
    wait_for(lambda: live.has_waited(), "b to queue behind a")
    os.kill(dead.pid, signal.SIGKILL)
    dead.process.join(timeout=5)
    assert slots.tickets() == ["a", "b"]  # a's ticket file outlives it; its lock does not

    holder.release()
    wait_for(lambda: "b" in slots.acquired_ids(), "b to acquire despite a's stale ticket")
    assert slots.acquired() == ["h cpu-0", "b cpu-0"]
    wait_for(lambda: slots.tickets() == [], "the stale and the used ticket to be removed")


def test_same_run_cannot_wait_twice(slots: Slots) -> None:
    slots.holding("h")
    waiter = slots.start("a")
    wait_for(lambda: waiter.has_waited(), "a to queue")
    with (
        pytest.raises(RuntimeError, match="already waiting"),
        hold_slot("a", slots_for(["cpu"], 1), poll_seconds=POLL, root=slots.root),
    ):
        pass
    assert slots.tickets() == ["a"]  # the refused second call left the first one's ticket


# --- holders and cleanup (in this process) --------------------------------------------------


def test_a_released_slot_is_free_though_its_file_names_the_last_holder(slots: Slots) -> None:
    assert slot_holders(slots.root) == {}
    first = slots.holding("r1", per_device=2)
    second = slots.holding("r2", per_device=2)
    assert slot_holders(slots.root) == {"cpu-0": "r1", "cpu-1": "r2"}

    second.release()
    wait_for(lambda: finished(second), "r2 to release cpu-1")
    # the lock file still names r2, but nobody holds its lock: cpu-1 is free
    assert (slots.root / "cpu-1.lock").read_text() == "r2"
    assert slot_holders(slots.root) == {"cpu-0": "r1"}

    first.release()
    wait_for(lambda: finished(first), "r1 to release cpu-0")
    assert slot_holders(slots.root) == {}


def test_slot_and_ticket_released_when_the_body_raises(tmp_path: Path) -> None:
    candidates = slots_for(["cpu"], 1)
    with (
        pytest.raises(ValueError, match="boom"),
        hold_slot("r", candidates, poll_seconds=POLL, root=tmp_path) as slot,
    ):
        assert slot == Slot("cpu", 0)
        assert slot_holders(tmp_path) == {"cpu-0": "r"}
        assert list((tmp_path / "queue").iterdir()) == []  # ticket dropped once it holds
        raise ValueError("boom")
    assert slot_holders(tmp_path) == {}
    with hold_slot("r2", candidates, poll_seconds=POLL, root=tmp_path) as again:
        assert again == Slot("cpu", 0)


def test_interrupted_waiter_leaves_no_ticket(slots: Slots) -> None:
    """A queued run stopped while waiting (its signal handler raises in on_wait/sleep)."""
    slots.holding("h")

    def stop() -> None:
        raise KeyboardInterrupt

    with (
        pytest.raises(KeyboardInterrupt),
        hold_slot("w", slots_for(["cpu"], 1), poll_seconds=POLL, on_wait=stop, root=slots.root),
    ):
        pytest.fail("acquired a held slot")
    assert slots.tickets() == []
    assert slot_holders(slots.root) == {"cpu-0": "h"}


# --- ticket registration races --------------------------------------------------------------


def _lock_empty_ticket(ticket: Path, release: Path) -> None:
    """An older waiter caught between locking its ticket and writing its slot list."""
    fd = os.open(ticket, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    deadline = time.monotonic() + 60
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.005)


def test_ticket_still_being_written_counts_as_competing(slots: Slots) -> None:
    queue = slots.root / "queue"
    queue.mkdir()
    ticket, release = queue / "a", slots.root / "release-a"
    older = CTX.Process(target=_lock_empty_ticket, args=(ticket, release), daemon=True)
    older.start()
    try:
        wait_for(lambda: not _lockable(ticket), "the older waiter to lock its ticket")

        class Deferred(Exception):
            pass

        waits = 0

        def on_wait() -> None:
            nonlocal waits
            waits += 1
            if waits >= 3:
                raise Deferred

        with (  # cpu-0 is free: only the older live ticket can make "b" wait
            pytest.raises(Deferred),
            hold_slot(
                "b", slots_for(["cpu"], 1), poll_seconds=POLL, on_wait=on_wait, root=slots.root
            ),
        ):
            pass
    finally:
        release.touch()
        older.join(timeout=5)


def _lockable(path: Path) -> bool:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def _register_slowly(
    root: Path, run_id: str, opened: Path, go: Path, log: Path, waits: Any
) -> None:
    """A waiter preempted between creating its ticket file (os.open) and locking it."""
    real_flock = fcntl.flock
    paused = False

    def slow_flock(fd: int, operation: int) -> None:
        nonlocal paused
        if not paused:
            paused = True
            opened.touch()
            deadline = time.monotonic() + 60
            while not go.exists() and time.monotonic() < deadline:
                time.sleep(0.005)
        real_flock(fd, operation)

    fcntl.flock = slow_flock  # this forked child's own copy of the module
    _child(root, run_id, ["cpu"], 1, POLL, log, waits, None)


def test_ticket_registration_survives_a_concurrent_stale_check(slots: Slots) -> None:
    slots.holding("h")
    opened, go = slots.root / "a-opened", slots.root / "a-go"
    waits = CTX.Value("i", 0, lock=False)
    older = CTX.Process(
        target=_register_slowly,
        args=(slots.root, "a", opened, go, slots.log, waits),
        daemon=True,
    )
    older.start()
    slots.children.append(Child("a", older, waits, None))
    wait_for(opened.exists, "a to create its ticket file")
    younger = slots.start("b")
    wait_for(lambda: younger.has_waited(), "b to queue (and check a's ticket)")
    go.touch()
    wait_for(lambda: waits.value >= 1, "a to finish registering and queue")
    assert slots.tickets() == ["a", "b"]


def test_a_stop_right_after_the_ticket_is_closed_is_a_stop_not_ebadf(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A queued run's stop signal raises from its handler wherever the worker is; landing
    just after the ticket's fd is closed, as the slot is taken, it must come out as the stop
    (the worker records "killed while queued"), not as `finally` closing the fd again (EBADF,
    recorded "failed"), and no other file may be closed in its place."""
    from srat_engine.jobs import slots as slots_module

    real_release = slots_module._release
    closed: list[int] = []

    def release_then_stop(fd: int) -> None:
        real_release(fd)
        closed.append(fd)
        if len(closed) == 1:  # the ticket: the first fd hold_slot releases
            raise KeyboardInterrupt

    monkeypatch.setattr(slots_module, "_release", release_then_stop)
    with (
        pytest.raises(KeyboardInterrupt),
        hold_slot("r", slots_for(["cpu"], 1), poll_seconds=POLL, root=tmp_path),
    ):
        pytest.fail("the body ran after the stop")
    assert len(closed) == 2 and len(set(closed)) == 2  # the ticket, then the slot: once each
    assert slot_holders(tmp_path) == {}
