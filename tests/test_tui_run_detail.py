"""The Run screen, driven with Pilot over fake run directories, and its pure series functions.

Records arrive through a timer and a thread worker, and figures are built in threads, so there
is no fixed number of frames to wait for: scenarios `settle` until the workers are done, or wait
for a condition. The suite has no asyncio plugin: each scenario runs under `asyncio.run`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fake_runs import CREATED, epoch_record, make_fake_run
from rich.text import Text
from slot_queue import queue_of_real_waiters
from textual.app import App
from textual.pilot import Pilot
from textual.widgets import DataTable, RichLog, Static, TabbedContent
from textual.widgets.data_table import ColumnKey
from tui_harness import pinned_context, scenario, settle, wait_for

from srat_engine.runs.progress import training_ends
from srat_engine.runs.rundir import RunDir
from srat_engine.runs.sync import add_note, refreshed_records, set_tag
from srat_tui.render.format import duration, time_left
from srat_tui.tui.context import AppContext
from srat_tui.tui.screens.run_detail import RunScreen, read_new_lines
from srat_tui.tui.widgets import curves
from srat_tui.tui.widgets.curves import (
    CurvePlot,
    Figure,
    accuracy_figure,
    build_figure,
    class_series,
    epoch_records,
    frequency_groups,
    group_series,
    lr_figure,
    separability_figure,
    summary_series,
)

NOW = datetime.fromisoformat(CREATED) + timedelta(minutes=3)
SIZE = (100, 30)
CIFAR100 = ("data.dataset=cifar100",)


# -- harness ----------------------------------------------------------------------------------


class RunApp(App[None]):
    """The smallest host: an app with a `context` that opens one run."""

    def __init__(self, context: AppContext, run_id: str) -> None:
        super().__init__()
        self.context = context
        self.run_id = run_id

    def on_mount(self) -> None:
        self.push_screen(RunScreen(self.run_id))


@pytest.fixture
def context(srat_home: Path) -> AppContext:
    return pinned_context(srat_home, poll_seconds=0.05, now=NOW)


def screen_of(pilot: Pilot[Any]) -> RunScreen:
    screen = pilot.app.screen
    assert isinstance(screen, RunScreen)
    return screen


async def opened(pilot: Pilot[Any], epochs: int | None = None) -> RunScreen:
    """The run screen once its records are in and the open tab's plots are drawn."""
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, RunScreen), "the run screen")
    screen = screen_of(pilot)
    await wait_for(pilot, lambda: bool(screen.config_doc), "the first poll")
    if epochs is not None:
        await wait_for(pilot, lambda: len(screen.rows) == epochs, f"{epochs} epochs")
    await settle(pilot)
    assert drawn(screen)
    return screen


def drawn(screen: RunScreen) -> bool:
    """Every plot on the open tab shows its figure (or its no-data message), not a placeholder."""
    pane = screen.query_one(TabbedContent).active
    plots = [plot for plot in screen.query(f"#{pane} CurvePlot") if plot.parent.display]  # type: ignore[union-attr]
    return all(plot.size.area > 0 and "building plot" not in shown(plot) for plot in plots)


def count_builds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The kind of each figure built from now on, in the order the builds started."""
    kinds: list[str] = []
    real_build = curves.build_figure

    def counted(figure: Figure, *args: Any, **kwargs: Any) -> Text:
        kinds.append(figure.kind)
        return real_build(figure, *args, **kwargs)

    monkeypatch.setattr(curves, "build_figure", counted)
    return kinds


def building(pilot: Pilot[Any], plot: CurvePlot) -> bool:
    """A build of `plot`'s figure is running in a worker."""
    return any(worker.node is plot and worker.is_running for worker in pilot.app.workers)


def header(screen: RunScreen) -> str:
    return str(screen.query_one("#run-header", Static).render())


def shown(plot: CurvePlot) -> str:
    rendered = plot.render()
    assert isinstance(rendered, Text)
    return rendered.plain


def last_epoch(plot: CurvePlot) -> int:
    return max(max(line.epochs) for line in plot.figure.lines if line.epochs)


def cell(table: DataTable[Any], cls: int, column: str) -> str:
    return str(table.get_cell(str(cls), column))


def log_lines(log: RichLog) -> list[str]:
    """The log's lines as shown: a long line wrapped over several rows comes back as several."""
    return [strip.text.rstrip() for strip in log.lines]


# What a run that cannot find its data records (`srat runs show` prints it as its error line):
# longer than an 80-column screen, so a cut line would lose the way out at its end
DATA_ERROR = (
    "CIFAR-10 not found under /home/someone/.srat/data/cifar-10-batches-py: "
    "put the dataset there or set data.download=true"
)


