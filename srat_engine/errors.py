"""The engine's two ways for a run to stop early: a user-facing error, and a stop signal.

Torch-free on purpose: the detached worker installs the stop handlers and catches these while
it waits for its slot, before it imports the training code (and so torch).
"""

from __future__ import annotations

import signal


class SratError(Exception):
    """A user-facing error: one clear line, exit code 2 at the CLI."""


class RunInterrupted(Exception):
    """SIGTERM/SIGINT (or SIGHUP, unless ignored) reached a running run: it stops and records
    `killed`."""


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def raise_interrupted(signum: int, _frame: object) -> None:
    """The handler for STOP_SIGNALS: raise RunInterrupted so the run records how it ended."""
    raise RunInterrupted(signal.Signals(signum).name)


def failure_message(err: Exception) -> str:
    """What exit.json says of a failure: a SratError's own line, else the type and message."""
    return str(err) if isinstance(err, SratError) else f"{type(err).__name__}: {err}"
