"""Where srat keeps its files: one home directory, overridable with SRAT_HOME."""

from __future__ import annotations

import os
from pathlib import Path

from srat_engine.errors import SratError


def srat_home() -> Path:
    """The srat home: $SRAT_HOME, else ~/.srat.

    The one reader of $SRAT_HOME. Engine functions are given their home (`runs.home.Home`,
    which also holds the preset search path and the dataset folder); only the edges (CLI, TUI
    context, the worker's launcher) resolve it from here, through `Home.from_env()`.

    A relative $SRAT_HOME is taken from the working directory once, here: a detached worker
    runs in its run's directory, where the same relative name would be another folder. One
    that names a file is refused (SratError), before anything tries to write under it.
    """
    env = os.environ.get("SRAT_HOME")
    home = Path(env).expanduser().absolute() if env else Path.home() / ".srat"
    if home.exists() and not home.is_dir():
        named = f"SRAT_HOME={env}" if env else str(home)
        raise SratError(f"{named} is a file, not a folder: srat keeps its runs in a folder")
    return home