def failed_run(root: Path, run_id: str) -> RunDir:
    """A run that failed before its first epoch, ended as the trainer ends one."""
    run = make_fake_run(root, run_id, epochs_done=0, epochs=30, status="running")
    run.record_end("failed", error=DATA_ERROR, log=f"failed: {DATA_ERROR}")
    return run


# -- the screen -------------------------------------------------------------------------------


@scenario
async def test_opens_with_header_and_curves(context: AppContext) -> None:
    make_fake_run(context.runs_root, "run-a", epochs_done=5, epochs=10)
    async with RunApp(context, "run-a").run_test(size=SIZE) as pilot:
        screen = await opened(pilot, epochs=5)
        text = header(screen)
        for part in ("run-a", "SRAT-LDAM", "digits exp K=10", "running", "epoch 5/10", "3m ago"):
            assert part in text
        record = epoch_record(5, 10, 10, screen.under)
        assert f"std overall {record['std_overall']:.2f}" in text
        assert f"under {record['rob_under']:.2f}" in text
        std = screen.query_one("#std-plot", CurvePlot)
        rob = screen.query_one("#rob-plot", CurvePlot)
        # 10 classes: one line per class plus the emphasised overall and under lines
        assert std.figure.kind == "std:classes"
        assert len(std.figure.lines) == 12
        assert [line.label for line in std.figure.lines if line.emphasis] == ["under", "overall"]
        assert "standard accuracy" in shown(std)
        assert "robust accuracy" in shown(rob)
        assert not screen.query_one("#curves-empty").display


@scenario
async def test_a_running_run_s_header_says_the_training_time_left(context: AppContext) -> None:
    run = make_fake_run(context.runs_root, "run-a", epochs_done=5, epochs=10)
    for epoch in (6, 7):  # 60 s an epoch, the last one written 10 s before the pinned now
        at = (NOW - timedelta(seconds=10 + 60 * (7 - epoch))).isoformat(timespec="seconds")
        run.append_metrics({**epoch_record(epoch, 10, 10, [5, 6, 7, 8, 9]), "time": at,
                            "train_seconds": 59.0, "eval_seconds": 1.0})  # fmt: skip
    # epochs 2-7 average (4 x 1.5 + 2 x 60) / 6 = 21 s; 3 left: 63 s after 10 s ago
    left = time_left(training_ends(run.metrics(), 10), NOW)
    assert left == "53s"
    async with RunApp(context, "run-a").run_test(size=SIZE) as pilot:
        screen = await opened(pilot, epochs=7)
        assert f"epoch 7/10  (10s ago)  ~{left} left" in header(screen)


@scenario
async def test_a_stacked_run_s_header_names_the_runs_that_share_its_process(
    context: AppContext,
) -> None:
    stack = ["run-s0", "run-s1", "run-s2"]
    run = make_fake_run(context.runs_root, "run-s1", epochs_done=2, epochs=10)
    run.write_launch_record({"stack": stack})
    make_fake_run(context.runs_root, "run-alone", epochs_done=2, epochs=10)
    async with RunApp(context, "run-s1").run_test(size=SIZE) as pilot:
        screen = await opened(pilot, epochs=2)
        assert "stacked with run-s0, run-s2" in header(screen)
    async with RunApp(context, "run-alone").run_test(size=SIZE) as pilot:
        screen = await opened(pilot, epochs=2)
        assert "stacked" not in header(screen)


@scenario
async def test_the_header_shows_the_run_s_tags_and_latest_note_as_people_add_them(
    context: AppContext,
) -> None:
    run = make_fake_run(context.runs_root, "run-a", epochs_done=2, epochs=10)
    async with RunApp(context, "run-a").run_test(size=SIZE) as pilot:
        screen = await opened(pilot, epochs=2)
        assert "tags" not in header(screen) and "note" not in header(screen)
        set_tag(run, "fig5", index=context.index)  # from another terminal, while it shows
        set_tag(run, "[b]best", index=context.index)
        add_note(run, "lr too high?", index=context.index)
        await wait_for(pilot, lambda: "tags fig5, [b]best" in header(screen), "the tags")
        assert "note   lr too high?" in header(screen)
        add_note(run, "rerun with\nseed 1", index=context.index)
        await wait_for(pilot, lambda: "(+1 earlier)" in header(screen), "the second note")
        assert "note   rerun with seed 1" in header(screen)
        assert "lr too high?" not in header(screen)


