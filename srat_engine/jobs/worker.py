"""The detached run process: wait for a device slot, train, record how it ended.

Started by `supervisor.launch_detached` as `python -m srat_engine.jobs.worker RUN_DIR --home HOME
...` in a new session (so an SSH hangup or a closed terminal does not reach it), stdin from
/dev/null and output to the run directory. Not a user-facing command. With several run
directories (`supervisor.launch_stack`) it is the worker of one stack: its runs wait for one
slot together and train as one stacked model (`training.stacked_trainer`).

A queued worker costs ~25 MB: everything it needs to wait (state, index, slots, stop signals)
is torch-free, and the training code, which pulls in torch (~500 MB), is imported only once the
slot is held. `[tool.importlinter]` keeps it so.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from contextlib import ExitStack, suppress
from pathlib import Path

from srat_engine.errors import (
    STOP_SIGNALS,
    RunInterrupted,
    SratError,
    failure_message,
    raise_interrupted,
)
from srat_engine.jobs.slots import hold_slot, slots_for, threads_per_slot
from srat_engine.runs.heartbeat import Heartbeat, interval_from_env
from srat_engine.runs.home import Home
from srat_engine.runs.liveness import LOCAL_BACKEND, process_start
from srat_engine.runs.rundir import RunDir, now_iso
from srat_engine.runs.sync import record_in_index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m srat_engine.jobs.worker")
    parser.add_argument(
        "run_dir", type=Path, nargs="+", help="a run, or the runs of one stack (the first leads)"
    )
    parser.add_argument("--home", type=Path, required=True, help="the srat home of the run")
    parser.add_argument("--devices", required=True, help="comma-separated: cpu or cuda:N")
    parser.add_argument("--per-device", type=int, default=1)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument(
        "--queued-ns", type=int, default=None, help="when it was queued (time.time_ns())"
    )
    args = parser.parse_args(argv)

    runs = [RunDir(path) for path in args.run_dir]
    lead = runs[0]
    home = Home(args.home)
    pid = os.getpid()
    # the run must outlive the terminal: a hangup that still reaches it is ignored
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    for sig in STOP_SIGNALS:
        signal.signal(sig, raise_interrupted)
    code = 0
    try:
        # inside the try: on a full disk even this first write fails, and says so
        for run in runs:
            run.write_state(
                status="queued",
                pid=pid,
                **process_start(pid),
                host=socket.gethostname(),
                queued=now_iso(),
                **LOCAL_BACKEND,
            )
            record_in_index(run, home.index)
        candidates = slots_for(args.devices.split(","), args.per_device)
        with ExitStack() as scope:
            # one heartbeat per run from queued to the end, so a run also beats while it waits
            # and while it imports torch; its beats stop by themselves once its end is recorded
            interval = interval_from_env(os.environ)
            for run in runs:
                scope.enter_context(Heartbeat(run, interval))
            # a stack holds one slot: its runs share one process and one device
            slot = scope.enter_context(
                hold_slot(lead.id, candidates, root=home.slots, queued_ns=args.queued_ns)
            )
            for run in runs:
                run.write_state(slot=slot.name)
                run.log(f"slot {slot.name} acquired")
                record_in_index(run, home.index)
            threads = cpu_share(lead, args.per_device) if slot.device == "cpu" else None
            # only now: a run that waits must not hold torch's ~500 MB (a queue of hundreds)
            if len(runs) == 1:
                from srat_engine.training.trainer import execute

                execute(
                    lead, device=slot.device, resume=args.resume, heartbeat_s=None, threads=threads
                )
            else:
                from srat_engine.training.stacked_trainer import execute_stacked

                finals = execute_stacked(
                    runs, device=slot.device, resume=args.resume, heartbeat_s=None, threads=threads
                )
                code = 0 if len(finals) == len(runs) else 1  # a run that failed on its own
    except RunInterrupted as stop:
        for run in runs:
            if run.exit_record() is None:  # stopped while still queued
                _record_end(run, "killed", f"stopped by {stop} while queued")
        code = 130
    except Exception as err:
        # execute() records what fails once training starts; this, what fails before it
        message = failure_message(err)
        for run in runs:
            if run.exit_record() is None:
                _record_end(run, "failed", message)
            _say(f"error: run {run.id} failed: {message}")
        code = 1
    finally:
        for run in runs:
            record_in_index(run, home.index)
    return code


def cpu_share(run: RunDir, per_device: int) -> int | None:
    """The intra-op threads of a run in one of `per_device` CPU slots (`threads_per_slot` of
    the CPUs this process may use), or None (torch's choice) for a lone slot or when
    OMP_NUM_THREADS is set: whoever set it has chosen."""
    if os.environ.get("OMP_NUM_THREADS") or per_device < 2:
        return None
    threads = threads_per_slot(len(os.sched_getaffinity(0)), per_device)
    run.log(f"{threads} CPU thread(s): one of {per_device} CPU slots")
    return threads


def _record_end(run: RunDir, status: str, error: str) -> None:
    """record_end, unless even the freed reserve is not room enough: then the run's readers
    find its process gone and call it `dead`."""
    with suppress(SratError):
        run.record_end(status, error=error, log=f"{status}: {error}")


def _say(line: str) -> None:
    """One line to output.log (this process's stderr), which may itself be on the full disk."""
    with suppress(OSError):
        print(" ".join(line.split()), file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
