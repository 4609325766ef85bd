"""What a run asks Slurm for: partition, time, GPUs, CPUs, memory, account, QOS and the rest.

A lab sets its defaults once in `<home>/config.toml` (`~/.srat/config.toml`):

    [backend.slurm]
    partition = "gpu"
    time = "12:00:00"
    gpus_per_run = 1
    cpus_per_run = 8
    mem = "32G"
    account = "mylab"
    signal_s = 300          # Slurm signals the job this long before its time limit
    max_parallel = 16       # array tasks at once
    [backend.slurm.extra]   # any other sbatch option, as --KEY=VALUE
    constraint = "a100"

and a command's options (`srat run --backend slurm --partition ...`) override them. Pure and
torch-free: parsing, validation and merging only; `jobs.slurm` submits.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from srat_engine.errors import SratError

_TIME_FORMATS = "MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS"
_TIME = re.compile(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?")
_MEM = re.compile(r"\d+[KMGT]?", re.IGNORECASE)
_SBATCH_KEY = re.compile(r"[a-z][a-z0-9_-]*")
# Options srat sets itself for every job: another value would break how it finds, logs or
# requeues the job, so `extra` may not set them (each has its own option, or none).
MANAGED_KEYS = frozenset(
    {"array", "output", "error", "signal", "open-mode", "job-name", "wrap", "time", "partition",
     "gpus-per-node", "cpus-per-task", "mem", "account", "qos", "requeue", "no-requeue",
     # one run is one task on one node: a second task would train the same run directory
     "nodes", "ntasks", "ntasks-per-node"}
)  # fmt: skip
DEFAULT_TIME = "12:00:00"
DEFAULT_SIGNAL_S = 300
# slurmctld checks time limits every 30 s, so its warning signal may come up to 30 s late
# relative to the lead asked for: the lead must leave a checkpoint's time beyond that.
SLURM_CHECK_PERIOD_S = 30


def slurm_time_minutes(text: str) -> int:
    """Minutes in a Slurm time limit (sbatch --time), rounded up as Slurm does.

    Formats (sbatch(1)): "M", "M:S", "H:M:S", "D-H", "D-H:M", "D-H:M:S"; "90" = 90 min,
    "1:30" = 2 min (1 min 30 s, rounded up), "2:00:00" = 120, "1-12" = 2160.
    """
    match = _TIME.fullmatch(text.strip())
    if match is None:
        raise SratError(f"{text!r} is not a Slurm time: use {_TIME_FORMATS}")
    days, first, second, third = match.groups()
    if days is None:
        # M | M:S | H:M:S
        if third is not None:
            hours, minutes, seconds = int(first), int(second), int(third)
        else:
            hours, minutes, seconds = 0, int(first), int(second or 0)
    else:
        # D-H | D-H:M | D-H:M:S
        hours, minutes, seconds = int(first), int(second or 0), int(third or 0)
    if (days is not None or third is not None) and (minutes > 59 or seconds > 59):
        raise SratError(f"{text!r}: minutes and seconds go up to 59 ({_TIME_FORMATS})")
    total = ((int(days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds
    if total <= 0:
        raise SratError(f"{text!r} must be longer than zero")
    return math.ceil(total / 60)


class SlurmOptions(BaseModel):
    """The sbatch request for each run (each array task); None: Slurm's own default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    partition: str | None = None
    time: str = DEFAULT_TIME
    gpus_per_run: int | None = Field(default=None, ge=0)  # None: 1, or 0 for a cpu run
    cpus_per_run: int | None = Field(default=None, ge=1)
    mem: str | None = None
    account: str | None = None
    qos: str | None = None
    max_parallel: int | None = Field(default=None, ge=1)  # array tasks at once (%P)
    signal_s: int = Field(default=DEFAULT_SIGNAL_S, ge=1)
    extra: dict[str, str] = Field(default_factory=dict)

    @field_validator("time")
    @classmethod
    def _time(cls, value: str) -> str:
        try:
            slurm_time_minutes(value)
        except SratError as err:
            raise ValueError(str(err)) from None
        return value.strip()

    @field_validator("mem")
    @classmethod
    def _mem(cls, value: str | None) -> str | None:
        if value is not None and not _MEM.fullmatch(value.strip()):
            raise ValueError(f"{value!r} is not a Slurm memory size (e.g. 32G, 4000M)")
        return None if value is None else value.strip()

    @field_validator("partition", "account", "qos")
    @classmethod
    def _word(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or any(c.isspace() for c in value.strip())):
            raise ValueError(f"{value!r} is not a Slurm name (one word)")
        return None if value is None else value.strip()

    @field_validator("extra", mode="before")
    @classmethod
    def _extra_values(cls, value: Any) -> Any:
        # TOML gives numbers and booleans (`[backend.slurm.extra] nice = 10`): sbatch takes text
        if isinstance(value, dict):
            return {key: str(item).lower() if isinstance(item, bool) else str(item)
                    for key, item in value.items()}  # fmt: skip
        return value

    @field_validator("extra")
    @classmethod
    def _extra(cls, value: dict[str, str]) -> dict[str, str]:
        checked = {}
        for key, item in value.items():
            name = key.strip().lstrip("-").replace("_", "-")
            if not _SBATCH_KEY.fullmatch(name):
                raise ValueError(f"{key!r} is not an sbatch option name")
            if name in MANAGED_KEYS:
                raise ValueError(f"--{name} is set by srat (use its own option, if it has one)")
            checked[name] = str(item)
        return checked

    @property
    def minutes(self) -> int:
        return slurm_time_minutes(self.time)

    def gpus_for(self, device: str) -> int:
        """GPUs a run on `device` (its config's) asks for: gpus_per_run, else 0 for cpu and 1
        for anything else (auto, cuda, cuda:N: Slurm picks the GPU, the job sees it as cuda:0)."""
        if self.gpus_per_run is not None:
            return self.gpus_per_run
        return 0 if device == "cpu" else 1

    def check_signal(self) -> None:
        """The warning signal must come before the time limit with room for Slurm's delay."""
        if self.signal_s + SLURM_CHECK_PERIOD_S >= self.minutes * 60:
            raise SratError(
                f"--signal-s {self.signal_s} leaves no training time in --time {self.time} "
                f"(Slurm may signal up to {SLURM_CHECK_PERIOD_S} s earlier still): lower it"
            )


