"""Where srat keeps its files: one home directory, overridable with SRAT_HOME."""

from __future__ import annotations

import os
from pathlib import Path


def srat_home() -> Path:
    """The srat home: $SRAT_HOME, else ~/.srat.

    The one reader of $SRAT_HOME. Engine functions are given their home (`runs.home.Home`,
    which also holds the preset search path and the dataset folder); only the edges (CLI, TUI
    context, the worker's launcher) resolve it from here, through `Home.from_env()`.
    """
    env = os.environ.get("SRAT_HOME")
    return Path(env).expanduser() if env else Path.home() / ".srat"
