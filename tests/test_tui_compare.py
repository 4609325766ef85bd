"""The compare screen: marked runs side by side, overlaid curves, and the export dialog."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from cli_harness import make_invoker
from fake_runs import epoch_record, make_fake_run
from rich.console import Console
from rich.style import Style
from rich.text import Text
from textual.pilot import Pilot
from textual.widgets import Input, RadioButton, Static
from textual_plotext import PlotextPlot
from tui_harness import pinned_context, record_notifications, scenario, settle, wait_for

from srat_engine.reporting.paper import paper_result
from srat_engine.runs.rundir import RunDir
from srat_engine.runs.summary import summarize_run
from srat_tui.render.compare import compare_run
from srat_tui.tui.app import SratApp
from srat_tui.tui.context import AppContext
from srat_tui.tui.screens.compare import (
    CompareScreen,
    EpochPlot,
    ExportRequest,
    ExportScreen,
    curve_of,
    default_export_path,
    write_export,
)
from srat_tui.tui.widgets.curves import run_color

SIZE = (160, 48)


@pytest.fixture(autouse=True)
def no_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    from srat_tui.tui.widgets import gpu_panel

    monkeypatch.setattr(gpu_panel, "probe_gpus", lambda: None)


@pytest.fixture
def context(srat_home: Path) -> AppContext:
    context = pinned_context(srat_home)
    make_fake_run(context.runs_root, "run-ce", preset="digits-ce", status="finished",
                  epochs_done=10, index=context.index)  # fmt: skip
    make_fake_run(context.runs_root, "run-srat", status="finished", epochs_done=10,
                  overrides=("loss.sep_lambda=0.5",), index=context.index)  # fmt: skip
    return context


def text(static: Static) -> str:
    console = Console(width=200, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(static.content)
    return console.export_text()


async def open_compare(pilot: Pilot[Any]) -> CompareScreen:
    app = pilot.app
    assert isinstance(app, SratApp)
    await wait_for(pilot, lambda: app.runs_screen is not None and app.runs_screen.loaded, "runs")
    await pilot.press("space", "space", "c")  # mark both rows, compare
    await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen), "the compare screen")
    screen = app.screen
    assert isinstance(screen, CompareScreen)
    await wait_for(pilot, lambda: screen.loaded is not None, "the runs to load")
    return screen


@scenario
async def test_marked_runs_side_by_side(context: AppContext) -> None:
    async with SratApp(context).run_test(size=SIZE) as pilot:
        screen = await open_compare(pilot)
        assert sorted(screen.run_ids) == ["run-ce", "run-srat"]
        diff = text(screen.query_one("#config-diff", Static))
        # what differs is shown (method, lambda); what does not (the dataset) is not
        assert "method" in diff and "sep_lambda" in diff and "CE" in diff
        assert "data.dataset" not in diff
        metrics = text(screen.query_one("#compare-metrics", Static))
        for run_id in ("run-ce", "run-srat"):
            assert run_id in metrics
        assert "Std" in metrics or "std" in metrics
        # two configurations, one seed each: no table of seeds to average
        assert not screen.query_one("#seed-tables", Static).display

        await pilot.press("a")  # every config key now, the dataset included
        await wait_for(pilot, lambda: "data.dataset" in text(screen.query_one("#config-diff",
                       Static)), "all keys")  # fmt: skip

        plots = list(screen.query(PlotextPlot))
        assert len(plots) == 2
        key = text(screen.query_one("#curve-key", Static))
        assert "run-ce" in key and "run-srat" in key  # the plots' key names both runs
        assert "no epochs yet" not in key

        await pilot.press("escape")
        await wait_for(pilot, lambda: pilot.app.screen is pilot.app.runs_screen, "back to runs")


@scenario
async def test_overlaid_runs_are_drawn_in_the_colours_their_key_names(srat_home: Path) -> None:
    """Each run's line has its own colour in both plots, and the key under them names each
    run in that colour; no run id is drawn inside a plot (plotext's legend of 20-character
    ids covered half of each plot at 80 columns)."""
    context = pinned_context(srat_home)
    ids = ["261204-200500-aaaa", "261204-200501-bbbb", "261204-200502-cccc"]
    for k, run_id in enumerate(ids):  # three runs whose curves differ, so none hides another
        run = make_fake_run(context.runs_root, run_id, epochs_done=0, epochs=20,
                            index=context.index)  # fmt: skip
        under = run.config()["resolved"]["under_classes"]
        for epoch in range(1, 21):
            record = epoch_record(epoch, 20, 10, under)
            for column in ("std_overall", "rob_overall"):
                record[column] = record[column] * (1 - 0.3 * k)
            run.append_metrics(record)
    idle = "261204-200503-dddd"  # no epoch yet: named in the key, with why it has no line
    make_fake_run(context.runs_root, idle, epochs_done=0, epochs=20, index=context.index)
    async with SratApp(context).run_test(size=(80, 24)) as pilot:
        app = pilot.app
        assert isinstance(app, SratApp)
        await wait_for(pilot, lambda: app.runs_screen is not None and app.runs_screen.loaded)
        await pilot.press("space", "space", "space", "space", "c")
        await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen), "compare")
        screen = app.screen
        assert isinstance(screen, CompareScreen)
        await wait_for(pilot, lambda: screen.loaded is not None, "the runs to load")
        await settle(pilot)
        assert screen.loaded is not None
        shown = [curve.run_id for curve in screen.loaded.curves]
        assert sorted(shown) == [*ids, idle]
        colours = {run_id: run_color(k) for k, run_id in enumerate(shown)}
        assert len(set(colours.values())) == len(shown)
        drawn_colours = {colours[run_id] for run_id in ids}
        for plot in screen.query(EpochPlot):
            drawn = plot.render()
            assert isinstance(drawn, Text)
            assert drawn_colours <= colours_in(drawn)
            assert colours[idle] not in colours_in(drawn)
            assert not any(run_id[-4:] in drawn.plain for run_id in [*ids, idle])
        key = screen.query_one("#curve-key", Static).content
        assert isinstance(key, Text)
        for run_id, colour in colours.items():
            start = key.plain.index(run_id) - 3  # "━━ " before the id, in the line's colour
            assert key.plain[start : start + 2] == "━━"
            assert colours_in(key[start : start + 2]) == {colour}
        assert f"{idle} (no epochs yet)" in key.plain
        assert key.plain.count("no epochs yet") == 1


def colours_in(text: Text) -> set[tuple[int, int, int]]:
    """The RGB foreground colours `text` is drawn in (plotext's ANSI, or Rich styles)."""
    found = set()
    for span in text.spans:
        style = Style.parse(span.style) if isinstance(span.style, str) else span.style
        if style.color is not None and style.color.triplet is not None:
            found.add(tuple(style.color.triplet))
    return found


NO_ROBUST = {"rob_overall": None, "rob_under": None, "rob_class": None, "rob_n": None}


def running_without_robust_at_its_last_epoch(context: AppContext) -> RunDir:
    """A run at epoch 7/60 that measured robust accuracy every 3 epochs: last at epoch 6."""
    run = make_fake_run(context.runs_root, "run-live", epochs_done=0, epochs=60,
                        index=context.index)  # fmt: skip
    under = run.config()["resolved"]["under_classes"]
    for epoch in range(1, 8):
        record = epoch_record(epoch, 60, 10, under)
        run.append_metrics(record if epoch % 3 == 0 else {**record, **NO_ROBUST})
    return run


def row_of(metrics: str, run_id: str) -> str:
    return next(line for line in metrics.splitlines() if run_id in line)


@scenario
async def test_a_running_run_s_columns_are_those_of_the_runs_list(srat_home: Path) -> None:
    """Its latest epoch did not measure robust accuracy: Compare shows the robust columns of
    the last epoch that did, as the runs list does, and says which epoch that was."""
    context = pinned_context(srat_home)
    make_fake_run(context.runs_root, "run-done", status="finished", epochs_done=10,
                  index=context.index)  # fmt: skip
    run = running_without_robust_at_its_last_epoch(context)
    listed = summarize_run(run)  # the runs list's record of it
    assert listed["epoch"] == 7 and listed["rob_overall"] is not None
    async with SratApp(context).run_test(size=SIZE) as pilot:
        screen = await open_compare(pilot)
        row = row_of(text(screen.query_one("#compare-metrics", Static)), "run-live")
        assert "epoch 7/60" in row
        for column in ("std_overall", "std_under"):
            assert f"{listed[column]:.2f}" in row
        for column in ("rob_overall", "rob_under"):
            assert f"{listed[column]:.2f} @6" in row
        assert " - " not in row.replace("│", " ")


def test_cli_compare_shows_the_runs_list_columns_too(
    srat_home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`srat runs compare` builds its rows with the same `compare_run` as the screen."""
    context = pinned_context(srat_home)
    make_fake_run(context.runs_root, "run-done", status="finished", epochs_done=10,
                  index=context.index)  # fmt: skip
    run = running_without_robust_at_its_last_epoch(context)
    listed = summarize_run(run)
    result = make_invoker(capsys, monkeypatch)("runs", "compare", "run-done", "run-live")
    assert result.code == 0, result.err
    row = row_of(result.out, "epoch 7/60")  # the metrics table's row of run-live
    assert f"{listed['rob_overall']:.2f} @6" in row


def test_cli_compare_in_an_80_column_terminal_is_compact_too(
    srat_home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    context = pinned_context(srat_home)
    ids = ["261203-090512-ab12", "261203-090512-0f3c"]
    for run_id in ids:
        make_fake_run(context.runs_root, run_id, status="finished", epochs_done=10,
                      index=context.index)  # fmt: skip
    srat = make_invoker(capsys, monkeypatch)
    piped = srat("runs", "compare", *ids)
    assert piped.code == 0, piped.err
    assert "┏" in piped.out  # piped: 240 columns, boxed
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # Rich: stdout is a terminal
    monkeypatch.setenv("COLUMNS", "80")
    styled = srat("runs", "compare", *ids).out
    shown = re.sub(r"\x1b\[[0-9;]*m", "", styled).splitlines()  # a terminal gets styles
    assert all(len(line) <= 80 for line in shown) and not any("…" in line for line in shown)
    assert {line.split()[0] for line in shown if line.startswith("2612")} == set(ids)


def test_compare_run_says_which_epoch_each_column_is_from(srat_home: Path) -> None:
    context = pinned_context(srat_home)
    run = running_without_robust_at_its_last_epoch(context)
    events, doc = run.metrics(), run.config()
    shown = compare_run(run.id, doc, events, 10)
    listed = summarize_run(run)
    assert shown.metrics is not None and shown.metrics["epoch"] == 7
    assert {c: shown.metrics[c] for c in ("std_overall", "rob_overall", "rob_under")} == {
        c: listed[c] for c in ("std_overall", "rob_overall", "rob_under")
    }
    assert shown.epochs == {"rob_overall": 6, "rob_under": 6}
    # a finished run's final evaluation, and a best epoch, are one record: nothing to mark
    finished = make_fake_run(context.runs_root, "run-f", status="finished", epochs_done=10)
    assert compare_run("run-f", finished.config(), finished.metrics(), 10).epochs == {}
    best = compare_run(run.id, doc, events, 10, checkpoint="best")
    assert best.epochs == {} and best.metrics is not None and best.metrics["best_epoch"] == 6


def x_ticks(plot: EpochPlot) -> list[str]:
    """The labels under the x axis: the last line of the drawn plot, above the axis label."""
    rendered = plot.render()
    assert isinstance(rendered, Text)
    lines = [line for line in rendered.plain.splitlines() if line.strip()]
    row = next(line for line in reversed(lines) if "epoch" not in line)
    return row.split()


@scenario
async def test_curves_have_whole_epoch_ticks_over_one_span(srat_home: Path) -> None:
    """60 epochs: ticks on whole epochs (not "15.8"), the same in both plots, though the
    running run's robust curve starts at epoch 3."""
    context = pinned_context(srat_home)
    make_fake_run(context.runs_root, "run-done", status="finished", epochs_done=60, epochs=60,
                  index=context.index)  # fmt: skip
    running_without_robust_at_its_last_epoch(context)
    async with SratApp(context).run_test(size=SIZE) as pilot:
        screen = await open_compare(pilot)
        await pilot.pause()
        std = screen.query_one("#std-plot", EpochPlot)
        rob = screen.query_one("#rob-plot", EpochPlot)
        assert std.span == rob.span == (1, 60)
        ticks = x_ticks(std)
        assert ticks == x_ticks(rob)
        assert all(tick.isdigit() for tick in ticks), ticks
        assert ticks[-1] == "60"


@scenario
async def test_export_writes_the_paper_layout(srat_home: Path, tmp_path: Path) -> None:
    context = pinned_context(srat_home)
    for preset in ("cifar10-exp10-ce", "cifar10-exp10-srat-ldam"):  # cells of the paper's Table 1
        make_fake_run(context.runs_root, preset, preset=preset, status="finished",
                      epochs_done=10, index=context.index)  # fmt: skip
    target = tmp_path / "table.md"
    async with SratApp(context).run_test(size=SIZE) as pilot:
        screen = await open_compare(pilot)
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, ExportScreen), "export dialog")
        dialog = pilot.app.screen
        md = next(b for b in dialog.query(RadioButton) if b.name == "md")
        md.value = True
        dialog.query_one("#export-paper").value = True  # type: ignore[attr-defined]
        dialog.query_one("#export-path", Input).value = str(target)
        await pilot.click("#export-ok")
        await wait_for(pilot, target.exists, "the export file")
        assert pilot.app.screen is screen
    table = target.read_text()
    assert "| Method |" in table and "Std overall" in table and "Rob under" in table
    rows = [line for line in table.splitlines() if line.startswith("| CE") or "SRAT-LDAM" in line]
    assert len(rows) >= 2
    # the paper's numbers beside ours were asked for: its CE row for CIFAR-10 Exp-10
    paper_ce = paper_result("cifar10", "exp", 10, "CE")
    assert paper_ce is not None and f"{paper_ce['std_overall']:.2f}" in table


