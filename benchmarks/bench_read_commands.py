"""Wall time of the commands that only read runs or check a config, and whether they import torch.

    python benchmarks/bench_read_commands.py [--repeats 5] [--source DIR]

Trains two real one-epoch digits runs into a temporary SRAT_HOME (the setup, not timed), then
times `srat runs ls`, `srat runs show ID`, `srat runs compare A B`, `srat presets ls` and a
dry run (`srat run -p digits-srat-ldam --dry-run`: what a launch checks), each as a fresh
process (`python -m srat_tui.cli`), median of the repeats, and runs each once more under
`python -X importtime` to list the heavy packages it imported. `--source DIR` puts another
checkout of srat first on PYTHONPATH (e.g. a `git worktree` of an older commit), so one machine
compares two versions with the same interpreter and the same runs. The commands run in the
temporary home: `python -m` puts its working directory first on sys.path, which from a
checkout would shadow `--source`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("torch", "torchvision", "textual", "sklearn", "scipy", "matplotlib")


def srat(args: list[str], env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *extra, "-m", "srat_tui.cli", *args],
        env=env,
        cwd=env["SRAT_HOME"],  # not a checkout: `-m` puts the working directory on sys.path
        capture_output=True,
        text=True,
        check=True,
    )


def heavy_imports(args: list[str], env: dict[str, str]) -> list[str]:
    """Top-level packages of HEAVY that `-X importtime` shows the command importing."""
    done = srat(args, env, "-X", "importtime")
    found = set()
    for line in done.stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        name = line.rsplit("|", 1)[-1].strip().split(".")[0]
        if name in HEAVY:
            found.add(name)
    return sorted(found)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--source", type=Path, default=None, help="checkout to import srat from")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="srat-bench-read-") as home:
        env = {**os.environ, "SRAT_HOME": home}
        if args.source is not None:
            env["PYTHONPATH"] = str(args.source.resolve())
        ids = []
        for seed in (0, 1):
            out = srat(
                ["run", "-p", "digits-ce", "--json", "--set", "train.epochs=1",
                 "--set", f"seed={seed}"],
                env,
            )  # fmt: skip
            ids.append(json.loads(out.stdout.splitlines()[0])["run_id"])
        commands = {
            "srat runs ls": ["runs", "ls"],
            "srat runs show": ["runs", "show", ids[0]],
            "srat runs compare": ["runs", "compare", *ids],
            "srat presets ls": ["presets", "ls"],
            "srat run --dry-run": ["run", "-p", "digits-srat-ldam", "--dry-run"],
        }
        source = str(args.source) if args.source else "installed"
        print(f"source: {source}; {args.repeats} repeats each, median wall time per process")
        for label, command in commands.items():
            times = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                srat(command, env)
                times.append(time.perf_counter() - started)
            heavy = heavy_imports(command, env)
            print(
                f"{label:<18} {statistics.median(times):6.3f} s   "
                f"heavy imports: {', '.join(heavy) or 'none'}"
            )


if __name__ == "__main__":
    main()
