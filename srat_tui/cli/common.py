"""What every `srat` command shares: exit codes, the one-line error, the output console, and
opening a run by the id a person typed."""

from __future__ import annotations

import functools
import inspect
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console

from srat_engine.errors import SratError
from srat_engine.runs.home import Home
from srat_engine.runs.rundir import RunDir, validate_run_id
from srat_tui.cli.exit_codes import EXIT_INTERRUPTED
from srat_tui.render.format import inert

if TYPE_CHECKING:
    from srat_engine.jobs.slurm_options import SlurmOptions

R = TypeVar("R")


def interrupted_exit(stop: BaseException) -> int:
    """The exit code of a command a stop signal ended (`RunInterrupted`, named by its signal):
    128 + the signal's number, as a shell reports a process it killed (143 for SIGTERM, 129
    for SIGHUP); EXIT_INTERRUPTED when the name is no signal's."""
    try:
        return 128 + signal.Signals[str(stop)].value
    except KeyError:
        return EXIT_INTERRUPTED


# Options several commands take with the same meaning (and the same help text).
AsJson = Annotated[bool, typer.Option("--json", help="machine-readable output")]
PerGpu = Annotated[int, typer.Option("--per-gpu", help="runs per GPU at once")]


def error_line(message: str) -> None:
    """Errors are one plain line on stderr: no Rich wrapping that would split a path, and no
    control character of a name or path in it reaching the terminal (`inert`)."""
    print(inert(message), file=sys.stderr, flush=True)


def stdout_console(piped_width: int | None = None) -> Console:
    """The console a command prints to; piped_width: the width when stdout is not a terminal
    (whole rows for grep and awk rather than an 80-column guess), None to keep Rich's guess.

    Strings print as text: no markup or emoji codes read from them ("[/]" in a tag is shown),
    so styles come only from Rich objects (Text, tables)."""
    out = Console(highlight=False, soft_wrap=True, markup=False, emoji=False)
    if piped_width is not None and not out.is_terminal:
        out = Console(highlight=False, soft_wrap=True, markup=False, emoji=False, width=piped_width)
    return out


def open_run(run_id: str) -> RunDir:
    """The run of this srat home with that id; SratError for a malformed or unknown id."""
    return RunDir.open(Home.from_env().runs, validate_run_id(run_id))


# The Slurm backend's options (`srat run`, `srat runs resume`, `srat sweep`); unset ones come
# from <home>/config.toml [backend.slurm], then Slurm's defaults.
_SLURM = "Slurm (--backend slurm)"
Backend = Annotated[
    str | None,
    typer.Option("--backend", help="local (this machine's slots) or slurm (sbatch jobs)"),
]
Partition = Annotated[
    str | None, typer.Option("--partition", help="Slurm partition", rich_help_panel=_SLURM)
]
TimeLimit = Annotated[
    str | None,
    typer.Option("--time", help="time limit per run, e.g. 12:00:00 (default 12:00:00)",
                 rich_help_panel=_SLURM),
]  # fmt: skip
GpusPerRun = Annotated[
    int | None,
    typer.Option("--gpus-per-run", help="GPUs per run (default 1; 0 for cpu runs)",
                 rich_help_panel=_SLURM),
]  # fmt: skip
CpusPerRun = Annotated[
    int | None, typer.Option("--cpus-per-run", help="CPUs per run", rich_help_panel=_SLURM)
]
Mem = Annotated[
    str | None, typer.Option("--mem", help="memory per run, e.g. 32G", rich_help_panel=_SLURM)
]
Account = Annotated[
    str | None, typer.Option("--account", help="Slurm account", rich_help_panel=_SLURM)
]
Qos = Annotated[str | None, typer.Option("--qos", help="Slurm QOS", rich_help_panel=_SLURM)]
MaxParallel = Annotated[
    int | None,
    typer.Option("--max-parallel", help="array tasks running at once (%P)", rich_help_panel=_SLURM),
]
SignalSeconds = Annotated[
    int | None,
    typer.Option("--signal-s", help="seconds before the time limit to checkpoint and requeue "
                 "(default 300)", rich_help_panel=_SLURM),
]  # fmt: skip
SlurmExtra = Annotated[
    list[str] | None,
    typer.Option("--slurm", help="any other sbatch option, KEY=VALUE (repeatable)",
                 rich_help_panel=_SLURM),
]  # fmt: skip