def test_the_export_counts_a_rerun_seed_once_and_returns_the_run_it_set_aside(
    srat_home: Path, tmp_path: Path
) -> None:
    context = pinned_context(srat_home)
    for run_id, created in (("first", "2026-12-01T10:00:00+00:00"),
                            ("rerun", "2026-12-02T10:00:00+00:00")):  # fmt: skip
        make_fake_run(context.runs_root, run_id, status="finished", epochs_done=3, epochs=3,
                      created=created, index=context.index)  # fmt: skip
    request = ExportRequest("json", False, tmp_path / "table.json")
    path, skipped, repeated = write_export(context.runs_root, ["first", "rerun"], request)
    assert (skipped, repeated) == (0, ["first"])
    (cell,) = json.loads(path.read_text())[0]["rows"][0]["cells"]
    assert cell["run_ids"] == ["rerun"] and cell["n"] == 1


@scenario
async def test_unwritable_export_path_is_notified(context: AppContext, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # the export's folder would have to be made inside a file
    app = SratApp(context)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_compare(pilot)
        notes = record_notifications(app)
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, ExportScreen), "export dialog")
        pilot.app.screen.query_one("#export-path", Input).value = str(blocker / "table.csv")
        await pilot.click("#export-ok")
        await settle(pilot)
        assert [severity for _, severity in notes] == ["error"]
        assert "a-file" in notes[0][0] and not (blocker / "table.csv").exists()
        assert app.is_running and app.screen is screen


