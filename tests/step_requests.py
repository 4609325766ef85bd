"""A checkpoint request set from inside training, as Slurm's warning signal would set it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest


def request_after_steps(
    monkeypatch: pytest.MonkeyPatch, module: Any, factory: str, steps: int
) -> threading.Event:
    """An event set right after the `steps`-th training step made by `module.factory` (the
    trainer's `graphed_step`, the stacked trainer's `graphed_stacked_step`), counted from
    the next step made; the factory is patched for the test."""
    event = threading.Event()
    real = getattr(module, factory)

    def counting(*args: Any, **kwargs: Any) -> Callable[..., None]:
        inner = real(*args, **kwargs)
        calls = 0

        def counted(*step_args: Any, **step_kwargs: Any) -> None:
            nonlocal calls
            inner(*step_args, **step_kwargs)
            calls += 1
            if calls == steps:
                event.set()

        return counted

    monkeypatch.setattr(module, factory, counting)
    return event
