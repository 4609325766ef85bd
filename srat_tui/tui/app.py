"""`srat-tui`: launch, watch and compare runs in the terminal (works over SSH).

The app holds no data of its own: every screen reads run directories and the run index
through `self.context` (an `AppContext`), so two `srat-tui` sessions on one home agree.
Screens other than the runs list are imported when first opened: the first frame does not
wait for the new-run form's engine imports.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, ClassVar

from textual.app import App
from textual.binding import Binding, BindingType
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.screen import Screen

from srat_engine.errors import SratError
from srat_tui.tui.context import AppContext
from srat_tui.tui.screens.help import HelpScreen
from srat_tui.tui.screens.runs import RunsScreen


class SratCommands(Provider):
    """Command palette entries: new run, compare marked, refresh, and "Open run <id>"."""

    async def startup(self) -> None:
        app = self.app
        assert isinstance(app, SratApp)
        try:
            # the index only (no liveness checks): the palette must open at once
            records = await asyncio.to_thread(app.context.index.all)
        except (SratError, OSError):
            records = []
        records.sort(key=lambda record: str(record.get("id", "")), reverse=True)
        self.runs = [(str(r["id"]), _run_help(r)) for r in records if r.get("id")]

    def _commands(self) -> Iterable[tuple[str, Callable[[], Any], str]]:
        app = self.app
        assert isinstance(app, SratApp)
        yield "New run", app.open_new_run, "configure and launch a run"
        yield "Compare marked runs", app.action_compare_marked, "the runs marked with space"
        yield "Refresh", app.action_refresh_runs, "re-read every run now"
        for run_id, help_text in self.runs:
            yield f"Open run {run_id}", partial(app.open_run, run_id), help_text

    async def discover(self) -> Hits:
        for name, command, help_text in list(self._commands())[:3]:
            yield DiscoveryHit(name, command, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, command, help_text in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), command, help=help_text)


def _run_help(record: dict[str, Any]) -> str:
    parts = (record.get("status"), record.get("method"), record.get("dataset"))
    return " · ".join(str(p) for p in parts if p)


class SratApp(App[None]):
    """Runs list first; run detail, new run and compare screens are pushed over it."""

    CSS_PATH = "srat.tcss"
    TITLE = "srat"
    COMMANDS: ClassVar = App.COMMANDS | {SratCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("q", "quit", "Quit"),
        # Textual's own palette binding, named for the help screen
        Binding("ctrl+p", "command_palette", "Commands", show=False, priority=True),
    ]

    def __init__(self, context: AppContext | None = None) -> None:
        super().__init__()
        self.context = context if context is not None else AppContext()

    def on_mount(self) -> None:
        self.push_screen(RunsScreen())

    # -- screens ------------------------------------------------------------------------------
    @property
    def runs_screen(self) -> RunsScreen | None:
        return next((s for s in self.screen_stack if isinstance(s, RunsScreen)), None)

    def _push(
        self,
        build: Callable[[], Screen[Any]],
        callback: Callable[[Any], None] | None = None,
    ) -> None:
        """Push a screen built on demand; a bad run id (or other engine error) notifies."""
        try:
            screen = build()
        except SratError as err:
            self.notify(str(err), severity="error")
            return
        self.push_screen(screen, callback)

    def open_run(self, run_id: str) -> None:
        def build() -> Screen[Any]:
            from srat_tui.tui.screens.run_detail import RunScreen

            return RunScreen(run_id)

        self._push(build)

    def open_new_run(self) -> None:
        def build() -> Screen[Any]:
            from srat_tui.tui.screens.new_run import NewRunScreen

            return NewRunScreen()

        def launched(run_ids: list[str] | None) -> None:
            runs = self.runs_screen
            if run_ids and runs is not None:
                runs.focus_run(run_ids[0])  # the cursor waits for it on the next refresh

        self._push(build, launched)

    def open_compare(self, run_ids: list[str]) -> None:
        def build() -> Screen[Any]:
            from srat_tui.tui.screens.compare import CompareScreen

            return CompareScreen(list(run_ids))

        self._push(build)

    # -- actions ------------------------------------------------------------------------------
    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.screen))

    def action_compare_marked(self) -> None:
        runs = self.runs_screen
        if runs is not None:
            runs.action_compare()

    def action_refresh_runs(self) -> None:
        runs = self.runs_screen
        if runs is not None:
            runs.request_refresh()
            self.notify("refreshing runs")


def main() -> None:
    """Console script `srat-tui`: the runs of $SRAT_HOME (default ~/.srat)."""
    SratApp().run()


if __name__ == "__main__":
    main()
