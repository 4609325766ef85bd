"""The `srat` command line: every command module's Typer app, wired together here.

Each module under `srat_tui.cli` defines its own `app`; a group (`presets`, `runs`, `sweep`) is
added under its name, a module of top-level commands without one, which makes Typer merge its
commands into `srat` itself. The order below is the order of `srat --help`.

Every user error is one line on stderr and exit code 2, a failed write exit code 1 (`main`).
"""

from __future__ import annotations

import inspect
import sys
from typing import Annotated

import typer

from srat_engine import __version__
from srat_engine.errors import SratError
from srat_engine.fsutil import WriteFailed, describe_os_error
from srat_tui.cli import analysis, bench, presets, run, runs, sweep, theory, tui
from srat_tui.cli import eval as eval_command
from srat_tui.cli.common import error_line
from srat_tui.cli.exit_codes import EXIT_FAILED, EXIT_USAGE

app = typer.Typer(
    name="srat",
    help="Separable Reweighted Adversarial Training on class-imbalanced data.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
for commands in (tui.app, bench.app, eval_command.app, theory.app, analysis.app, run.app):
    app.add_typer(commands)
app.add_typer(presets.app, name="presets")
app.add_typer(runs.app, name="runs")
app.add_typer(sweep.app, name="sweep")


def summarize_commands(commands: typer.Typer) -> None:
    """Give every command without a short help its docstring's first paragraph on one line:
    in Rich markup mode Typer keeps that paragraph's line breaks in the command lists of
    `srat --help`, where the panel then breaks the sentence a second time, mid-line."""
    for command in commands.registered_commands:
        text = command.help or inspect.getdoc(command.callback) or ""
        if command.short_help is None and text:
            command.short_help = " ".join(text.split("\n\n")[0].split())
    for group in commands.registered_groups:
        if group.typer_instance is not None:
            summarize_commands(group.typer_instance)


summarize_commands(app)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"srat {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Options of `srat` itself (the help text is the Typer app's)."""


def main() -> None:
    """Console entry point: one line on stderr for every error a person can act on, exit 2 for
    a SratError (bad input), 1 for a write that failed or another OS error (a full disk, a
    read-only home)."""
    try:
        app()
    except WriteFailed as err:
        error_line(f"error: {' '.join(str(err).split())}")
        sys.exit(EXIT_FAILED)
    except SratError as err:
        error_line(f"error: {' '.join(str(err).split())}")
        sys.exit(EXIT_USAGE)
    except BrokenPipeError:
        raise  # `srat runs ls | head`: not an error of srat's
    except OSError as err:
        where = f"{err.filename}: " if err.filename else ""
        error_line(f"error: {' '.join(f'{where}{describe_os_error(err)}'.split())}")
        sys.exit(EXIT_FAILED)


if __name__ == "__main__":
    main()