@scenario
async def test_a_queued_run_s_header_says_when_it_should_start_and_end(
    context: AppContext,
) -> None:
    """Behind run-a (30 s epochs, 7 left: 210 s, then its final evaluation), run-b starts when
    run-a's slot frees and trains its 10 epochs at run-a's pace (300 s)."""
    index = context.index
    holder = make_fake_run(context.runs_root, "run-a", epochs_done=0, epochs=10, index=index)
    for epoch in (1, 2, 3):
        stamp = (NOW - timedelta(seconds=30 * (3 - epoch))).isoformat(timespec="seconds")
        holder.append_metrics({**epoch_record(epoch, 10, 10, [5, 6, 7, 8, 9]), "time": stamp,
                               "train_seconds": 29.0, "eval_seconds": 1.0})  # fmt: skip
    make_fake_run(context.runs_root, "run-b", epochs_done=0, epochs=10, status="queued",
                  index=index)  # fmt: skip
    refreshed_records(index, context.runs_root)  # run-a's pace into the index, as a listing does
    a = index.get("run-a")
    assert a is not None and a["epoch_seconds"] == 30.0
    final = 30.0 / a["epoch_forwards"] * a["final_forwards"]
    with queue_of_real_waiters(context.home.slots, "run-a", ["run-b"]):
        async with RunApp(context, "run-b").run_test(size=(140, 30)) as pilot:
            screen = await opened(pilot)
            await wait_for(pilot, lambda: screen.queued is not None, "the forecast")
            starts, ends = duration(210 + final), duration(210 + final + 300)
            assert f"starts in ~{starts}, training ends in ~{ends}" in header(screen)


