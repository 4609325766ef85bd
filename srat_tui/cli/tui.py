"""`srat tui`: the Textual app from the main command line (same as `srat-tui`)."""

from __future__ import annotations

import typer

app = typer.Typer()


@app.command("tui")
def tui() -> None:
    """Launch, watch and compare runs in the terminal (the runs of $SRAT_HOME)."""
    # imported here: `srat run` and friends never pay for loading Textual
    from srat_tui.tui.app import main

    main([])  # srat's own parser has read the command line
