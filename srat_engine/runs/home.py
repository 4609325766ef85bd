"""One srat home: the folder that holds runs, device slots, trash, sweeps, exports, the user's
presets, the default dataset folder, Slurm job files, the settings file and the run index;
with the two folders the environment may put elsewhere ($SRAT_PRESETS searched first,
$SRAT_DATA instead of <home>/data).

Engine functions take the Home (or the one folder, search path or index they use) as a
parameter; only the edges build one from the environment with `Home.from_env()`: the CLI
commands, the TUI's AppContext, and the detached worker, which gets it as `--home` from its
launcher.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from srat_engine.paths import srat_home
from srat_engine.runs.index import RunIndex

_REPO_PRESETS = Path(__file__).resolve().parents[2] / "presets"  # editable installs
_SHARED_PRESETS = Path(sys.prefix) / "share" / "srat" / "presets"  # wheel installs (data-files)
_FOLDERS = ("runs", "slots", "trash", "sweeps", "exports", "presets", "data", "slurm")


@dataclass(frozen=True)
class Home:
    """A srat home's folders and run index, all below `root`; each folder is named after its
    field. `extra_presets` and `data_override` are where the environment moved things (empty
    for a Home built from a path alone, as the worker's and the tests' are)."""

    root: Path
    extra_presets: tuple[Path, ...] = ()  # searched before the home's own ($SRAT_PRESETS)
    data_override: Path | None = None  # datasets' folder instead of <home>/data ($SRAT_DATA)
    runs: Path = field(init=False, repr=False)  # run directories, <home>/runs/<run id>
    slots: Path = field(init=False, repr=False)  # device slot locks and the queue (jobs.slots)
    trash: Path = field(init=False, repr=False)  # removed runs, unless purged
    sweeps: Path = field(init=False, repr=False)  # sweep manifests, <home>/sweeps/<id>.json
    exports: Path = field(init=False, repr=False)  # tables the TUI's compare screen exports
    presets: Path = field(init=False, repr=False)  # the user's own presets
    data: Path = field(init=False, repr=False)  # datasets, unless data_override says otherwise
    slurm: Path = field(init=False, repr=False)  # submitit's job files and logs, <home>/slurm/<job>

    def __post_init__(self) -> None:
        for name in _FOLDERS:
            object.__setattr__(self, name, self.root / name)  # frozen: set once, here

    @classmethod
    def from_env(cls) -> Home:
        """The home $SRAT_HOME names (else ~/.srat), with $SRAT_PRESETS (os.pathsep-separated
        folders) and $SRAT_DATA applied: the one place they are read (for the edges only)."""
        presets = os.environ.get("SRAT_PRESETS") or ""
        data = os.environ.get("SRAT_DATA")
        return cls(
            srat_home(),
            # absolute for the same reason as the home (`srat_home`): workers run elsewhere
            tuple(Path(p).expanduser().absolute() for p in presets.split(os.pathsep) if p),
            Path(data).expanduser().absolute() if data else None,
        )

    @property
    def config_file(self) -> Path:
        """The user's settings for this home (`[backend.slurm]` defaults): <home>/config.toml."""
        return self.root / "config.toml"

    @property
    def index(self) -> RunIndex:
        """The run index over the home's runs (stateless: a fresh handle is as good as any)."""
        return RunIndex(self.root / "index.json")

    @property
    def preset_dirs(self) -> list[Path]:
        """The preset search path, first match wins: `extra_presets`, <home>/presets (the
        user's own), the repository's `presets/` (editable installs) and
        `<prefix>/share/srat/presets` (wheel installs). Folders that do not exist are kept:
        the preset functions skip them when they look, so a folder made later is found."""
        return [*self.extra_presets, self.presets, _REPO_PRESETS, _SHARED_PRESETS]

    @property
    def data_dir(self) -> Path:
        """Where datasets live when a config names no data.root: `data_override`, else
        <home>/data."""
        return self.data_override if self.data_override is not None else self.data