@scenario
async def test_new_epoch_appears_and_replots_only_on_change(
    context: AppContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = make_fake_run(context.runs_root, "run-a", epochs_done=5, epochs=10)
    kinds = count_builds(monkeypatch)
    async with RunApp(context, "run-a").run_test(size=SIZE) as pilot:
        screen = await opened(pilot, epochs=5)
        std = screen.query_one("#std-plot", CurvePlot)
        builds, figure = kinds.count(std.figure.kind), std.figure
        # polls that find nothing new leave the figure alone
        polls = screen._cursor
        for _ in range(10):
            await pilot.pause(0.02)
        assert std.figure is figure and kinds.count(figure.kind) == builds
        assert screen._cursor == polls

        run.append_metrics(epoch_record(6, 10, 10, screen.under))
        await wait_for(pilot, lambda: "epoch 6/10" in header(screen), "the epoch counter")
        await settle(pilot)
        assert drawn(screen), "the new figure"
        assert last_epoch(std) == 6
        assert kinds.count(figure.kind) == builds + 1
        assert len(screen.records) == 6


@scenario
async def test_classes_tab_steps_epochs(context: AppContext) -> None:
    make_fake_run(context.runs_root, "run-a", epochs_done=5, epochs=10)
    async with RunApp(context, "run-a").run_test(size=SIZE) as pilot:
        screen = await opened(pilot, epochs=5)
        await pilot.press("3")
        assert screen.query_one(TabbedContent).active == "classes"
        table = screen.query_one("#classes-table", DataTable)
        caption = screen.query_one("#classes-caption", Static)
        counts, under = screen.counts, screen.under
        latest = epoch_record(5, 10, 10, under)
        assert "epoch 5/10" in str(caption.render())
        assert table.row_count == 10
        for cls in range(10):
            assert cell(table, cls, "count") == str(counts[cls])
            assert cell(table, cls, "std") == f"{latest['std_class'][cls]:.2f}"
            assert cell(table, cls, "rob") == f"{latest['rob_class'][cls]:.2f}"
            assert (cell(table, cls, "under") == "under") == (cls in under)

        await pilot.press("[")
        earlier = epoch_record(4, 10, 10, under)
        assert "epoch 4/10" in str(caption.render())
        assert screen.class_epoch == 3
        for cls in range(10):
            assert cell(table, cls, "std") == f"{earlier['std_class'][cls]:.2f}"
            assert cell(table, cls, "rob") == f"{earlier['rob_class'][cls]:.2f}"

        await pilot.press("]")  # back on the newest epoch: follows new ones again
        assert screen.class_epoch is None
        assert "following latest" in str(caption.render())
        for _ in range(10):
            await pilot.press("[")
        assert "epoch 1/10" in str(caption.render())  # clamped at the first epoch


@scenario
async def test_classes_table_widens_for_a_class_at_100(context: AppContext) -> None:
    """A 100.00 is one digit wider than the header "std %": the column grows, no cut cell."""
    run = make_fake_run(context.runs_root, "run-w", epochs_done=1, epochs=10)
    async with RunApp(context, "run-w").run_test(size=SIZE) as pilot:
        screen = await opened(pilot, epochs=1)
        await pilot.press("3")
        table = screen.query_one("#classes-table", DataTable)
        record = epoch_record(2, 10, 10, screen.under)
        record["std_class"][0] = record["rob_class"][0] = 100.0
        run.append_metrics(record)
        await wait_for(pilot, lambda: cell(table, 0, "std") == "100.00", "the new epoch")

        # DataTable widens a column for an updated cell on its next idle, not at the update
        def widened() -> bool:
            widths = [table.columns[ColumnKey(key)].content_width for key in ("std", "rob")]
            return min(widths) >= len("100.00")

        await wait_for(pilot, widened, "the std and rob columns to fit 100.00")


@scenario
async def test_classes_tab_steps_over_epochs_eval_every_left_out(context: AppContext) -> None:
    """With `eval.every`, epochs that measured nothing are not stepped to (their table would be
    all "-")."""
    import json

    run = make_fake_run(context.runs_root, "run-e", epochs_done=5, epochs=10)
    records = run.metrics()
    for record in records:
        if record.get("epoch") in (2, 4):  # not evaluated: what the trainer writes then
            record.update(dict.fromkeys(("std_overall", "std_under", "std_class", "rob_overall",
                                         "rob_under", "rob_class", "separability")))  # fmt: skip
    run.metrics_path.write_text("".join(json.dumps(r) + "\n" for r in records))
    async with RunApp(context, "run-e").run_test(size=SIZE) as pilot:
        screen = await opened(pilot, epochs=5)
        await pilot.press("3")
        caption = screen.query_one("#classes-caption", Static)
        assert "epoch 5/10" in str(caption.render())
        seen = []
        for _ in range(3):
            await pilot.press("[")
            seen.append(next(f"epoch {n}/10" for n in range(1, 6) if f"epoch {n}/10"
                             in str(caption.render())))  # fmt: skip
        assert seen == ["epoch 3/10", "epoch 1/10", "epoch 1/10"]


@scenario
async def test_hundred_classes_group_view_then_per_class_off_thread(
    context: AppContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_fake_run(context.runs_root, "run-c", overrides=CIFAR100, epochs_done=4, epochs=10)
    gate = threading.Event()
    build_threads: list[tuple[str, bool]] = []
    real_build = curves.build_figure

    def gated_build(figure: Figure, *args: Any, **kwargs: Any) -> Text:
        build_threads.append((figure.kind, threading.current_thread() is threading.main_thread()))
        if figure.kind.endswith(":classes"):
            gate.wait(timeout=20)  # a per-class figure stays "slow" until the test says so
        return real_build(figure, *args, **kwargs)

    monkeypatch.setattr(curves, "build_figure", gated_build)
    try:
        async with RunApp(context, "run-c").run_test(size=SIZE) as pilot:
            screen = await opened(pilot, epochs=4)
            std = screen.query_one("#std-plot", CurvePlot)
            assert screen.view == "groups"
            assert std.figure.kind == "std:groups"
            assert len(std.figure.lines) == 12  # 10 frequency groups + overall + under
            assert "10 groups" in str(screen.query_one("#curves-legend", Static).render())

            await pilot.press("p")
            assert screen.view == "classes"
            await wait_for(pilot, lambda: building(pilot, std), "the per-class build to start")
            assert len(std.figure.lines) == 102
            assert "building plot (100 lines)" in shown(std)
            # the build is still running: the UI answers keys meanwhile
            await pilot.press("2")
            assert screen.query_one(TabbedContent).active == "loss"
            await pilot.press("1")
            assert screen.query_one(TabbedContent).active == "curves"
            assert building(pilot, std) and "building plot (100 lines)" in shown(std)

            gate.set()
            await settle(pilot)
            assert drawn(screen) and "per class" in shown(std)
            await pilot.press("p")
            assert screen.view == "groups"
            await settle(pilot)
            assert drawn(screen) and "10 groups" in shown(std)
    finally:
        gate.set()
    assert build_threads and not any(on_main for _, on_main in build_threads)
    assert {"std:classes", "rob:classes"} <= {kind for kind, _ in build_threads}


@scenario
async def test_run_without_metrics_shows_empty_state(context: AppContext) -> None:
    run = make_fake_run(context.runs_root, "run-q", epochs_done=0, status="queued")
    async with RunApp(context, "run-q").run_test(size=(80, 24)) as pilot:
        screen = await opened(pilot, epochs=0)
        empty = screen.query_one("#curves-empty", Static)
        assert empty.display
        assert "No epochs recorded yet" in str(empty.render())
        assert not screen.query_one("#curves-plots").display
        assert "epoch 0/10" in header(screen) and "no metrics yet" in header(screen)
        await pilot.press("3")
        assert "No epochs recorded yet" in str(screen.query_one("#classes-caption").render())
        await pilot.press("2")
        assert "No epochs recorded yet" in shown(screen.query_one("#loss-plot", CurvePlot))
        await pilot.press("[", "]", "p")  # nothing to step through: no crash

        run.append_metrics(epoch_record(1, 10, 10, screen.under))
        await pilot.press("1")
        await wait_for(pilot, lambda: bool(screen.rows), "the first epoch")
        await settle(pilot)
        assert drawn(screen), "the first figure"
        assert not empty.display


@scenario
async def test_torn_last_line_is_ignored(context: AppContext) -> None:
    run = make_fake_run(context.runs_root, "run-a", epochs_done=5, epochs=10)
    with run.metrics_path.open("a") as handle:
        handle.write('{"event": "epoch", "epoch": 6, "std_cl')  # a crash mid-append
    async with RunApp(context, "run-a").run_test(size=SIZE) as pilot:
        screen = await opened(pilot, epochs=5)
        assert "epoch 5/10" in header(screen)
        run.append_metrics(epoch_record(6, 10, 10, screen.under))  # starts on a new line
        await wait_for(pilot, lambda: "epoch 6/10" in header(screen), "the next record")
        assert [row["epoch"] for row in screen.rows] == [1, 2, 3, 4, 5, 6]


@scenario
async def test_a_record_with_values_that_are_no_numbers_is_drawn_without_them(
    context: AppContext,
) -> None:
    run = make_fake_run(context.runs_root, "run-a", epochs_done=5, epochs=10)
    damaged = epoch_record(6, 10, 10, [5, 6, 7, 8, 9])
    # a hand edit or a foreign writer: strings, a dict, a bool where numbers belong
    damaged["std_class"] = [1, "a", 3, 4, 5, 6, 7, 8, 9, 10]
    damaged["rob_class"] = [{}, 2, 3, 4, 5, 6, 7, 8, 9, True]
    damaged["std_overall"] = "x"
    run.append_metrics(damaged)
    async with RunApp(context, "run-a").run_test(size=SIZE) as pilot:
        screen = await opened(pilot, epochs=6)
        std = screen.query_one("#std-plot", CurvePlot)
        by_label = {line.label: line for line in std.figure.lines}
        assert 6 in by_label["0"].epochs and 6 not in by_label["1"].epochs
        assert 6 not in by_label["overall"].epochs
        await pilot.press("3")
        await settle(pilot)
        table = screen.query_one("#classes-table", DataTable)
        assert cell(table, 1, "std") == "-" and cell(table, 2, "std") == "3.00"
        assert cell(table, 0, "rob") == "-" and cell(table, 9, "rob") == "-"
        await pilot.press("2", "4", "5", "1")
        await settle(pilot)
        assert pilot.app.is_running and pilot.app.screen is screen


@scenario
async def test_standard_and_robust_plots_share_the_epochs_seen(context: AppContext) -> None:
    """Robust accuracy measured from epoch 5 on: both plots still span epochs 1-10 with the
    same whole-epoch ticks, so they line up side by side."""
    import json

    run = make_fake_run(context.runs_root, "run-x", epochs_done=10, epochs=10)
    records = run.metrics()
    for record in records:
        if record["epoch"] < 5:
            record.update(rob_overall=None, rob_under=None, rob_class=None, rob_n=None)
    run.metrics_path.write_text("".join(json.dumps(r) + "\n" for r in records))
    async with RunApp(context, "run-x").run_test(size=SIZE) as pilot:
        screen = await opened(pilot, epochs=10)
        std = screen.query_one("#std-plot", CurvePlot)
        rob = screen.query_one("#rob-plot", CurvePlot)
        assert min(min(line.epochs) for line in rob.figure.lines if line.epochs) == 5
        assert std.figure.x_range == rob.figure.x_range == (1, 10)
        # the tick row of each drawn plot (its last line) labels the same epochs
        ticks = [shown(plot).splitlines()[-1].split() for plot in (std, rob)]
        assert ticks[0] == ticks[1] and ticks[0][-1] == "10"
        assert all(tick.isdigit() for tick in ticks[0])


def test_build_figure_spans_the_figure_s_x_range() -> None:
    """A line that starts late is drawn on the figure's whole span, whole-epoch ticks."""
    late = [row if row["epoch"] >= 5 else {**row, "rob_overall": None, "rob_under": None,
            "rob_class": None} for row in rows(10)]  # fmt: skip
    figure = accuracy_figure(late, "rob", view="classes", counts=[4, 3, 2, 1])
    assert figure.x_range == (1, 10)
    ticks = build_figure(figure, 60, 15, "default").plain.splitlines()[-1].split()
    assert ticks == ["2", "4", "6", "8", "10"]  # not 5 6 7 8 9 10: the axis starts at 1
    own = build_figure(replace(figure, x_range=None), 60, 15, "default")
    assert own.plain.splitlines()[-1].split() == ["5", "6", "7", "8", "9", "10"]


@scenario
async def test_robust_columns_missing_on_some_epochs(context: AppContext) -> None:
    run = make_fake_run(context.runs_root, "run-a", epochs_done=4, epochs=10)
    under = RunDir.open(context.runs_root, "run-a").config()["resolved"]["under_classes"]
    no_rob = {"rob_overall": None, "rob_under": None, "rob_class": None, "rob_n": None}
    run.append_metrics({**epoch_record(5, 10, 10, under), **no_rob})
    async with RunApp(context, "run-a").run_test(size=SIZE) as pilot:
        screen = await opened(pilot, epochs=5)
        assert "epoch 5/10" in header(screen)
        assert "@4" in header(screen)  # robust columns from the last epoch that has them
        rob = screen.query_one("#rob-plot", CurvePlot)
        assert last_epoch(rob) == 4
        await pilot.press("3")
        assert cell(screen.query_one("#classes-table", DataTable), 0, "rob") == "-"


@scenario
async def test_log_tab_follows_log_files(context: AppContext) -> None:
    run = make_fake_run(context.runs_root, "run-a", epochs_done=2, epochs=10)
    async with RunApp(context, "run-a").run_test(size=SIZE) as pilot:
        screen = await opened(pilot, epochs=2)
        await pilot.press("4")
        log = screen.query_one("#log-txt", RichLog)
        output = screen.query_one("#output-log", RichLog)
        await wait_for(
            pilot,
            lambda: any("fake run for interface tests" in line for line in log_lines(log)),
            "the first lines",
        )
        assert not output.display
        run.log("epoch 3 done")
        (run.path / "output.log").write_text("worker started\n")
        await wait_for(pilot, lambda: any("epoch 3 done" in ln for ln in log_lines(log)), "log.txt")
        await wait_for(pilot, lambda: output.display and bool(output.lines), "output.log")
        assert log_lines(output)[-1] == "worker started"


@scenario
async def test_a_failed_run_says_why_in_the_header_curves_and_log(context: AppContext) -> None:
    """The error of its exit record, whole (wrapped at 80 columns, not cut), as `srat runs
    show` prints it; the Curves tab says it failed before any metrics; the log wraps it."""
    failed_run(context.runs_root, "run-f")
    async with RunApp(context, "run-f").run_test(size=(80, 24)) as pilot:
        screen = await opened(pilot, epochs=0)
        await wait_for(pilot, lambda: "failed" in header(screen), "the failed status")
        await pilot.pause()
        widget = screen.query_one("#run-header", Static)
        rows = [line.text.rstrip() for line in widget.render_lines(widget.region.reset_offset)]
        shown = " ".join(row.strip() for row in rows)
        assert "● failed" in shown and "epoch 0/30" in shown
        assert f"error  {DATA_ERROR}" in shown  # every word of it, over several rows
        assert all(len(row) <= 80 for row in rows) and len(rows) >= 4

        empty = str(screen.query_one("#curves-empty", Static).render())
        assert "The run failed before writing any metrics." in empty
        assert "Curves appear here" not in empty
        assert DATA_ERROR in " ".join(empty.split())

        await pilot.press("4")
        log = screen.query_one("#log-txt", RichLog)
        await wait_for(pilot, lambda: any("failed:" in ln for ln in log_lines(log)), "the log")
        lines = log_lines(log)
        start = next(i for i, line in enumerate(lines) if "failed:" in line)
        assert max(len(line) for line in lines) < 80  # wrapped inside the border
        assert " ".join(lines[start:]).endswith("data.download=true")


@scenario
async def test_a_run_that_fails_while_shown_says_so(context: AppContext) -> None:
    """Running when opened, failed at the next poll: the header and the Curves tab follow."""
    run = make_fake_run(context.runs_root, "run-g", epochs_done=0, epochs=30)
    async with RunApp(context, "run-g").run_test(size=SIZE) as pilot:
        screen = await opened(pilot, epochs=0)
        assert "error" not in header(screen)
        assert "Curves appear here" in str(screen.query_one("#curves-empty", Static).render())
        run.record_end("failed", error=DATA_ERROR)
        await wait_for(pilot, lambda: DATA_ERROR in header(screen), "the error")
        empty = screen.query_one("#curves-empty", Static)
        assert "failed before writing any metrics" in str(empty.render())


@scenario
async def test_a_failed_run_with_epochs_keeps_its_curves_and_shows_its_error(
    context: AppContext,
) -> None:
    run = make_fake_run(context.runs_root, "run-h", epochs_done=3, epochs=10)
    run.record_end("failed", error="CUDA out of memory")
    async with RunApp(context, "run-h").run_test(size=SIZE) as pilot:
        screen = await opened(pilot, epochs=3)
        assert "error  CUDA out of memory" in header(screen)
        assert not screen.query_one("#curves-empty").display


@scenario
async def test_a_resumed_run_does_not_show_its_last_error(context: AppContext) -> None:
    """Queued or running again: an exit record not yet cleared is not why it stands."""
    run = make_fake_run(context.runs_root, "run-r", epochs_done=2, epochs=10)
    run.write_exit({"status": "failed", "error": DATA_ERROR})  # running, as state.json says
    async with RunApp(context, "run-r").run_test(size=SIZE) as pilot:
        screen = await opened(pilot, epochs=2)
        assert "running" in header(screen) and "error" not in header(screen)


@scenario
async def test_config_tab_and_back(context: AppContext) -> None:
    make_fake_run(context.runs_root, "run-a", epochs_done=2, epochs=10)
    async with RunApp(context, "run-a").run_test(size=SIZE) as pilot:
        screen = await opened(pilot, epochs=2)
        await pilot.press("5")
        tree = screen.query_one("#config-tree")
        labels = [str(node.label) for node in tree.root.children]  # type: ignore[attr-defined]
        assert labels[:2] == ["config", "resolved"]
        await pilot.press("b")
        assert not isinstance(pilot.app.screen, RunScreen)
        pilot.app.push_screen(RunScreen("run-a"))
        await opened(pilot)
        await pilot.press("escape")
        assert not isinstance(pilot.app.screen, RunScreen)


@scenario
async def test_missing_run_says_so(context: AppContext) -> None:
    async with RunApp(context, "nope").run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, RunScreen), "the screen")
        screen = screen_of(pilot)
        await wait_for(pilot, lambda: screen.error is not None, "the error")
        assert "no run 'nope'" in header(screen)
        assert "no run 'nope'" in str(screen.query_one("#curves-empty", Static).render())


