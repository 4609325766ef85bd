"""Every screen's footer shows all of its keys whole at 80 columns (an SSH terminal), the
command palette's key only where it fits beside them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fake_runs import make_fake_run
from textual.pilot import Pilot
from textual.widgets import Footer
from tui_harness import pinned_context, scenario, settle, wait_for

from srat_tui.tui.app import SratApp
from srat_tui.tui.screens.compare import CompareScreen
from srat_tui.tui.screens.new_run import NewRunScreen
from srat_tui.tui.screens.run_detail import RunScreen
from srat_tui.tui.screens.runs import RunsScreen
from srat_tui.tui.widgets import gpu_panel


@pytest.fixture(autouse=True)
def no_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu_panel, "probe_gpus", lambda: None)


@dataclass(frozen=True)
class FooterSeen:
    """One screen's footer as drawn: its own keys (label, right edge) and where the command
    palette's key starts (None: not shown)."""

    screen: str
    keys: list[tuple[str, int]]
    palette_x: int | None


def footer_seen(pilot: Pilot[Any]) -> FooterSeen:
    keys = list(pilot.app.screen.query_one(Footer).query("FooterKey"))
    palette = [key for key in keys if key.has_class("-command-palette")]
    shown = [key for key in palette if key.display]
    return FooterSeen(
        type(pilot.app.screen).__name__,
        # FooterKey's label, e.g. "Quit", and the column after its last
        [
            (str(getattr(key, "description", "")), key.region.right)
            for key in keys
            if key not in palette
        ],
        shown[0].region.x if shown else None,
    )


async def screens(pilot: Pilot[Any]) -> list[FooterSeen]:
    """Each screen's footer once it has settled: runs, a run, compare, new run."""
    app = pilot.app
    assert isinstance(app, SratApp)
    seen = []
    steps: list[tuple[tuple[str, ...], type]] = [
        ((), RunsScreen),
        (("enter",), RunScreen),
        (("escape", "space", "space", "c"), CompareScreen),
        (("escape", "n"), NewRunScreen),
    ]
    await wait_for(pilot, lambda: app.runs_screen is not None and app.runs_screen.loaded)
    for keys, kind in steps:
        for key in keys:
            await pilot.press(key)
            await settle(pilot)
        await wait_for(pilot, lambda kind=kind: isinstance(app.screen, kind), kind.__name__)
        await settle(pilot)
        await pilot.pause(0.1)  # the footer fits itself after the next refresh or two
        await settle(pilot)
        seen.append(footer_seen(pilot))  # now: a screen left behind has no regions
    return seen


@pytest.mark.parametrize("size", [(80, 24), (160, 48)], ids=lambda s: f"{s[0]}x{s[1]}")
@scenario
async def test_every_footer_key_is_whole_and_uncovered(
    srat_home: Path, size: tuple[int, int]
) -> None:
    context = pinned_context(srat_home)
    for run_id, preset in (("exp10-ce-s0", "digits-ce"), ("exp10-srat-s0", "digits-srat-ldam")):
        make_fake_run(context.runs_root, run_id, preset=preset, status="finished",
                      epochs_done=10, index=context.index)  # fmt: skip
    width = size[0]
    async with SratApp(context).run_test(size=size) as pilot:
        seen = await screens(pilot)
    assert [footer.screen for footer in seen] == [
        "RunsScreen", "RunScreen", "CompareScreen", "NewRunScreen"
    ]  # fmt: skip
    for footer in seen:
        # the palette's key is docked right: it covered the last keys (q Quit) at 80
        limit = footer.palette_x if footer.palette_x is not None else width
        cut = [label for label, right in footer.keys if right > limit]
        assert not cut, f"{footer.screen} at {width} columns: {cut} cut off"
        assert all(right > 0 for _, right in footer.keys), footer  # drawn, not detached
        if footer.screen != "NewRunScreen":  # the form's q is a letter: esc cancels it
            assert "Quit" in [label for label, _ in footer.keys], footer
        if width >= 160:  # room for everything: the palette's key is shown
            assert footer.palette_x is not None, footer


@scenario
async def test_the_palette_key_goes_when_the_terminal_narrows_and_comes_back(
    srat_home: Path,
) -> None:
    """Resizing refits the footer both ways: a terminal narrowed to 80 columns loses the
    palette's key (not Quit), widened again it has it back."""
    context = pinned_context(srat_home)
    make_fake_run(context.runs_root, "exp10-ce-s0", preset="digits-ce", status="finished",
                  epochs_done=10, index=context.index)  # fmt: skip
    async with SratApp(context).run_test(size=(160, 48)) as pilot:
        app = pilot.app
        assert isinstance(app, SratApp)
        await wait_for(pilot, lambda: app.runs_screen is not None and app.runs_screen.loaded)
        await pilot.press("enter")  # the run screen: at 80 columns the palette covered Quit
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen), "the run screen")
        await settle(pilot)

        def fitted(width: int, palette: bool) -> bool:
            footer = footer_seen(pilot)
            limit = footer.palette_x if footer.palette_x is not None else width
            whole = all(0 < right <= limit for _, right in footer.keys)
            return whole and (footer.palette_x is not None) == palette

        await wait_for(pilot, lambda: fitted(160, palette=True), "the palette's key at 160")
        await pilot.resize_terminal(80, 24)
        await wait_for(pilot, lambda: fitted(80, palette=False), "no palette key at 80")
        assert "Quit" in [label for label, _ in footer_seen(pilot).keys]
        await pilot.resize_terminal(160, 48)
        await wait_for(pilot, lambda: fitted(160, palette=True), "the palette's key again")
