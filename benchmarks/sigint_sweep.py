"""What a Ctrl-C does to a foreground `srat run` at a random moment of its life: SIGINT each of
N runs of `srat run --preset demo --json` after a uniform random delay in [LO, HI] seconds
and count how each ended.

    .venv/bin/python benchmarks/sigint_sweep.py [-n 40] [--low 0.02] [--high 3.5] [--seed 0]

Every run gets its own temporary SRAT_HOME. The default window spans loading (the run is
created once torch is imported, ~1-3 s in on a 2-core box) and the first epochs. Prints one
line per exit code and per run status that `srat runs ls` reports afterwards:
- exit 130, or -2 (killed by SIGINT: Python's own exit when the Ctrl-C lands before srat's
  guard is entered), are what a shell reports as a Ctrl-C;
- exit 1 with "Fatal Python error: init_import_site" is a SIGINT in the interpreter's own
  startup (its first ~40 ms), before any srat code;
- status "killed" (stopped mid-training, resumable) or none (the Ctrl-C landed before the
  run was created) are right; "finished" means the Ctrl-C was lost and the run trained on.
Prints the first and last lines of the stderr of any run that exited other than 130.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

# The console script a user types, from the environment this runs in.
SRAT = [str(Path(sys.executable).with_name("srat"))]


def one_run(delay: float, home: Path) -> tuple[int, str, str]:
    """(exit code, status of the run it made or "none", stderr) of one interrupted run."""
    env = {**os.environ, "SRAT_HOME": str(home)}
    proc = subprocess.Popen(
        [*SRAT, "run", "--preset", "demo", "--json"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    listed = subprocess.run(
        [*SRAT, "runs", "ls", "--json"], env=env, capture_output=True, text=True, check=True
    )
    runs = json.loads(listed.stdout)
    status = runs[0]["status"] if runs else "none"
    return proc.returncode, status, stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=40, help="runs to interrupt")
    parser.add_argument("--low", type=float, default=0.02, help="shortest delay, seconds")
    parser.add_argument("--high", type=float, default=3.5, help="longest delay, seconds")
    parser.add_argument("--seed", type=int, default=0, help="seed of the delays")
    args = parser.parse_args()
    # A shell starts a background job with SIGINT ignored, and an ignored signal stays ignored
    # across exec: every run would then shrug the SIGINT off. A handler here is reset to the
    # default in each child, so the runs take SIGINT as a terminal's Ctrl-C would reach them.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    delays = random.Random(args.seed).uniform
    codes: Counter[int] = Counter()
    statuses: Counter[str] = Counter()
    with tempfile.TemporaryDirectory(prefix="srat-sigint-") as scratch:
        for i in range(args.n):
            delay = delays(args.low, args.high)
            code, status, stderr = one_run(delay, Path(scratch) / f"home{i}")
            codes[code] += 1
            statuses[status] += 1
            if code != 130:
                lines = stderr.strip().splitlines() or ["(no stderr)"]
                print(f"run {i} (SIGINT at {delay:.3f} s) exited {code}: {lines[0]} | {lines[-1]}")
    for code, count in sorted(codes.items()):
        print(f"exit {code}: {count}/{args.n}")
    for status, count in sorted(statuses.items()):
        print(f"status {status}: {count}/{args.n}")


if __name__ == "__main__":
    main()
