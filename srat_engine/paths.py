"""Where srat keeps its files: one home directory, overridable with SRAT_HOME."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def srat_home() -> Path:
    """The srat home: $SRAT_HOME, else ~/.srat.

    The one reader of $SRAT_HOME. Engine functions are given their home (`runs.home.Home`);
    only the edges (CLI, TUI context, the worker's launcher) resolve it from here.
    """
    env = os.environ.get("SRAT_HOME")
    return Path(env).expanduser() if env else Path.home() / ".srat"


def data_dir() -> Path:
    """Default dataset directory: $SRAT_DATA, else <home>/data."""
    env = os.environ.get("SRAT_DATA")
    return Path(env).expanduser() if env else srat_home() / "data"


def preset_dirs() -> list[Path]:
    """Preset search path, first match wins.

    $SRAT_PRESETS (os.pathsep-separated), <home>/presets (the user's own), the repository's
    `presets/` (editable installs), and `<prefix>/share/srat/presets` (wheel installs).
    """
    dirs: list[Path] = []
    env = os.environ.get("SRAT_PRESETS")
    if env:
        dirs.extend(Path(p).expanduser() for p in env.split(os.pathsep) if p)
    dirs.append(srat_home() / "presets")
    dirs.append(Path(__file__).resolve().parent.parent / "presets")
    dirs.append(Path(sys.prefix) / "share" / "srat" / "presets")
    return [d for d in dirs if d.is_dir()]