@scenario
async def test_a_run_moved_away_and_back_is_shown_again(context: AppContext) -> None:
    run = make_fake_run(context.runs_root, "run-a", epochs_done=5, epochs=10)
    away = context.runs_root.parent / "elsewhere"
    async with RunApp(context, "run-a").run_test(size=SIZE) as pilot:
        screen = await opened(pilot, epochs=5)
        run.path.rename(away)
        await wait_for(pilot, lambda: screen.error is not None, "the error")
        assert "no run 'run-a'" in header(screen)
        assert not screen.query_one("#curves-plots").display
        away.rename(run.path)  # back, as a sync or a restore from the trash brings it
        await wait_for(pilot, lambda: screen.error is None, "the run again")
        await settle(pilot)
        assert "epoch 5/10" in header(screen)
        assert screen.query_one("#curves-plots").display and drawn(screen)
        await pilot.press("4")
        await settle(pilot)
        log = log_lines(screen.query_one("#log-txt", RichLog))
        # the log is read anew from its tail: shown once, not twice over
        assert sum("fake run for interface tests" in line for line in log) == 1, log
        run.append_metrics(epoch_record(6, 10, 10, screen.under))
        await wait_for(pilot, lambda: "epoch 6/10" in header(screen), "polling goes on")
        assert [row["epoch"] for row in screen.rows] == [1, 2, 3, 4, 5, 6]