@scenario
async def test_the_export_format_and_the_file_name_agree(
    context: AppContext, tmp_path: Path
) -> None:
    app = SratApp(context)
    async with app.run_test(size=SIZE) as pilot:
        await open_compare(pilot)
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, ExportScreen), "export dialog")
        dialog = pilot.app.screen
        assert isinstance(dialog, ExportScreen)
        assert dialog.fmt == "md"  # as `srat runs export` writes by default
        assert str(dialog.query_one("#export-path", Input).placeholder).endswith(".md")
        # typed where the dialog opens (the file name), ".json" picks JSON: it once wrote csv
        await pilot.press(*str(tmp_path / "table.json"))
        await settle(pilot)
        assert dialog.fmt == "json"
        csv = next(b for b in dialog.query(RadioButton) if b.name == "csv")
        csv.value = True  # picking a format renames the file to match
        await settle(pilot)
        assert dialog.query_one("#export-path", Input).value == str(tmp_path / "table.csv")
        csv.value = False
        next(b for b in dialog.query(RadioButton) if b.name == "json").value = True
        await settle(pilot)
        await pilot.press("enter")  # the file name field has the focus
        target = tmp_path / "table.json"
        await wait_for(pilot, target.exists, "the export file")
    assert isinstance(json.loads(target.read_text()), list)


