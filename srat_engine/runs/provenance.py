"""What reproduces a run beyond its config: the code's git commit and whether it was dirty."""

from __future__ import annotations

import getpass
import socket
import subprocess
from pathlib import Path
from typing import Any

_SOURCE = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(_SOURCE), *args],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def provenance() -> dict[str, Any]:
    """Git commit and dirty flag of srat's source tree (None outside a checkout), host, user."""
    commit = _git("rev-parse", "HEAD")
    dirty = None
    if commit is not None:
        status = _git("status", "--porcelain", "--untracked-files=no")
        dirty = bool(status) if status is not None else None
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = None
    return {"git_commit": commit, "git_dirty": dirty, "host": socket.gethostname(), "user": user}
