"""An active run's heartbeat: a daemon thread that sets `heartbeat` in state.json every interval.

A pid means nothing on another host, so a run's liveness there is read from its directory: a
heartbeat older than MISSED_BEATS intervals makes the run `lost` (`liveness.reconcile`). The
thread never touches the training loop; it only takes the run's lock for one small state write
(`RunDir.update_state`), and a write that fails (a full disk) is logged once and tried again at
the next beat, never raised. Torch-free: a queued worker beats before it imports training code.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import threading
from collections.abc import Mapping
from contextlib import suppress
from datetime import datetime, timezone
from types import TracebackType
from typing import Any

from srat_engine.runs.liveness import ACTIVE, HEARTBEAT_S, LOST
from srat_engine.runs.rundir import RunDir

# Beats are closer together than now_iso's seconds where an interval is short.
_TIMESPEC = "milliseconds"


def interval_from_env(environ: Mapping[str, str]) -> float:
    """$SRAT_HEARTBEAT_S (seconds, > 0) if set and valid, else HEARTBEAT_S; read by the edges."""
    try:
        interval = float(environ.get("SRAT_HEARTBEAT_S", HEARTBEAT_S))
    except ValueError:
        return HEARTBEAT_S
    return interval if math.isfinite(interval) and interval > 0 else HEARTBEAT_S


class Heartbeat:
    """`with Heartbeat(run):` beats from entry (the first beat at once) until exit.

    A beat writes only while state.json names this process (pid and host) and an active status:
    once the run has ended, or has been restarted by another process (a resume elsewhere), it
    writes nothing, so it can never follow the run's exit record. A run a reader called `lost`
    while this process was cut off gets back the status it had.
    """

    def __init__(self, run: RunDir, interval: float = HEARTBEAT_S) -> None:
        if not (math.isfinite(interval) and interval > 0):
            raise ValueError(f"heartbeat interval must be a positive number of seconds: {interval}")
        self.run = run
        self.interval = interval
        self._pid = os.getpid()
        self._host = socket.gethostname()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{run.id}", daemon=True)
        self._complained = False

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """End the thread. A beat that has taken the lock finishes first; one still waiting for
        it (the lock is busy) writes nothing once it gets it, so stopping never waits long."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)  # a beat still waiting on the lock writes nothing

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.beat()
            self._stop.wait(self.interval)

    def beat(self) -> None:
        """One heartbeat write; every failure is swallowed (logged once), the run must go on."""
        try:
            self.run.update_state(self._change)
        except Exception as err:  # a full disk, a lock held too long, a vanished directory
            self._complain(err)

    def _change(self, state: dict[str, Any]) -> dict[str, Any] | None:
        if self._stop.is_set() or (state.get("pid"), state.get("host")) != (self._pid, self._host):
            return None
        fields: dict[str, Any] = {
            "heartbeat": datetime.now(timezone.utc).isoformat(timespec=_TIMESPEC),
            "heartbeat_s": self.interval,
        }
        status = state.get("status")
        if status == LOST and state.get("lost_from") in ACTIVE:
            fields["status"] = state["lost_from"]
        elif status not in ACTIVE:
            return None
        return fields

    def _complain(self, err: Exception) -> None:
        if self._complained:
            return
        self._complained = True
        line = f"heartbeat not written (retrying every {self.interval:g} s): {err}"
        try:
            self.run.log(line)
        except Exception:  # the log is on the same full disk: say it where the run's output goes
            with suppress(OSError, ValueError):
                print(" ".join(line.split()), file=sys.stderr, flush=True)
