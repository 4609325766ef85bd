class SratError(Exception):
    """A user-facing error: one clear line, exit code 2 at the CLI."""