def test_curve_keeps_the_later_record_of_a_repeated_epoch() -> None:
    events = [
        {"event": "epoch", "epoch": 1, "std_overall": 10.0, "rob_overall": 5.0},
        {"event": "epoch", "epoch": 2, "std_overall": 20.0, "rob_overall": None},
        {"event": "resume", "from_epoch": 1},
        {"event": "epoch", "epoch": 2, "std_overall": 25.0, "rob_overall": 7.0},
    ]
    curve = curve_of("r", events)
    assert curve.std == ((1, 10.0), (2, 25.0)) and curve.rob == ((1, 5.0), (2, 7.0))


def test_default_export_path_stays_short(srat_home: Path) -> None:
    ids = [f"run-{k}" for k in range(10)]
    path = default_export_path(srat_home / "exports", ids, "latex")
    assert path.parent == srat_home / "exports" and path.suffix == ".tex"
    assert path.name == "compare-run-0_run-1_run-2_run-3_and-6-more.tex"


@scenario
async def test_best_epoch_key_shows_and_exports_each_runs_best_epoch_marked(
    context: AppContext, tmp_path: Path
) -> None:
    """`b`: every number from each run's best epoch by PGD (as `srat runs compare --checkpoint
    best`), said on the screen and in the export; `b` again: the last checkpoint's."""
    import json

    run = context.runs_root / "run-srat"
    lines = (run / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    for record in records:  # robust accuracy peaks at epoch 3 at 77.7, then overfits
        if record.get("event") == "epoch":
            record["rob_overall"] = 77.7 if record["epoch"] == 3 else 10.0 + record["epoch"]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    target = tmp_path / "best.md"
    async with SratApp(context).run_test(size=SIZE) as pilot:
        screen = await open_compare(pilot)
        last = text(screen.query_one("#compare-metrics", Static))
        assert "77.70" not in last and "[best epoch]" not in last
        await pilot.press("b")
        await wait_for(pilot, lambda: "77.70" in text(screen.query_one("#compare-metrics",
                       Static)), "the best epoch's numbers")  # fmt: skip
        best = text(screen.query_one("#compare-metrics", Static))
        assert "epoch 3/10" in best and "[best epoch]" in best  # marked headers
        note = text(screen.query_one("#per-class", Static))
        assert "[best epoch] selected on the test set" in note
        assert "best epoch" in screen.sub_title

        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, ExportScreen), "export dialog")
        dialog = pilot.app.screen
        next(b for b in dialog.query(RadioButton) if b.name == "md").value = True
        dialog.query_one("#export-path", Input).value = str(target)
        await pilot.click("#export-ok")
        await wait_for(pilot, target.exists, "the export file")
        exported = target.read_text()
        assert "77.70" in exported and "[best epoch] selected on the test set" in exported

        await pilot.press("b")
        await wait_for(pilot, lambda: "77.70" not in text(screen.query_one("#compare-metrics",
                       Static)), "the last checkpoint's numbers")  # fmt: skip
        assert "best epoch" not in screen.sub_title


