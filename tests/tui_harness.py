"""Shared pieces of the TUI tests: a pinned app context and condition waits on Pilot.

The suite has no asyncio plugin, so each async scenario runs under `asyncio.run` through
`@scenario`. Waiting is always a bounded loop of `pilot.pause()` on a condition: screens fill
from thread workers, so there is no fixed number of frames to wait for.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from textual.pilot import Pilot

from srat_engine.runs.index import RunIndex
from srat_tui.tui.context import AppContext

NOW = datetime(2026, 11, 21, 14, 0, tzinfo=timezone.utc)


def pinned_context(home: Path, *, poll_seconds: float = 0.1, now: datetime = NOW) -> AppContext:
    """The app's view of `home` with a fixed clock (ages and snapshots do not drift)."""
    return AppContext(
        runs_root=home / "runs",
        index=RunIndex(home / "index.json"),
        now=lambda: now,
        poll_seconds=poll_seconds,
    )


def scenario(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """A sync test that runs the coroutine; pytest still sees the fixtures it asks for."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


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
