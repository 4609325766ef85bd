"""A local queue held by real `hold_slot` calls, for tests of what listings read from it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from srat_engine.jobs.slots import Slot, hold_slot, read_queue


@contextmanager
def queue_of_real_waiters(root: Path, holder: str, waiters: list[str]) -> Iterator[None]:
    """`holder` holds slot cpu-0 by `hold_slot`, each of `waiters` waits for it in a thread
    (queued in list order); all released at the end."""
    release = threading.Event()
    threads = []
    with hold_slot(holder, [Slot("cpu", 0)], root=root, queued_ns=1):
        for number, run_id in enumerate(waiters, start=2):

            def wait(run_id: str = run_id, number: int = number) -> None:
                with hold_slot(
                    run_id, [Slot("cpu", 0)], root=root, queued_ns=number, poll_seconds=0.05
                ):
                    release.wait(10)

            threads.append(threading.Thread(target=wait, daemon=True))
            threads[-1].start()
        deadline = time.monotonic() + 10
        while len(read_queue(root)[1]) < len(waiters):
            assert time.monotonic() < deadline, "the waiters never queued"
            time.sleep(0.02)
        try:
            yield
        finally:
            release.set()
    for thread in threads:
        thread.join(10)
