"""What every screen of the app reads from: run directories and the run index, nothing else.

The app keeps no state of its own; a second `srat-tui` (another SSH session) built on the same
home shows the same runs. Tests pass a fixed clock and a fast poll interval.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from srat_engine.paths import runs_dir
from srat_engine.runs.index import RunIndex, default_index


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class AppContext:
    runs_root: Path = field(default_factory=runs_dir)
    index: RunIndex = field(default_factory=default_index)
    now: Callable[[], datetime] = _utc_now
    poll_seconds: float = 1.0  # new epochs appear within 2 s: poll at 1 s
