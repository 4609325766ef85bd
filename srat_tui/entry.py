"""The console scripts `srat` and `srat-tui`: each imports and starts its app under a guard, so
that a Ctrl-C while Python loads it (the first second or so of every command that trains)
exits 130 quietly, as a Ctrl-C does once the command runs, instead of printing a traceback of
whichever module was loading."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from srat_tui.cli.exit_codes import EXIT_INTERRUPTED


def caused_by_ctrl_c(err: BaseException) -> bool:
    """Whether `err` is a KeyboardInterrupt or was raised because of one (its `__cause__` or
    `__context__` chain holds one): Python 3.11 wraps whatever a class's `__set_name__`
    raises in a RuntimeError, so a Ctrl-C landing while torch defines a dataclass reads
    "Error calling __set_name__" unless the chain is followed."""
    seen: set[int] = set()
    link: BaseException | None = err
    while link is not None and id(link) not in seen:
        if isinstance(link, KeyboardInterrupt):
            return True
        seen.add(id(link))
        link = link.__cause__ or link.__context__
    return False


@contextmanager
def _interrupt_exits() -> Iterator[None]:
    try:
        yield
    except (Exception, KeyboardInterrupt) as err:  # SystemExit, Typer's own exit, passes
        if not caused_by_ctrl_c(err):
            raise
        sys.exit(EXIT_INTERRUPTED)


def srat() -> None:
    """`srat`: the Typer command line (`srat_tui.cli.app.main`)."""
    with _interrupt_exits():
        from srat_tui.cli.app import main

        main()  # Typer builds its commands before it takes Ctrl-C over


def srat_tui() -> None:
    """`srat-tui`: the Textual app (`srat_tui.tui.app.main`)."""
    with _interrupt_exits():
        from srat_tui.tui.app import main

        main()
