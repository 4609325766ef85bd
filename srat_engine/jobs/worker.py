"""The detached run process: wait for a device slot, train, record how it ended.

Started by `supervisor.launch_detached` as `python -m srat_engine.jobs.worker RUN_DIR ...` in a new
session (so an SSH hangup or a closed terminal does not reach it), stdin from /dev/null and
output to the run directory. Not a user-facing command.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from pathlib import Path

import psutil

from srat_engine.errors import SratError
from srat_engine.jobs.slots import hold_slot, slots_for
from srat_engine.runs.rundir import RunDir, now_iso
from srat_engine.runs.sync import record_in_index
from srat_engine.training.trainer import RunInterrupted, execute


def _interrupt(signum: int, _frame: object) -> None:
    raise RunInterrupted(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m srat_engine.jobs.worker")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--devices", required=True, help="comma-separated: cpu or cuda:N")
    parser.add_argument("--per-device", type=int, default=1)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)

    run = RunDir(args.run_dir)
    pid = os.getpid()
    # the run must outlive the terminal: a hangup that still reaches it is ignored
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _interrupt)
    run.write_state(
        status="queued",
        pid=pid,
        pid_start=psutil.Process(pid).create_time(),
        host=socket.gethostname(),
        queued=now_iso(),
    )
    record_in_index(run)
    candidates = slots_for(args.devices.split(","), args.per_device)
    code = 0
    try:
        with hold_slot(run.id, candidates) as slot:
            run.write_state(slot=slot.name)
            run.log(f"slot {slot.name} acquired")
            record_in_index(run)
            execute(run, device=slot.device, resume=args.resume)
    except RunInterrupted as stop:
        if run.exit_record() is None:  # stopped while still queued
            run.write_state(status="killed")
            run.write_exit({"status": "killed", "error": f"stopped by {stop} while queued"})
        code = 130
    except SratError:
        code = 1  # execute() has recorded the error
    except Exception as err:
        if run.exit_record() is None:
            run.write_state(status="failed")
            run.write_exit({"status": "failed", "error": f"{type(err).__name__}: {err}"})
        code = 1
    finally:
        record_in_index(run)
    return code


if __name__ == "__main__":
    sys.exit(main())
