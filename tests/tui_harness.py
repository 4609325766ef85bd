"""Shared pieces of the TUI tests: a pinned app context, waits on Pilot, a notification log.

The suite has no asyncio plugin, so each async scenario runs under `asyncio.run` through
`@scenario`. Waiting is always bounded and goes through Textual's own API: `settle` until the
workers are done and their messages handled (screens fill from thread workers, and what those
find starts more: plot builds), or `wait_for` a condition, one `pilot.pause()` at a time.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from textual.app import App
from textual.pilot import Pilot
from textual.worker import WorkerCancelled

from srat_engine.runs.home import Home
from srat_engine.runs.slurm_queue import QueueCache
from srat_tui.tui.context import AppContext

NOW = datetime(2026, 11, 21, 14, 0, tzinfo=timezone.utc)


def pinned_context(home: Path, *, poll_seconds: float = 0.1, now: datetime = NOW) -> AppContext:
    """The app's view of `home` with a fixed clock (ages and snapshots do not drift)."""
    # squeue answers at every poll, so a test sees a change of a fake squeue's queue at once
    return AppContext(
        home=Home(home), now=lambda: now, poll_seconds=poll_seconds, queue=QueueCache(0.0)
    )


def scenario(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """A sync test that runs the coroutine; pytest still sees the fixtures it asks for."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


def record_notifications(app: App[Any]) -> list[tuple[str, str]]:
    """(message, severity) of every notification `app` shows from now on."""
    notes: list[tuple[str, str]] = []
    original = app.notify

    def notify(message: str, **kwargs: Any) -> None:
        notes.append((message, str(kwargs.get("severity", "information"))))
        original(message, **kwargs)

    app.notify = notify  # type: ignore[method-assign]
    return notes


async def wait_for(
    pilot: Pilot[Any],
    condition: Callable[[], bool],
    what: str = "the condition",
    timeout: float = 10.0,
) -> None:
    """Pause frame by frame until `condition()` holds; fail naming `what` after `timeout` s."""
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        await pilot.pause(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def settle(pilot: Pilot[Any], timeout: float = 10.0, frame: float | None = None) -> None:
    """Until no worker is left: wait for them, let the UI thread take in the messages they
    posted and draw (which may start more: a poll's records start plot builds), and again until
    a round starts none. `frame`: seconds per pause (None: until the process idles)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    app = pilot.app
    while loop.time() < deadline:
        try:
            await app.workers.wait_for_complete()
        except WorkerCancelled:
            # an exclusive worker (a refresh) replaced by a newer one while waited for: the
            # newer one is waited for on the next round
            continue
        await pilot.pause(frame)  # their messages are handled, and the result is rendered
        await pilot.pause(frame)  # builds that rendering asked for have started
        if all(worker.is_finished for worker in app.workers):
            return
    raise AssertionError("timed out waiting for the workers to settle")
