"""The command palette (ctrl+p): new run, compare marked, refresh, and "Open run <id>"."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from textual.command import DiscoveryHit, Hit, Hits, Provider

from srat_engine.errors import SratError

if TYPE_CHECKING:
    from srat_tui.tui.app import SratApp


class SratCommands(Provider):
    """The app's commands, and one "Open run <id>" per run in the index."""

    @property
    def srat_app(self) -> SratApp:
        # the provider is registered on SratApp.COMMANDS only
        return cast("SratApp", self.app)

    async def startup(self) -> None:
        app = self.srat_app
        try:
            # the index only (no liveness checks): the palette must open at once
            records = await asyncio.to_thread(app.context.index.all)
        except (SratError, OSError):
            records = []
        records.sort(key=lambda record: str(record.get("id", "")), reverse=True)
        self.runs = [(str(r["id"]), _run_help(r)) for r in records if r.get("id")]

    def _commands(self) -> Iterable[tuple[str, Callable[[], Any], str]]:
        app = self.srat_app
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
