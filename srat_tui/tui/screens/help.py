"""Every key binding in reach: the screen underneath, its focused widget, and the app."""

from __future__ import annotations

import re
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.dom import DOMNode
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Static


def binding_rows(screen: Screen[object]) -> list[tuple[str, str, str]]:
    """(key, what it does, where it is bound) for each binding active on `screen`.

    Read from `Screen.active_bindings`, the map Textual itself dispatches keys with, so the
    list cannot drift from what the keys do. Grouped screen first, then the focused widget,
    then the app; in each group the keys the footer shows come first.
    """
    app = screen.app
    groups: dict[str, list[tuple[bool, str, str, str]]] = {"screen": [], "widget": [], "app": []}
    for active in screen.active_bindings.values():
        binding = active.binding
        if binding.system:
            continue  # Textual's own plumbing (ctrl+c hint), not a command of this app
        where = _where(active.node, screen)
        key = app.get_key_display(binding)
        description = binding.description or binding.action.replace("_", " ")
        group = "screen" if active.node is screen else "app" if where == "app" else "widget"
        groups[group].append((not binding.show, key, description, where))
    return [
        (key, description, where)
        for rows in groups.values()
        for _, key, description, where in sorted(rows, key=lambda row: row[0])
    ]


def _where(node: DOMNode, screen: Screen[object]) -> str:
    """ "app", the screen in words ("runs screen", "new run screen"), or the widget's class."""
    if node is screen.app:
        return "app"
    name = type(node).__name__
    if node is screen and name.endswith("Screen"):
        words = re.sub(r"(?<!^)(?=[A-Z])", " ", name.removesuffix("Screen")).lower()
        return f"{words} screen"
    return name


class HelpScreen(ModalScreen[None]):
    """Lists the bindings of the screen it was opened over; escape, ? or q closes it."""

    CSS_PATH = "help.tcss"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,q", "close", "Close help"),
    ]

    def __init__(self, target: Screen[object] | None = None) -> None:
        super().__init__()
        # Read now: once this screen is pushed, `app.screen` is the help screen itself.
        self.target = target if target is not None else self.app.screen
        self.rows = binding_rows(self.target)

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("Keys", id="help-title")
            table: DataTable[str] = DataTable(cursor_type="row", zebra_stripes=True)
            table.add_columns("key", "action", "where")
            table.add_rows(self.rows)
            yield table
            yield Static("escape, ? or q closes · ctrl+p: all commands", id="help-hint")

    def action_close(self) -> None:
        self.dismiss(None)