def parse_assignments(items: list[str] | tuple[str, ...]) -> dict[str, str]:
    """`--slurm KEY=VALUE` items (e.g. constraint=a100, exclusive=) as a dict."""
    parsed = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SratError(f"--slurm expects KEY=VALUE (got {item!r})")
        parsed[key.strip()] = value.strip()
    return parsed


def load_defaults(config_file: Path) -> dict[str, Any]:
    """The `[backend.slurm]` table of a srat config file ({} when the file does not exist)."""
    try:
        with config_file.open("rb") as handle:
            doc = tomllib.load(handle)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise SratError(f"cannot read {config_file}: {err}") from None
    backend = doc.get("backend", {})
    table = backend.get("slurm", {}) if isinstance(backend, dict) else None
    if not isinstance(table, dict):
        raise SratError(f"{config_file}: [backend.slurm] must be a table")
    return table


def slurm_options(
    config_file: Path,
    overrides: dict[str, Any],
    extra: dict[str, str] | None = None,
    before: dict[str, Any] | None = None,
) -> SlurmOptions:
    """The options of one submission: `config_file`'s `[backend.slurm]` defaults, then `before`
    (a resubmitted run's last options, `jobs.slurm.previous_options`), then the command's
    `overrides` (None values are left to the layers below), and `extra` sbatch options on top
    of the file's and `before`'s. SratError (one line) for any bad value, naming where it came
    from."""
    try:  # the command's own --slurm items first, so an error names the right source
        SlurmOptions(extra=extra or {})
    except ValidationError as err:
        message = str(err.errors()[0]["msg"]).removeprefix("Value error, ")
        raise SratError(f"--slurm: {message}") from None
    defaults = load_defaults(config_file)
    previous = dict(before or {})
    previous_extra = dict(previous.pop("extra", None) or {})
    given = {key: value for key, value in overrides.items() if value is not None}
    merged = {**defaults, **previous, **given}
    merged["extra"] = {**dict(defaults.get("extra") or {}), **previous_extra, **(extra or {})}
    try:
        options = SlurmOptions(**merged)
    except ValidationError as err:
        first = err.errors()[0]
        loc = [str(part) for part in first["loc"]]
        name = loc[0] if loc else "options"
        where = "" if name in given else f" (in {config_file} [backend.slurm])"
        if name in previous and name not in given:
            where = " (the run's last submission)"
        flag = "--slurm" if name == "extra" else f"--{name.replace('_', '-')}"
        message = str(first["msg"]).removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            known = ", ".join(SlurmOptions.model_fields)
            raise SratError(f"unknown Slurm option {name!r}{where} (known: {known})") from None
        raise SratError(f"{flag}: {message}{where}") from None
    try:
        options.check_signal()
    except SratError as err:
        # the lead or the time limit (or both) may be the file's: name it, as for any bad value
        if not any(key in defaults and key not in given for key in ("time", "signal_s")):
            raise
        raise SratError(f"{err} (in {config_file} [backend.slurm])") from None
    return options
