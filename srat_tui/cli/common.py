"""What every `srat` command shares: exit codes, the one-line error, the output console, and
opening a run by the id a person typed."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console

from srat_engine.runs.home import Home
from srat_engine.runs.rundir import RunDir, validate_run_id
from srat_tui.render.format import inert

EXIT_FAILED = 1
EXIT_USAGE = 2  # a SratError: bad input, nothing was created
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a Ctrl-C

# Options several commands take with the same meaning (and the same help text).
AsJson = Annotated[bool, typer.Option("--json", help="machine-readable output")]
PerGpu = Annotated[int, typer.Option("--per-gpu", help="runs per GPU at once")]


def error_line(message: str) -> None:
    """Errors are one plain line on stderr: no Rich wrapping that would split a path, and no
    control character of a name or path in it reaching the terminal (`inert`)."""
    print(inert(message), file=sys.stderr, flush=True)


def stdout_console(piped_width: int | None = None) -> Console:
    """The console a command prints to; piped_width: the width when stdout is not a terminal
    (whole rows for grep and awk rather than an 80-column guess), None to keep Rich's guess.

    Strings print as text: no markup or emoji codes read from them ("[/]" in a tag is shown),
    so styles come only from Rich objects (Text, tables)."""
    out = Console(highlight=False, soft_wrap=True, markup=False, emoji=False)
    if piped_width is not None and not out.is_terminal:
        out = Console(highlight=False, soft_wrap=True, markup=False, emoji=False, width=piped_width)
    return out


def open_run(run_id: str) -> RunDir:
    """The run of this srat home with that id; SratError for a malformed or unknown id."""
    return RunDir.open(Home.from_env().runs, validate_run_id(run_id))