# (parameter name, its option) for every command that can run on Slurm, in --help's order
_SLURM_PARAMETERS: tuple[tuple[str, Any], ...] = (
    ("backend", Backend), ("partition", Partition), ("time", TimeLimit),
    ("gpus_per_run", GpusPerRun), ("cpus_per_run", CpusPerRun), ("mem", Mem),
    ("account", Account), ("qos", Qos), ("max_parallel", MaxParallel),
    ("signal_s", SignalSeconds), ("extra", SlurmExtra),
)  # fmt: skip


def with_slurm_options(command: Callable[..., R]) -> Callable[..., R]:
    """Give a Typer command --backend and the Slurm options; it receives them as one
    `slurm_request: SlurmRequest` parameter (declared once here, not in every command)."""
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "slurm_request"]
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=option)
        for name, option in _SLURM_PARAMETERS
    ]

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> R:
        values = {name: kwargs.pop(name) for name, _ in _SLURM_PARAMETERS}
        return command(*args, slurm_request=SlurmRequest(**values), **kwargs)

    wrapper.__signature__ = signature.replace(parameters=[*own, *added])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in [*own, *added]}
    return wrapper


def chosen_backend(backend: str | None) -> str:
    """`--backend`, checked; local when not given."""
    chosen = (backend or "local").strip().lower()
    if chosen not in ("local", "slurm"):
        raise SratError(f"unknown backend {backend!r}: use local or slurm")
    return chosen


@dataclass(frozen=True)
class SlurmRequest:
    """A command's --backend and Slurm options, as typed (None: not given)."""

    backend: str | None = None
    partition: str | None = None
    time: str | None = None
    gpus_per_run: int | None = None
    cpus_per_run: int | None = None
    mem: str | None = None
    account: str | None = None
    qos: str | None = None
    max_parallel: int | None = None
    signal_s: int | None = None
    extra: list[str] | None = None

    def values(self) -> dict[str, Any]:
        """The SlurmOptions fields given on the command line (None for the rest)."""
        return {name: getattr(self, name) for name in _OPTION_FIELDS}

    def options(
        self,
        home: Home,
        *,
        local: tuple[object, object, int] = (None, None, 1),
        default_backend: str = "local",
        before: dict[str, Any] | None = None,
    ) -> SlurmOptions | None:
        """The validated Slurm options when the backend is slurm (defaults from `before`, the
        run's last submission, then <home>/config.toml), else None; SratError for Slurm
        options without --backend slurm, or `local` options (--gpus, --slots, --per-gpu
        given) with it."""
        from srat_engine.jobs.slurm_options import parse_assignments, slurm_options

        given = [f"--{n.replace('_', '-')}" for n, v in self.values().items() if v is not None]
        given += ["--slurm"] if self.extra else []
        if chosen_backend(self.backend or default_backend) != "slurm":
            if given:
                raise SratError(f"{given[0]} is a Slurm option: add --backend slurm")
            return None
        gpus, slots, per_gpu = local
        if gpus is not None or slots is not None or per_gpu != 1:
            raise SratError(
                "--gpus, --slots and --per-gpu schedule this machine's slots; on Slurm, Slurm "
                "allocates the GPUs: use --gpus-per-run"
            )
        extra = parse_assignments(self.extra or [])
        return slurm_options(home.config_file, self.values(), extra, before=before)


NO_SLURM = SlurmRequest()  # the default a decorated command's `slurm_request` never keeps

_OPTION_FIELDS = ("partition", "time", "gpus_per_run", "cpus_per_run", "mem", "account", "qos",
                  "max_parallel", "signal_s")  # fmt: skip
