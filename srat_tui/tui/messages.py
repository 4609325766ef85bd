"""Every message the app posts: what a worker found, and what a screen asks the app to open.

Thread workers post these (`post_message` is thread-safe) to the node that started them, and
handlers named after them (`on_runs_refreshed`, `on_figure_built`, …) take them in on the UI
thread; worker results never travel as untyped `Worker.result` values. Worker results do not
bubble (`WorkerResult`): only the node that asked for the work handles them. The requests at
the top do bubble, from a screen up to the app.

Field types are imported for annotations only, so importing this module costs the runs screen
none of the other screens' imports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual.message import Message

if TYPE_CHECKING:
    from rich.text import Text

    from srat_tui.tui.screens.compare import Loaded
    from srat_tui.tui.screens.new_run import FormValues, Validation
    from srat_tui.tui.screens.run_detail import Update
    from srat_tui.tui.screens.runs import RunRow
    from srat_tui.tui.widgets.curves import BuildKey
    from srat_tui.tui.widgets.gpu_panel import GpuRow


class WorkerResult(Message, bubble=False):
    """What a worker found, for the node that started it alone."""

    def __init_subclass__(cls, bubble: bool | None = False, **kwargs: Any) -> None:
        # Message.__init_subclass__ would make each subclass bubble again
        super().__init_subclass__(bubble=bubble, **kwargs)


# -- requests to the app (bubble up from a screen) --------------------------------------------


@dataclass
class OpenRun(Message):
    """Show one run's screen."""

    run_id: str


@dataclass
class OpenNewRun(Message):
    """Show the new-run form."""


@dataclass
class OpenCompare(Message):
    """Show these runs side by side, in this order."""

    run_ids: list[str]


# -- the runs screen ----------------------------------------------------------------------------


@dataclass
class RunsRefreshed(WorkerResult):
    """Display rows for every run, from the refresh worker."""

    rows: dict[str, RunRow]


@dataclass
class RunsRefreshFailed(WorkerResult):
    """The refresh worker could not read the runs."""

    error: str


@dataclass
class VerbsApplied(WorkerResult):
    """A kill, resume, tag or delete went through: one line per run done, one per error."""

    done: list[str]
    errors: list[str]


# -- the run screen -----------------------------------------------------------------------------


@dataclass
class RunPolled(WorkerResult):
    """What one poll read from the run directory."""

    update: Update


@dataclass
class RunPollFailed(WorkerResult):
    """A poll raised; the next one tries again."""

    error: str


# -- the compare screen -------------------------------------------------------------------------


@dataclass
class CompareLoaded(WorkerResult):
    """The compared runs, read from their directories."""

    loaded: Loaded


@dataclass
class ExportWritten(WorkerResult):
    """The comparison was written to `path`; `skipped` runs had no final metrics, `repeated`
    runs repeated a seed of their configuration (`reporting.report.one_run_per_seed`)."""

    path: Path
    skipped: int
    repeated: list[str]


@dataclass
class ExportFailed(WorkerResult):
    error: str


# -- the new-run screen -------------------------------------------------------------------------


@dataclass
class PresetLoaded(WorkerResult):
    """A preset as the form shows it (`base`), or why it could not be read (`error`)."""

    name: str
    base: FormValues | None
    description: str
    error: str | None


@dataclass
class FormChecked(WorkerResult):
    """One check of the form through the engine."""

    validation: Validation


@dataclass
class LaunchFinished(WorkerResult):
    """The runs the form launched, one per seed; submitted to Slurm: each one's job id."""

    run_ids: list[str]
    slurm_jobs: list[str] = field(default_factory=list)


@dataclass
class LaunchFailed(WorkerResult):
    error: str


# -- widgets ------------------------------------------------------------------------------------


@dataclass
class FigureBuilt(WorkerResult):
    """A plot's figure drawn off the UI thread (or the error it drew instead)."""

    key: BuildKey
    kind: str
    text: Text


@dataclass
class GpuStatsRead(WorkerResult):
    """One NVML poll; None where there is no NVIDIA GPU to poll."""

    rows: tuple[GpuRow, ...] | None
