"""Device strings, parsed in one place: `auto | cpu | mps | cuda | cuda:N` and GPU id lists.

Pure and torch-free, so the config schema and the commands that only read runs can use it
without importing torch; `hardware` says what this machine has (how many CUDA GPUs), and
`training.device.pick_device` and `jobs.supervisor.resolve_devices` check a request against it.
"""

from __future__ import annotations

from dataclasses import dataclass

from srat_engine.errors import SratError

_NAMED = ("auto", "cpu", "mps", "cuda")


@dataclass(frozen=True)
class Device:
    """A parsed device: `kind` auto | cpu | mps | cuda; `index` N of cuda:N (None for "cuda")."""

    kind: str
    index: int | None = None

    def __str__(self) -> str:
        return self.kind if self.index is None else f"{self.kind}:{self.index}"


def _is_number(text: str) -> bool:
    # ASCII only: str.isdigit() also accepts digits such as "³" that int() rejects
    return text.isascii() and text.isdigit()


def parse_device(text: str) -> Device:
    """`text` as a Device, case and surrounding spaces ignored; SratError if it is none."""
    value = text.strip().lower()
    if value in _NAMED:
        return Device(value)
    kind, _, index = value.partition(":")
    if kind == "cuda" and _is_number(index):
        return Device("cuda", int(index))
    raise SratError(f"unknown device {text!r}: use auto, cpu, cuda or cuda:N")


def parse_gpu_ids(text: str) -> list[int] | None:
    """`all` -> None (every visible GPU); `0,1,3` -> [0, 1, 3], repeats dropped, order kept."""
    value = text.strip().lower()
    if value == "all":
        return None
    parts = [part.strip() for part in value.split(",") if part.strip()]
    if not parts or not all(_is_number(part) for part in parts):
        raise SratError(f"--gpus expects 'all' or ids like 0,1,3 (got {text!r})")
    return list(dict.fromkeys(int(part) for part in parts))
