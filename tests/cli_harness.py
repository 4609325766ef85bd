"""Running the `srat` console entry point in-process, as a shell would (shared by CLI tests)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from srat_tui.cli.app import main


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return self.err.splitlines()


Srat = Callable[..., Result]


def make_invoker(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Srat:
    """`srat ARGS...` through `main()`: SratError becomes exit 2 there, as in a shell."""

    def invoke(*args: str) -> Result:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["srat", *args])
        try:
            main()
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return invoke