@scenario
async def test_through_srat_app(context: AppContext, monkeypatch: pytest.MonkeyPatch) -> None:
    app_module = pytest.importorskip("srat_tui.tui.app")
    gpu_panel = pytest.importorskip("srat_tui.tui.widgets.gpu_panel")
    monkeypatch.setattr(gpu_panel, "probe_gpus", lambda: None)
    make_fake_run(context.runs_root, "run-a", epochs_done=3, epochs=10, index=context.index)
    app = app_module.SratApp(context)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        before = type(app.screen)
        app.open_run("run-a")
        screen = await opened(pilot, epochs=3)
        assert "epoch 3/10" in header(screen)
        await pilot.press("escape")
        assert type(app.screen) is before


# -- pure functions ---------------------------------------------------------------------------


def rows(epochs: int = 3, classes: int = 4) -> list[dict[str, Any]]:
    return [epoch_record(e, 10, classes, [classes - 1]) for e in range(1, epochs + 1)]


def test_epoch_records_keep_the_latest_of_each_epoch_in_order() -> None:
    first, second, third = rows(3)
    redone = {**second, "loss": 0.123}
    records = [first, second, third, {"event": "resume", "from_epoch": 1}, redone]
    records.append({"event": "final", "std_overall": 1.0})
    assert [r["epoch"] for r in epoch_records(records)] == [1, 2, 3]
    assert epoch_records(records)[1]["loss"] == 0.123