@scenario
async def test_seeds_of_one_configuration_are_averaged_in_the_papers_layout(
    context: AppContext,
) -> None:
    """Marked runs that are seeds of one configuration: a table of mean ± std over them, one
    row per method (the cells `srat runs export` writes); none while every config has one."""
    make_fake_run(context.runs_root, "run-ce-seed1", preset="digits-ce", status="finished",
                  epochs_done=10, overrides=("seed=1",), index=context.index)  # fmt: skip
    async with SratApp(context).run_test(size=SIZE) as pilot:
        app = pilot.app
        assert isinstance(app, SratApp)
        await wait_for(
            pilot, lambda: app.runs_screen is not None and app.runs_screen.loaded, "runs"
        )
        await pilot.press("space", "space", "space", "c")
        await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen), "the compare screen")
        screen = app.screen
        assert isinstance(screen, CompareScreen)
        await wait_for(pilot, lambda: screen.loaded is not None, "the runs to load")
        seeds = screen.query_one("#seed-tables", Static)
        assert seeds.display
        shown = text(seeds)
        assert "mean ± std over seeds" in shown
        rows = {line.split()[1]: line for line in shown.splitlines() if line.startswith("│")}
        assert set(rows) == {"CE", "SRAT-LDAM"}
        assert " 2 " in rows["CE"] and "±" in rows["CE"]  # two seeds averaged
        assert "±" not in rows["SRAT-LDAM"]  # one seed: no spread to show


