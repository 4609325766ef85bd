"""The `srat` command line: one Typer app per command group, wired together in `app`."""
