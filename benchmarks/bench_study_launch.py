"""How long a study of 88 runs (the CIFAR-10 and SVHN cells of the paper) takes to launch, and
what it costs while it waits: queued locally, and submitted to Slurm as one job array.

    python benchmarks/bench_study_launch.py [--local] [--slurm]   (both by default)

--local: `srat run --preset 'cifar10-*' --preset 'svhn-*' --set data.dataset=synthetic
--detach --device cpu --slots 1` into a temporary SRAT_HOME whose one CPU slot this process
holds, so every worker waits; prints the launch wall time and the waiting workers' summed RSS
(psutil, 5 s after), then kills the runs.
--slurm: starts the tests' one-node Slurm (tests/slurm_cluster.py; needs munge and slurm-wlm,
root), submits the same 88 runs with `--backend slurm --slurm hold=` (held: nothing trains),
prints the submission wall time, the array(s) and the tasks squeue lists, and the wall time of
`srat runs ls` over them, then cancels the array and stops the cluster.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
STUDY = ["--preset", "cifar10-*", "--preset", "svhn-*", "--set", "data.dataset=synthetic"]


def srat(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "srat_tui.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def local(base: Path) -> None:
    home = base / "home-local"
    (home / "slots").mkdir(parents=True)
    env = {**os.environ, "SRAT_HOME": str(home)}
    slot = os.open(home / "slots" / "cpu-0.lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(slot, fcntl.LOCK_EX)  # the one CPU slot: every worker waits for it
    start = time.monotonic()
    launched = json.loads(srat(["run", *STUDY, "--detach", "--device", "cpu", "--slots", "1",
                                "--json"], env))  # fmt: skip
    took = time.monotonic() - start
    time.sleep(5)
    rss = sum(
        psutil.Process(entry["pid"]).memory_info().rss
        for entry in launched
        if psutil.pid_exists(entry["pid"])
    )
    print(f"local: {len(launched)} runs queued in {took:.1f} s; "
          f"waiting workers {rss / 2**20:,.0f} MB RSS in all")  # fmt: skip
    for entry in launched:
        subprocess.run([sys.executable, "-m", "srat_tui.cli", "runs", "kill", entry["run_id"]],
                       env=env, capture_output=True, check=False)  # fmt: skip
    os.close(slot)


def slurm(base: Path) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from slurm_cluster import start_cluster, stop_cluster

    cluster = start_cluster(base / "slurm")
    try:
        env = {**os.environ, "SRAT_HOME": str(base / "home-slurm"), "SLURM_CONF": str(cluster.conf)}
        start = time.monotonic()
        entries = json.loads(srat(["run", *STUDY, "--backend", "slurm", "--device", "cpu",
                                   "--slurm", "hold=", "--json"], env))  # fmt: skip
        took = time.monotonic() - start
        arrays = sorted({str(e["slurm_job_id"]).split("_")[0] for e in entries})
        tasks = cluster.squeue()
        states = sorted({f"{t.state} ({t.reason})" for t in tasks})
        print(f"slurm: {len(entries)} runs submitted in {took:.1f} s as {len(arrays)} array(s); "
              f"squeue lists {len(tasks)} tasks: {', '.join(states)}")  # fmt: skip
        start = time.monotonic()
        srat(["runs", "ls"], env)
        print(f"slurm: srat runs ls over them {time.monotonic() - start:.2f} s")
        cluster.scancel(*arrays)
    finally:
        stop_cluster(cluster)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--local", action="store_true")
    parser.add_argument("--slurm", action="store_true")
    args = parser.parse_args()
    both = not (args.local or args.slurm)
    with tempfile.TemporaryDirectory(prefix="srat-study-") as tmp:
        if args.local or both:
            local(Path(tmp))
        if args.slurm or both:
            slurm(Path(tmp))


if __name__ == "__main__":
    main()
