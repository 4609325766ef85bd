"""How fast srat-tui is: time to first frame, run-screen frame time, 1,000 runs.

    python benchmarks/bench_tui.py [--runs 1000] [--epochs 50] [--repeats 20] [--only SECTION]

Everything runs headless (Textual's `run_test`, the same app and screens as `srat-tui`) in
a temporary SRAT_HOME, and prints one plain line per measurement (medians):

- first frame: a fresh Python process, from its start (the kernel's process start time) to
  the runs screen showing its first refresh, for an empty home and for N runs;
- run screen with 10 and with 100 classes (CIFAR-100's count) after E epochs: a full
  repaint of every widget on the screen (the frame), the UI thread's work when a new epoch
  arrives, and the latency from appending an epoch to metrics.jsonl to it being drawn;
- runs screen with N runs: one refresh (index read + liveness, off the UI thread) and the
  UI thread's table update when nothing changed and when one run moved;
- new-run form: from `n` to the form filled from its preset and checked through the engine
  (Launch enabled), the first time in a process (its modules imported then) and again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the fake run directories of the interface tests
sys.path.insert(0, str(ROOT / "benchmarks"))


SECTIONS = ("first-frame", "run-screen", "runs-screen", "new-run")


def _median_ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:.1f} ms"


def _fill_index(home: Path, runs: int) -> None:
    from bench_runs_ls import synthetic_record

    from srat_engine.runs.index import RunIndex

    rng = random.Random(0)
    records = [synthetic_record(i, rng) for i in range(runs)]
    for record in records:  # no process behind them: keep them out of the liveness checks
        if record["status"] in ("running", "queued"):
            record["status"] = "killed"
    RunIndex(home / "index.json").replace_all(records)


# -- first frame (child process) -----------------------------------------------------------------


def _first_frame_child() -> None:
    import psutil

    started = psutil.Process().create_time()
    from tui_harness import pinned_context

    from srat_tui.tui.app import SratApp

    async def main() -> float:
        app = SratApp(pinned_context(Path(os.environ["SRAT_HOME"])))
        async with app.run_test(size=(160, 48)) as pilot:
            while app.runs_screen is None or not app.runs_screen.loaded:
                await pilot.pause(0.005)
            return time.time() - started

    print(json.dumps({"seconds": asyncio.run(main())}))


def first_frame(home: Path, repeats: int) -> list[float]:
    env = {**os.environ, "SRAT_HOME": str(home)}
    samples = []
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, __file__, "--first-frame-child"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        samples.append(json.loads(out.strip().splitlines()[-1])["seconds"])
    return samples


# -- run screen ---------------------------------------------------------------------------------


async def _until(pilot: Any, condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the screen did not settle")
        await pilot.pause(0.002)


async def run_screen(home: Path, classes: int, epochs: int, repeats: int) -> dict[str, list[float]]:
    from fake_runs import epoch_record, make_fake_run
    from tui_harness import pinned_context, settle

    from srat_tui.tui.app import SratApp
    from srat_tui.tui.screens.run_detail import RunScreen

    context = pinned_context(home, poll_seconds=0.05)
    overrides = ("data.dataset=cifar100",) if classes == 100 else ()
    run_id = f"bench-{classes}"
    total = epochs + repeats + 1
    run = make_fake_run(context.runs_root, run_id, overrides=overrides, epochs_done=epochs,
                        epochs=total, index=context.index)  # fmt: skip
    resolved = run.config()["resolved"]
    app = SratApp(context)
    timings: dict[str, list[float]] = {"frame": [], "ui_epoch": [], "latency": []}
    async with app.run_test(size=(160, 48)) as pilot:
        app.open_run(run_id)
        await _until(pilot, lambda: isinstance(app.screen, RunScreen))
        screen = app.screen
        assert isinstance(screen, RunScreen)
        await _until(pilot, lambda: len(screen.rows) == epochs)
        await settle(pilot, timeout=30.0, frame=0.002)  # and the plots built from them
        for _ in range(repeats):  # a full repaint: every widget's render cache dropped
            for widget in screen.walk_children(with_self=True):
                widget.refresh()  # drops its line caches: the next frame renders it again
            began = time.perf_counter()
            screen._compositor.render_full_update()
            timings["frame"].append(time.perf_counter() - began)
        original = screen.watch_records

        def timed_watch() -> None:  # no parameters: Textual passes watchers what they take
            began = time.perf_counter()
            original()
            timings["ui_epoch"].append(time.perf_counter() - began)

        screen.watch_records = timed_watch  # type: ignore[method-assign]
        for k in range(repeats):
            epoch = epochs + k + 1
            record = epoch_record(epoch, total, resolved["num_classes"], resolved["under_classes"])
            appended = time.perf_counter()
            run.append_metrics(record)
            await _until(pilot, lambda e=epoch: len(screen.rows) == e)
            await settle(pilot, timeout=30.0, frame=0.002)
            timings["latency"].append(time.perf_counter() - appended)
    return timings


# -- runs screen with many runs ------------------------------------------------------------------


async def runs_screen(home: Path, repeats: int) -> dict[str, list[float]]:
    from tui_harness import pinned_context

    from srat_engine.runs.sync import refreshed_records
    from srat_tui.tui.app import SratApp
    from srat_tui.tui.messages import RunsRefreshed
    from srat_tui.tui.screens.runs import build_rows

    context = pinned_context(home, poll_seconds=3600.0)
    timings: dict[str, list[float]] = {"refresh": [], "sync_idle": [], "sync_one": []}
    app = SratApp(context)
    async with app.run_test(size=(160, 48)) as pilot:
        await _until(pilot, lambda: app.runs_screen is not None and app.runs_screen.loaded)
        screen = app.runs_screen
        assert screen is not None
        for k in range(repeats):
            began = time.perf_counter()
            records = refreshed_records(context.index, context.runs_root)
            rows = build_rows(records, context.now())
            timings["refresh"].append(time.perf_counter() - began)
            began = time.perf_counter()
            screen.on_runs_refreshed(RunsRefreshed(rows))
            timings["sync_idle"].append(time.perf_counter() - began)
            moved = dict(records[0])
            moved["std_overall"] = 50.0 + k
            rows = build_rows([moved, *records[1:]], context.now())
            began = time.perf_counter()
            screen.on_runs_refreshed(RunsRefreshed(rows))
            timings["sync_one"].append(time.perf_counter() - began)
            await pilot.pause()
    return timings


# -- new-run form ---------------------------------------------------------------------------------


def _new_run_child(repeats: int) -> None:
    from tui_harness import pinned_context

    from srat_tui.tui.app import SratApp

    async def main() -> list[float]:
        app = SratApp(pinned_context(Path(os.environ["SRAT_HOME"]), poll_seconds=3600.0))
        samples = []
        async with app.run_test(size=(160, 48)) as pilot:
            await _until(pilot, lambda: app.runs_screen is not None and app.runs_screen.loaded)
            for _ in range(repeats):
                began = time.perf_counter()
                await pilot.press("n")
                await _until(pilot, lambda: getattr(app.screen, "validation", None) is not None)
                screen = app.screen
                await _until(pilot, lambda s=screen: s.validation.ok)  # type: ignore[attr-defined]
                samples.append(time.perf_counter() - began)
                await pilot.press("escape")
                await _until(pilot, lambda: app.screen is app.runs_screen)
        return samples

    print(json.dumps({"seconds": asyncio.run(main())}))


def new_run_form(home: Path, repeats: int) -> tuple[float, list[float]]:
    """(the first opening, the later ones) in a fresh process: the first imports the form's
    modules, as a user's first `n` does."""
    env = {**os.environ, "SRAT_HOME": str(home)}
    out = subprocess.run(
        [sys.executable, __file__, "--new-run-child", str(repeats + 1)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    first, *later = json.loads(out.strip().splitlines()[-1])["seconds"]
    return first, later


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument(
        "--only", action="append", choices=SECTIONS, help="measure this part only (repeatable)"
    )
    parser.add_argument("--first-frame-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--new-run-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.first_frame_child:
        _first_frame_child()
        return
    if args.new_run_child:
        _new_run_child(args.new_run_child)
        return
    only = set(args.only or SECTIONS)
    with tempfile.TemporaryDirectory() as tmp:
        empty, many = Path(tmp) / "empty", Path(tmp) / "many"
        empty.mkdir()
        many.mkdir()
        os.environ["SRAT_HOME"] = str(empty)
        repeats = max(3, args.repeats // 4)
        if "first-frame" in only:
            _fill_index(many, args.runs)
            first = statistics.median(first_frame(empty, repeats))
            print(f"first frame, empty home: {first:.2f} s")
            frame = statistics.median(first_frame(many, repeats))
            print(f"first frame, {args.runs} runs: {frame:.2f} s")
        for classes in (10, 100) if "run-screen" in only else ():
            home = Path(tmp) / f"run{classes}"
            home.mkdir()
            os.environ["SRAT_HOME"] = str(home)
            t = asyncio.run(run_screen(home, classes, args.epochs, args.repeats))
            print(
                f"run screen, {classes} classes, {args.epochs} epochs: "
                f"frame {_median_ms(t['frame'])}, UI thread per new epoch "
                f"{_median_ms(t['ui_epoch'])}, epoch appended -> drawn {_median_ms(t['latency'])}"
            )
        if "runs-screen" in only:
            if not (many / "index.json").exists():
                _fill_index(many, args.runs)
            os.environ["SRAT_HOME"] = str(many)
            t = asyncio.run(runs_screen(many, args.repeats))
            print(
                f"runs screen, {args.runs} runs: refresh (worker thread) "
                f"{_median_ms(t['refresh'])}, table update (UI thread) idle "
                f"{_median_ms(t['sync_idle'])}, one run changed {_median_ms(t['sync_one'])}"
            )
        if "new-run" in only:
            first, later = new_run_form(empty, repeats)
            print(
                f"new-run form, n -> checked: first {first * 1000:.0f} ms, "
                f"then {_median_ms(later)} (median of {len(later)})"
            )


if __name__ == "__main__":
    main()
