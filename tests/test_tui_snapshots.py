"""SVG snapshots of every screen at 80x24 and 160x48.

Pinned: run ids, creation times and metrics (fake runs), the clock, no GPU (the probe finds
none), no refresh timer (a one-hour poll interval), and each screen's data awaited before
the shot. Update the baselines with `pytest tests/test_tui_snapshots.py --snapshot-update`
and look at every changed SVG before committing it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from fake_runs import make_fake_run
from textual.pilot import Pilot
from tui_harness import pinned_context, settle, wait_for

from srat_tui.tui.app import SratApp
from srat_tui.tui.screens.compare import CompareScreen
from srat_tui.tui.screens.help import HelpScreen
from srat_tui.tui.screens.new_run import NewRunScreen
from srat_tui.tui.screens.run_detail import RunScreen
from srat_tui.tui.widgets import gpu_panel

SIZES = [(80, 24), (160, 48)]


@pytest.fixture
def app(srat_home: Path, monkeypatch: pytest.MonkeyPatch) -> SratApp:
    monkeypatch.setattr(gpu_panel, "probe_gpus", lambda: None)
    context = pinned_context(srat_home, poll_seconds=3600.0)
    root, index = context.runs_root, context.index
    make_fake_run(root, "exp10-srat-ldam-s0", status="running", index=index,
                  created="2026-11-21T12:00:00+00:00")  # fmt: skip
    make_fake_run(root, "exp10-ce-s0", preset="digits-ce", status="finished", epochs_done=10,
                  index=index, created="2026-11-19T12:00:00+00:00")  # fmt: skip
    make_fake_run(root, "exp10-gairat-s0", preset="digits-gairat", status="failed",
                  epochs_done=0, index=index, created="2026-11-20T12:00:00+00:00")  # fmt: skip
    return SratApp(context)


async def runs_settled(pilot: Pilot[Any]) -> None:
    """The first refresh is in the table and the GPU panel has hidden itself."""
    app = pilot.app
    assert isinstance(app, SratApp)

    def ready() -> bool:
        runs = app.runs_screen
        if runs is None or not runs.loaded:
            return False
        return all(not panel.display for panel in runs.query("GpuPanel"))

    await wait_for(pilot, ready, "the runs screen")


async def help_open(pilot: Pilot[Any]) -> None:
    await runs_settled(pilot)
    await pilot.press("question_mark")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, HelpScreen), "help")


async def new_run_open(pilot: Pilot[Any]) -> None:
    await runs_settled(pilot)
    await pilot.press("n")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, NewRunScreen), "the form")
    screen = pilot.app.screen
    assert isinstance(screen, NewRunScreen)
    await wait_for(
        pilot, lambda: screen.validation is not None and screen.validation.ok, "the preview"
    )


async def run_open(pilot: Pilot[Any]) -> None:
    await runs_settled(pilot)
    await pilot.press("enter")  # the newest run: exp10-srat-ldam-s0
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, RunScreen), "the run screen")
    screen = pilot.app.screen
    assert isinstance(screen, RunScreen)
    await wait_for(pilot, lambda: bool(screen.rows), "the records")
    await settle(pilot)  # the plots build in thread workers


async def compare_open(pilot: Pilot[Any]) -> None:
    await runs_settled(pilot)
    await pilot.press("space", "space", "c")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, CompareScreen), "compare")
    screen = pilot.app.screen
    assert isinstance(screen, CompareScreen)
    await wait_for(pilot, lambda: screen.loaded is not None, "the runs to load")
    await pilot.pause()


SCREENS: dict[str, Callable[[Pilot[Any]], Awaitable[None]]] = {
    "runs": runs_settled,
    "help": help_open,
    "new_run": new_run_open,
    "run": run_open,
    "compare": compare_open,
}


@pytest.mark.parametrize("size", SIZES, ids=lambda size: f"{size[0]}x{size[1]}")
@pytest.mark.parametrize("screen", list(SCREENS))
def test_screen(app: SratApp, snap_compare: Any, screen: str, size: tuple[int, int]) -> None:
    assert snap_compare(app, terminal_size=size, run_before=SCREENS[screen])
