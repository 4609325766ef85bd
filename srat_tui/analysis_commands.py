"""Registration point for the analysis commands (theory, t-SNE, separability, sweeps, figures)."""

from __future__ import annotations

import typer

from srat_tui import theory_command


def register(app: typer.Typer) -> None:
    """Add every analysis command to the `srat` Typer app."""
    theory_command.register(app)
