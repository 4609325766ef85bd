"""The exit codes of `srat` (kept apart from `common` so the console script's guard,
`srat_tui.entry`, can use them before anything heavy is imported)."""

EXIT_FAILED = 1  # a failed write or another OS error (a full disk, a read-only home)
EXIT_USAGE = 2  # a SratError: bad input, nothing was created
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a Ctrl-C (and Typer exits with)
