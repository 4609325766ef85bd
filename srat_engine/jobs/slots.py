"""Device slots held by kernel file locks: a dead run can never keep a GPU blocked.

Each slot is a file `<home>/slots/<device>-<k>.lock`; a run holds it with an exclusive
`fcntl.flock` for as long as it trains. The kernel drops the lock when the holder's process
dies, however it dies (kill -9 included), so there is nothing to clean up.

Waiting runs are served first come, first served: a waiter also holds a lock on a ticket file
`queue/<run id>` that lists the slots it can use and when it was queued (nanoseconds, given by
its launcher: a batch queued within one second keeps its order, which run ids, to the second,
do not), and defers to every live older ticket that shares a slot with it. Tickets of dead
waiters are recognised the same way: nobody holds their lock. A ticket is written and locked
under a private name and only then renamed into the queue, so nobody ever sees one that is
unlocked or half-written while its waiter lives.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Slot:
    device: str  # what the run trains on: "cpu", "cuda:0", ...
    index: int

    @property
    def name(self) -> str:
        return f"{self.device.replace(':', '')}-{self.index}"


def slot_device(name: str) -> str:
    """The device of a slot named `name` (`Slot.name`'s inverse): "cuda0-1" -> "cuda:0"."""
    device = name.rpartition("-")[0] or name
    if device.startswith("cuda") and device[4:].isdigit():
        return f"cuda:{device[4:]}"
    return device


@dataclass(frozen=True)
class Ticket:
    """A waiter's ticket as the queue holds it: the slots it can use, when it was queued."""

    run_id: str
    slots: frozenset[str]
    queued_ns: int


def read_queue(root: Path) -> tuple[dict[str, str], list[Ticket]]:
    """What the slots folder `root` says, read without taking a lock (a display must not make
    a waiter miss its turn): each slot's last holder, by the run id it wrote (a slot whose
    holder has ended still names it), and every readable ticket, oldest first (a dead
    waiter's too, until a waiter cleans it). Callers tell live from ended by the runs'
    statuses."""
    holders: dict[str, str] = {}
    with suppress(OSError):
        for lock in root.glob("*.lock"):
            with suppress(OSError, UnicodeDecodeError):
                holder = lock.read_text().strip()
                if holder:
                    holders[lock.name.removesuffix(".lock")] = holder
    tickets = []
    with suppress(OSError):
        for path in (root / "queue").glob("*"):
            read = _read_ticket(path)
            if read is not None and path.is_file():
                tickets.append(Ticket(path.name, frozenset(read[0]), read[1]))
    return holders, sorted(tickets, key=lambda t: (t.queued_ns, t.run_id))


def slots_for(devices: list[str], per_device: int) -> list[Slot]:
    return [Slot(device, k) for device in devices for k in range(per_device)]


def threads_per_slot(cores: int, per_device: int) -> int:
    """Intra-op threads for a run in one of `per_device` CPU slots: max(1, cores // per_device),
    so K packed runs share the cores instead of each taking all of them (K x cores threads
    thrash: `srat bench --study 1,2 --preset digits-ce --device cpu --set data.dataset=digits`
    on 2 cores gave two runs together 0.13-0.44x one run's rate with 2 threads each, 1.6-2.4x
    with 1, over several invocations: the shared CPU moves the figures, never their order)."""
    return max(1, cores // max(1, per_device))


def _try_lock(path: Path, *, create: bool = True) -> int | None:
    """An fd holding an exclusive lock on `path`, or None if someone else holds it.

    With `create=False` a missing file raises FileNotFoundError instead of being created.
    """
    fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _release(fd: int) -> None:
    with suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def _is_locked(path: Path) -> bool:
    """Whether a live process holds `path`'s lock (never creates the file)."""
    try:
        fd = _try_lock(path, create=False)
    except FileNotFoundError:
        return False
    if fd is None:
        return True
    _release(fd)
    return False


def _remove_if_stale(ticket: Path, fd: int) -> None:
    """Unlink a ticket we hold the lock of, unless a new one has been renamed over it."""
    with suppress(OSError):
        if os.stat(ticket).st_ino == os.fstat(fd).st_ino:
            ticket.unlink()


def _read_ticket(ticket: Path) -> tuple[set[str], int] | None:
    """A ticket's slots and queue time; None if it cannot be read (or is still empty)."""
    try:
        content = json.loads(ticket.read_text())
        if isinstance(content, list):  # written by an older srat: queued before any of ours
            return {str(name) for name in content}, 0
        return {str(name) for name in content["slots"]}, int(content["queued_ns"])
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _older_live_waiters(queue: Path, run_id: str, wanted: set[str], queued_ns: int) -> bool:
    for ticket in queue.glob("*"):
        if ticket.name == run_id:
            continue
        try:
            fd = _try_lock(ticket, create=False)
        except FileNotFoundError:
            continue  # its waiter got its slot meanwhile
        if fd is not None:  # its waiter is gone: the ticket is stale
            _remove_if_stale(ticket, fd)
            _release(fd)
            continue
        read = _read_ticket(ticket)
        if read is None:  # unreadable while live: it competes, if its run id is older
            if ticket.name < run_id:
                return True
            continue
        theirs, their_ns = read
        if (their_ns, ticket.name) < (queued_ns, run_id) and theirs & wanted:
            return True
    return False


def _register_ticket(queue: Path, run_id: str, wanted: set[str], queued_ns: int) -> int:
    """Write and lock the ticket privately, then rename it into the queue; returns its fd."""
    ticket = queue / run_id
    if _is_locked(ticket):
        raise RuntimeError(f"run {run_id} is already waiting for a slot")
    private = queue.parent / "queue.new"
    private.mkdir(parents=True, exist_ok=True)
    draft = private / f"{run_id}.{os.getpid()}"
    fd = _try_lock(draft)
    if fd is None:  # another process of ours with the same pid cannot exist
        raise RuntimeError(f"run {run_id} is already waiting for a slot")
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"slots": sorted(wanted), "queued_ns": queued_ns}).encode())
    os.replace(draft, ticket)
    return fd


