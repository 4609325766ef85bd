"""The engine's ways for a run to stop early: a user-facing error, a stop signal, and a
checkpoint request.

Torch-free on purpose: the detached worker installs the stop handlers and catches these while
it waits for its slot, before it imports the training code (and so torch).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class SratError(Exception):
    """A user-facing error: one clear line, exit code 2 at the CLI."""


class RunInterrupted(Exception):
    """SIGTERM/SIGINT (or SIGHUP, unless ignored) reached a running run: it stops and records
    `killed`."""


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def raise_interrupted(signum: int, _frame: object) -> None:
    """The handler for STOP_SIGNALS: raise RunInterrupted so the run records how it ended."""
    raise RunInterrupted(signal.Signals(signum).name)


@contextmanager
def stops_deferred() -> Iterator[None]:
    """A stop signal (one `raise_interrupted` handles) that arrives during the body is delivered
    once the body is done, so RunInterrupted never cuts a write in half: torch.save's writer,
    cut, raises an error of its own that hides the stop, and the run would read `failed`
    instead of `killed`. Main thread only (signals are handled there); elsewhere the body
    runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stops = [s for s in (*STOP_SIGNALS, signal.SIGHUP) if signal.getsignal(s) is raise_interrupted]
    caught: list[int] = []
    previous = {s: signal.signal(s, lambda signum, _frame: caught.append(signum)) for s in stops}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if caught:
            signal.raise_signal(caught[0])  # to raise_interrupted, now handling it again


def failure_message(err: Exception) -> str:
    """What exit.json says of a failure: a SratError's own line, else the type and message."""
    return str(err) if isinstance(err, SratError) else f"{type(err).__name__}: {err}"


class RunPreempted(Exception):
    """A checkpoint request (Slurm's warning signal before a time limit or a preemption)
    stopped training at a safe point, after saving a checkpoint of its exact position.

    Not a failure and not a SratError: the run is neither finished nor killed, and a resume
    continues it from `epoch` epochs done and `batch` batches into the next (0 at an epoch
    boundary) to the same results as an uninterrupted run.
    """

    def __init__(self, epoch: int, batch: int) -> None:
        # the position as args, so the exception pickles and unpickles as itself
        super().__init__(epoch, batch)
        self.epoch = epoch
        self.batch = batch

    def __str__(self) -> str:
        if self.batch == 0:
            return f"checkpointed after epoch {self.epoch}, at the epoch boundary"
        return f"checkpointed at epoch {self.epoch}, batch {self.batch} of epoch {self.epoch + 1}"
