"""One srat home: the folder that holds runs, device slots, trash, sweeps, exports and the run
index.

Engine functions take the Home (or the one folder or index they use) as a parameter; only the
edges build one from the environment with `Home.from_env()`: the CLI commands, the TUI's
AppContext, and the detached worker, which gets it as `--home` from its launcher.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from srat_engine.paths import srat_home
from srat_engine.runs.index import RunIndex


@dataclass(frozen=True)
class Home:
    """A srat home's folders and run index, all below `root`; each folder is named after its
    field."""

    root: Path
    runs: Path = field(init=False, repr=False)  # run directories, <home>/runs/<run id>
    slots: Path = field(init=False, repr=False)  # device slot locks and the queue (jobs.slots)
    trash: Path = field(init=False, repr=False)  # removed runs, unless purged
    sweeps: Path = field(init=False, repr=False)  # sweep manifests, <home>/sweeps/<id>.json
    exports: Path = field(init=False, repr=False)  # tables the TUI's compare screen exports

    def __post_init__(self) -> None:
        for name in ("runs", "slots", "trash", "sweeps", "exports"):
            object.__setattr__(self, name, self.root / name)  # frozen: set once, here

    @classmethod
    def from_env(cls) -> Home:
        """The home $SRAT_HOME names, else ~/.srat (for the edges only)."""
        return cls(srat_home())

    @property
    def index(self) -> RunIndex:
        """The run index over the home's runs (stateless: a fresh handle is as good as any)."""
        return RunIndex(self.root / "index.json")
