"""Time the run index at scale: `RunIndex.all()`, one `upsert`, the queue forecast and
`srat runs ls`.

    python benchmarks/bench_runs_ls.py [--runs 10000] [--repeats 5] [--queued 88]

Builds an index of N synthetic records (the fields `summarize_run` produces) in a temporary
SRAT_HOME with `replace_all`, and prints one plain line per measurement (median of repeats).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

# Runnable from a checkout without installing srat.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from srat_engine.runs.index import RunIndex
from srat_engine.runs.summary import summary_columns

METHODS = ("CE", "Focal", "LDAM", "CB-CE", "DRCB-LDAM", "SRAT-CE", "SRAT-LDAM", "GAIRAT")
DATASETS = (("cifar10", "resnet18"), ("cifar100", "resnet18"), ("svhn", "preact_resnet18"))
STATUSES = ("finished", "finished", "finished", "running", "failed", "killed", "created")


def synthetic_record(i: int, rng: random.Random) -> dict[str, Any]:
    """A record shaped like a real one: a finished paper-grid run or one in progress."""
    dataset, arch = rng.choice(DATASETS)
    method = rng.choice(METHODS)
    status = rng.choice(STATUSES)
    epochs = 200
    epoch = epochs if status == "finished" else rng.randrange(0, epochs)
    has_metrics = epoch > 0
    day = 1 + i % 28
    record = {
        "id": f"2406{day:02d}-{i // 3600 % 24:02d}{i // 60 % 60:02d}{i % 60:02d}-{i:04x}",
        "status": status,
        "method": method,
        "dataset": dataset,
        "imbalance": rng.choice(("exp", "step")),
        "ratio": rng.choice((10.0, 100.0)),
        "arch": arch,
        "seed": rng.randrange(5),
        "epoch": epoch,
        "epochs": epochs,
        "std_overall": round(rng.uniform(40, 85), 2) if has_metrics else None,
        "std_under": round(rng.uniform(10, 70), 2) if has_metrics else None,
        "rob_overall": round(rng.uniform(20, 50), 2) if has_metrics else None,
        "rob_under": round(rng.uniform(5, 35), 2) if has_metrics else None,
        "final": status == "finished",
        "tags": rng.sample(["paper", "table1", "ablation", "rerun", "bf16"], rng.randrange(3)),
        "notes": ["lr 0.05 looked better early"] if i % 17 == 0 else [],
        "source": f"exp100-{method.lower()}",
        "created": f"2024-06-{day:02d}T10:{i % 60:02d}:00+00:00",
        "updated": f"2024-06-{day:02d}T18:{i % 60:02d}:00+00:00",
        "device": f"cuda:{i % 8}",
        "host": "gpu-box-3",
        "pid": 10000 + i,
        "pid_start": 1718000000.0 + i,
        "error": "training loss became nan/inf in epoch 12" if status == "failed" else None,
        "config_key": f"{rng.getrandbits(48):012x}",
    }
    return {column: record.get(column) for column in summary_columns}  # newer fields: None


def forecast_seconds(
    records: list[dict[str, Any]], slots: Path, queued: int, repeats: int
) -> tuple[float, int, int]:
    """`with_queue_forecast` over `records` with the last `queued` of them waiting for one of
    eight GPU slots (tickets as `hold_slot` writes them), each slot held by a running run;
    its median time, the waiting runs and how many got an expected end."""
    from srat_engine.jobs.forecast import with_queue_forecast

    (slots / "queue").mkdir(parents=True, exist_ok=True)
    names = [f"cuda{k}-0" for k in range(8)]
    now = datetime.now(timezone.utc)
    shown = [dict(record) for record in records]
    for k, name in enumerate(names):  # the holders, timed, ending within the hour
        holder = shown[k]
        ends = (now + timedelta(minutes=5 * (k + 1))).isoformat(timespec="seconds")
        holder.update(status="running", device=f"cuda:{k}", ends=ends, epoch_seconds=2.0,
                      epoch_forwards=300_000.0, final_forwards=420_000.0)  # fmt: skip
        (slots / f"{name}.lock").write_text(str(holder["id"]))
    for number, waiter in enumerate(shown[-queued:] if queued else []):
        waiter.update(status="queued", epoch_forwards=300_000.0, final_forwards=420_000.0)
        ticket = {"slots": names, "queued_ns": number}
        (slots / "queue" / str(waiter["id"])).write_text(json.dumps(ticket))
    estimated = sum(
        r.get("ends") is not None for r in with_queue_forecast(shown, slots, now)[-queued:]
    )
    seconds = median_seconds(lambda: with_queue_forecast(shown, slots, now), repeats)
    return seconds, queued, estimated


def median_seconds(action: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def srat_command() -> list[str]:
    script = Path(sys.executable).parent / "srat"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "srat_tui.cli"]


def has_runs_group(command: list[str], env: dict[str, str]) -> bool:
    probe = subprocess.run(
        [*command, "runs", "--help"], env=env, capture_output=True, text=True, timeout=120
    )
    return probe.returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--queued", type=int, default=88, help="runs waiting for a slot")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="srat-bench-"))
    try:
        env = {**os.environ, "SRAT_HOME": str(home)}
        index = RunIndex(home / "index.json")
        rng = random.Random(0)
        records = [synthetic_record(i, rng) for i in range(args.runs)]

        started = time.perf_counter()
        index.replace_all(records)
        build = time.perf_counter() - started
        size_mb = index.path.stat().st_size / 1e6
        print(f"index: {args.runs} records, {size_mb:.1f} MB at {index.path}")
        print(f"replace_all: {build * 1000:.1f} ms (once)")

        all_s = median_seconds(index.all, args.repeats)
        assert len(index.all()) == args.runs
        print(f"RunIndex.all(): {all_s * 1000:.1f} ms (median of {args.repeats})")

        get_s = median_seconds(lambda: index.get(records[args.runs // 2]["id"]), args.repeats)
        print(f"RunIndex.get(): {get_s * 1000:.1f} ms (median of {args.repeats})")

        counter = iter(range(10**9))
        new_s = median_seconds(
            lambda: index.upsert({**records[0], "id": f"bench-new-{next(counter)}"}),
            args.repeats,
        )
        print(f"RunIndex.upsert() new run: {new_s * 1000:.1f} ms (median of {args.repeats})")
        update = {"id": records[1]["id"], "status": "running", "epoch": 57}
        upd_s = median_seconds(lambda: index.upsert(update), args.repeats)
        print(f"RunIndex.upsert() update: {upd_s * 1000:.1f} ms (median of {args.repeats})")

        queued_s, waiting, estimated = forecast_seconds(
            records, home / "slots", args.queued, args.repeats
        )
        print(
            f"with_queue_forecast(): {queued_s * 1000:.1f} ms for {waiting} waiting runs among "
            f"{args.runs}, {estimated} with an expected end (median of {args.repeats})"
        )

        command = srat_command()
        shown = f"SRAT_HOME={home} {' '.join(command)} runs ls"
        if not has_runs_group(command, env):
            print(f"srat runs ls: skipped (no `runs` command group yet in srat_tui.cli): {shown}")
            return

        def runs_ls() -> None:
            done = subprocess.run(
                [*command, "runs", "ls"], env=env, capture_output=True, text=True, timeout=300
            )
            if done.returncode != 0:
                raise SystemExit(f"`{shown}` failed ({done.returncode}): {done.stderr.strip()}")

        ls_s = median_seconds(runs_ls, args.repeats)
        print(f"srat runs ls: {ls_s * 1000:.0f} ms (median of {args.repeats}): {shown}")
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