def text_as_shown(static: Static) -> list[str]:
    """A Static's content drawn at the width the screen gives it."""
    width = static.content_region.width
    console = Console(width=width, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(static.content)
    return [line.rstrip() for line in console.export_text().splitlines()]


@scenario
async def test_an_80_column_terminal_shows_every_run_id_whole(srat_home: Path) -> None:
    """Over SSH in 80x24: the accuracy table is compact, one line a run with its whole id
    (ids as `srat run` makes them), and no number or id is cut to "…"."""
    context = pinned_context(srat_home)
    ids = ["261203-090512-ab12", "261203-090512-0f3c"]  # alike but for their last characters
    make_fake_run(context.runs_root, ids[0], preset="digits-ce", status="finished",
                  epochs_done=10, index=context.index)  # fmt: skip
    make_fake_run(context.runs_root, ids[1], status="finished", epochs_done=10,
                  index=context.index)  # fmt: skip
    async with SratApp(context).run_test(size=(80, 24)) as pilot:
        screen = await open_compare(pilot)
        metrics = text_as_shown(screen.query_one("#compare-metrics", Static))
        assert metrics[0].startswith("Accuracy (%) · digits exp K=10 · seed 0 · final")
        rows = {line.split()[0]: line.split()[1] for line in metrics if line.startswith("2612")}
        assert rows == {ids[0]: "CE", ids[1]: "SRAT-LDAM"}
        for name in ("#config-diff", "#compare-metrics", "#per-class"):
            shown = text_as_shown(screen.query_one(name, Static))
            assert not any("…" in line for line in shown), (name, shown)