def test_summary_and_class_series_skip_epochs_without_values() -> None:
    data = rows(3)
    data[1] = {**data[1], "rob_overall": None, "rob_under": None, "rob_class": None}
    summary = summary_series(data, "rob")
    assert summary["overall"] == ([1, 3], [data[0]["rob_overall"], data[2]["rob_overall"]])
    per_class = class_series(data, "rob", ["a", "b", "c", "d"])
    assert list(per_class) == ["a", "b", "c", "d"]
    assert per_class["c"] == ([1, 3], [data[0]["rob_class"][2], data[2]["rob_class"][2]])


def test_frequency_groups_order_by_count_and_split_evenly() -> None:
    counts = [5, 50, 20, 20, 1, 7, 9]
    groups = frequency_groups(counts, 3)
    assert groups == [[1, 2, 3], [6, 5], [0, 4]]
    assert frequency_groups(list(range(100, 0, -1)), 10) == [
        list(range(g * 10, g * 10 + 10)) for g in range(10)
    ]
    assert frequency_groups([3, 2], 10) == [[0], [1]]  # fewer classes than groups


def test_group_series_are_means_over_each_group() -> None:
    data = [
        {"event": "epoch", "epoch": 1, "std_class": [10.0, 20.0, 30.0, 40.0]},
        {"event": "epoch", "epoch": 2, "std_class": [50.0, None, 70.0, 80.0]},
        {"event": "epoch", "epoch": 3, "std_class": None},
    ]
    series = group_series(data, "std", [[0, 1], [2, 3]], [4, 3, 2, 1])
    assert series == {"G1 n4-3": ([1, 2], [15.0, 50.0]), "G2 n2-1": ([1, 2], [35.0, 75.0])}


