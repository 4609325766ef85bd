"""The `srat` command line: every command module's Typer app, wired together here.

Each module under `srat_tui.cli` defines its own `app`; a group (`presets`, `runs`, `sweep`) is
added under its name, a module of top-level commands without one, which makes Typer merge its
commands into `srat` itself. The order below is the order of `srat --help`.

Every user error is one line on stderr and exit code 2 (`main`).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from srat_engine import __version__
from srat_engine.errors import SratError
from srat_tui.cli import analysis, bench, presets, run, runs, sweep, theory, tui
from srat_tui.cli import eval as eval_command
from srat_tui.cli.common import EXIT_USAGE, error_line

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
    """Console entry point: SratError -> one line on stderr, exit 2."""
    try:
        app()
    except SratError as err:
        error_line(f"error: {' '.join(str(err).split())}")
        sys.exit(EXIT_USAGE)


if __name__ == "__main__":
    main()
