"""What every screen of the app reads from: run directories and the run index, nothing else.

The app keeps no state of its own; a second `srat-tui` (another SSH session) built on the same
home shows the same runs. Tests pass a fixed clock and a fast poll interval.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

from srat_engine.runs.home import Home
from srat_engine.runs.index import RunIndex
from srat_engine.runs.slurm_queue import QueueCache

if TYPE_CHECKING:
    from textual.dom import DOMNode


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class AppContext:
    home: Home = field(default_factory=Home.from_env)  # the one place the app reads $SRAT_HOME
    now: Callable[[], datetime] = _utc_now
    poll_seconds: float = 1.0  # new epochs appear within 2 s: poll at 1 s
    # squeue at most every 10 s however often the runs table polls (an action asks at once)
    queue: QueueCache = field(default_factory=lambda: QueueCache(10.0))

    @property
    def runs_root(self) -> Path:
        return self.home.runs

    @property
    def index(self) -> RunIndex:
        return self.home.index


class ContextHost(Protocol):
    """What the screens need of the app they run in: `SratApp`, or a test's smaller host."""

    context: AppContext


def app_context(node: DOMNode) -> AppContext:
    """The context of the app `node` is mounted in."""
    return cast("ContextHost", node.app).context