@contextmanager
def hold_slot(
    run_id: str,
    candidates: list[Slot],
    *,
    root: Path,
    poll_seconds: float = 0.5,
    on_wait: Callable[[], None] | None = None,
    queued_ns: int | None = None,
) -> Iterator[Slot]:
    """Block until one of `candidates` is free, hold it for the body, release it after.

    `root` is the slots folder (a home's `Home.slots`), shared by every run that competes.
    Waiters are served in order of `queued_ns` (`time.time_ns()` when the run was queued;
    default: now), then run id.
    """
    if queued_ns is None:
        queued_ns = time.time_ns()
    queue = root / "queue"
    queue.mkdir(parents=True, exist_ok=True)
    wanted = {slot.name for slot in candidates}
    ticket = queue / run_id
    ticket_fd = _register_ticket(queue, run_id, wanted, queued_ns)
    held: tuple[Slot, int] | None = None
    try:
        while held is None:
            if not _older_live_waiters(queue, run_id, wanted, queued_ns):
                for slot in candidates:
                    fd = _try_lock(root / f"{slot.name}.lock")
                    if fd is not None:
                        held = (slot, fd)  # first: a stop from here on releases it
                        os.ftruncate(fd, 0)
                        os.write(fd, run_id.encode())  # who holds it, for `srat` displays
                        break
            if held is None:
                if on_wait is not None:
                    on_wait()
                time.sleep(poll_seconds)
        # Forgotten before it is closed: a stop signal (its handler raises) that lands after
        # the close must not make `finally` close the number again, which fails (EBADF) and
        # hides the stop, or closes a file opened since under the same number.
        mine, ticket_fd = ticket_fd, -1
        _remove_if_stale(ticket, mine)
        _release(mine)
        yield held[0]
    finally:
        if ticket_fd >= 0:
            _remove_if_stale(ticket, ticket_fd)
            _release(ticket_fd)
        if held is not None:
            _release(held[1])
