"""`srat-tui`: launch, watch and compare runs in the terminal (works over SSH).

The app holds no data of its own: every screen reads run directories and the run index
through `self.context` (an `AppContext`), so two `srat-tui` sessions on one home agree.
Screens ask the app for another screen with the requests in `messages` (`OpenRun`, …); the
command palette lives in `commands`. Screens other than the runs list are imported when first
opened: the first frame does not wait for the new-run form's engine imports.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from textual.app import App
from textual.binding import Binding, BindingType
from textual.notifications import SeverityLevel
from textual.screen import Screen

from srat_engine.errors import SratError
from srat_tui.render.format import inert
from srat_tui.tui.commands import SratCommands
from srat_tui.tui.context import AppContext
from srat_tui.tui.messages import OpenCompare, OpenNewRun, OpenRun
from srat_tui.tui.screens.help import HelpScreen
from srat_tui.tui.screens.runs import RunsScreen


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

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None:
        """Every notification (screens' too) as text: the run ids, tags, paths and engine
        messages in it are `inert`, never read as markup (`markup` is ignored)."""
        super().notify(
            inert(message, newlines=True),
            title=inert(title),
            severity=severity,
            timeout=timeout,
            markup=False,
        )

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
        from srat_tui.tui.screens.run_detail import RunScreen

        if isinstance(self.screen, RunScreen) and self.screen.run_id == run_id:
            return  # already the screen shown (the palette's "Open run" of this run)

        def build() -> Screen[Any]:
            return RunScreen(run_id)

        self._push(build)

    def open_new_run(self) -> None:
        from srat_tui.tui.screens.new_run import NewRunScreen

        if any(isinstance(screen, NewRunScreen) for screen in self.screen_stack):
            # a second form over the first would hide its edits under a fresh one
            self.notify("a new-run form is open already: launch or cancel it first")
            return

        def build() -> Screen[Any]:
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

    # -- what screens ask for -----------------------------------------------------------------
    def on_open_run(self, message: OpenRun) -> None:
        self.open_run(message.run_id)

    def on_open_new_run(self, message: OpenNewRun) -> None:
        self.open_new_run()

    def on_open_compare(self, message: OpenCompare) -> None:
        self.open_compare(message.run_ids)

    # -- actions ------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """`q` does not quit from a screen holding unsaved edits (the new-run form): one key
        would lose them. ctrl+q still quits, as in every Textual app."""
        return not (action == "quit" and getattr(self.screen, "HOLDS_EDITS", False))

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
            # the screen shown re-reads its own run files every poll; the list is what waits
            shown = "" if self.screen is runs else " (the runs list)"
            self.notify(f"refreshing runs{shown}")


def main(argv: Sequence[str] | None = None) -> None:
    """Console script `srat-tui` (and `srat tui`): the runs of $SRAT_HOME (default ~/.srat).

    It takes no arguments but -h/--help, and refuses any other with one line and exit 2: a
    typo (or --help) must not take over the terminal with the full-screen app. argv: the
    arguments after the program name; None reads sys.argv's (`srat tui` passes [], its own
    parser having read the command line).
    """
    import argparse

    if argv is None:
        argv = sys.argv[1:]
    parser = argparse.ArgumentParser(
        prog="srat-tui",
        description="Open the terminal interface, full screen, on the runs of $SRAT_HOME "
        "(default ~/.srat): launch, watch and compare them. `srat tui` is the same; press ? in "
        "it for its keys.",
    )
    _, unknown = parser.parse_known_args(list(argv))  # -h/--help prints usage and exits 0
    if unknown:
        print(
            inert(f"error: srat-tui takes no arguments but --help (got {unknown[0]!r})"),
            file=sys.stderr,
            flush=True,
        )
        sys.exit(2)
    try:
        context = AppContext()  # the home first: a bad $SRAT_HOME is a line, not a screen
    except SratError as error:
        print(inert(f"error: {error}"), file=sys.stderr, flush=True)
        sys.exit(2)
    SratApp(context).run()


if __name__ == "__main__":
    main()