def test_accuracy_figure_views() -> None:
    counts = list(range(100, 0, -1))
    data = rows(2, classes=100)
    groups = accuracy_figure(data, "std", view="groups", counts=counts)
    per_class = accuracy_figure(data, "std", view="classes", counts=counts)
    assert len(groups.lines) == 12 and len(per_class.lines) == 102
    assert groups != per_class and groups.kind != per_class.kind
    assert accuracy_figure(data, "std", view="groups", counts=counts) == groups
    assert not accuracy_figure([], "rob", view="groups", counts=counts).has_data


def test_build_figure_draws_text_of_the_requested_size() -> None:
    figure = accuracy_figure(rows(5), "std", view="classes", counts=[4, 3, 2, 1])
    text = build_figure(figure, 60, 15, "default")
    lines = text.plain.splitlines()
    assert len(lines) == 15 and max(len(line) for line in lines) <= 60
    assert "standard accuracy" in text.plain


def test_separability_figure_follows_the_epoch_records() -> None:
    data = rows(3)
    data[1] = {**data[1], "separability": None}  # an epoch recorded before the field existed
    (line,) = separability_figure(data).lines
    assert list(line.epochs) == [1, 3]
    assert list(line.values) == [data[0]["separability"], data[2]["separability"]]


def test_lr_figure_uses_log_axis_only_across_decades() -> None:
    data = rows(3)
    assert not lr_figure(data).log_y  # constant lr
    data[2] = {**data[2], "lr": 0.001}
    assert lr_figure(data).log_y


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "log.txt"
    path.write_text("".join(f"line {i}\n" for i in range(100)))
    yield path


def test_read_new_lines_tails_then_follows(log_file: Path) -> None:
    lines, _ = read_new_lines(log_file, -1, tail_bytes=32)  # "line 96\n" ... exactly
    assert lines == ["line 96", "line 97", "line 98", "line 99"]
    lines, offset = read_new_lines(log_file, -1, tail_bytes=30)
    assert lines == ["line 97", "line 98", "line 99"]  # the partial "ne 96" is dropped
    with log_file.open("a") as handle:
        handle.write("line 100\nline 1")  # the last line is still being written
    lines, offset = read_new_lines(log_file, offset, tail_bytes=30)
    assert lines == ["line 100"]
    assert read_new_lines(log_file, offset) == ([], offset)
    log_file.write_text("fresh\n")  # truncated (rotated): start again from the top
    assert read_new_lines(log_file, offset)[0] == ["fresh"]
    assert read_new_lines(log_file.with_name("missing.log"), -1) == (None, -1)


@pytest.mark.parametrize("run_id", ["exp10-srat-ldam-s0", "exp10-srat-ldam-s0-long"])
@scenario
async def test_the_header_breaks_between_its_facts_at_80_columns(
    context: AppContext, run_id: str
) -> None:
    """At 80 columns the first line (id, method, data, status, epoch, age) moves whole facts
    down, "(1d ago)" never split as "(1d" / "ago)"; wider again, it is one line."""
    make_fake_run(context.runs_root, run_id, epochs_done=5, epochs=10)
    async with RunApp(context, run_id).run_test(size=(80, 24)) as pilot:
        screen = await opened(pilot, epochs=5)
        widget = screen.query_one("#run-header", Static)

        def rows() -> list[str]:
            lines = widget.render_lines(widget.region.reset_offset)
            return [line.text.strip() for line in lines if line.text.strip()]

        assert any(row.endswith(" ago)") and "(" in row for row in rows()), rows()
        assert not any(row.startswith("ago)") for row in rows()), rows()
        assert all(len(row) <= 80 for row in rows())
        assert len(rows()) == 3  # the facts over two rows, then the accuracies
        await pilot.resize_terminal(160, 24)
        await wait_for(pilot, lambda: len(rows()) == 2, "one row of facts at 160 columns")
        assert rows()[0].startswith(run_id) and rows()[0].endswith("ago)")
