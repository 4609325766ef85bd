"""The runs screen, driven with Pilot over fake run directories in the test's SRAT_HOME.

Waiting is always a bounded loop of `pilot.pause()` on a condition: the table is filled by a
thread worker, so there is no fixed number of frames to wait for. The suite has no asyncio
plugin, so each scenario is a coroutine that `@scenario` runs with `asyncio.run`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psutil
import pytest
from fake_runs import epoch_record, make_fake_run
from slot_queue import queue_of_real_waiters
from textual.command import CommandList, CommandPalette
from textual.containers import Vertical
from textual.pilot import Pilot
from textual.widgets import Static
from tui_harness import pinned_context, record_notifications, scenario, settle, wait_for

from srat_engine.errors import SratError
from srat_engine.fsutil import atomic_write_json
from srat_engine.runs.rundir import RunDir
from srat_tui.render.format import duration, runs_cell
from srat_tui.tui.app import SratApp
from srat_tui.tui.context import AppContext
from srat_tui.tui.screens.help import HelpScreen
from srat_tui.tui.screens.runs import RunsScreen, RunsTable
from srat_tui.tui.widgets.confirm import ConfirmModal, TextPromptModal

SIZE = (160, 40)


@pytest.fixture(autouse=True)
def no_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same screen on a GPU box as on a laptop: the GPU panel finds no GPU."""
    gpu_panel = pytest.importorskip("srat_tui.tui.widgets.gpu_panel")
    monkeypatch.setattr(gpu_panel, "probe_gpus", lambda: None)


@pytest.fixture
def context(srat_home: Path) -> AppContext:
    return pinned_context(srat_home, poll_seconds=0.1)


@pytest.fixture
def three_runs(context: AppContext) -> dict[str, RunDir]:
    """run-a running (newest), run-b finished (oldest), run-c failed before any metrics."""
    root, index = context.runs_root, context.index
    return {
        "run-a": make_fake_run(
            root, "run-a", status="running", index=index, created="2026-11-21T12:00:00+00:00"
        ),
        "run-b": make_fake_run(
            root,
            "run-b",
            preset="digits-ce",
            status="finished",
            epochs_done=10,
            index=index,
            created="2026-11-19T12:00:00+00:00",
        ),
        "run-c": make_fake_run(
            root,
            "run-c",
            preset="digits-gairat",
            status="failed",
            epochs_done=0,
            index=index,
            created="2026-11-20T12:00:00+00:00",
        ),
    }


def runs_screen(app: SratApp) -> RunsScreen:
    screen = app.runs_screen
    assert screen is not None
    return screen


async def loaded(pilot: Pilot[Any]) -> RunsScreen:
    app = pilot.app
    assert isinstance(app, SratApp)
    await wait_for(pilot, lambda: app.runs_screen is not None and app.runs_screen.loaded, "runs")
    return runs_screen(app)


def order(screen: RunsScreen) -> list[str]:
    return [str(row.key.value) for row in screen.table.ordered_rows]


def cell(screen: RunsScreen, run_id: str, column: str) -> str:
    return str(screen.table.get_cell(run_id, column))


async def put_cursor_on(pilot: Pilot[Any], screen: RunsScreen, run_id: str) -> None:
    screen.table.move_cursor(row=order(screen).index(run_id))
    await pilot.pause()
    assert screen.cursor_run_id() == run_id


async def mark(pilot: Pilot[Any], screen: RunsScreen, *run_ids: str) -> None:
    for run_id in run_ids:
        await put_cursor_on(pilot, screen, run_id)
        await pilot.press("space")


@scenario
async def test_table_shows_every_run(context: AppContext, three_runs: dict[str, RunDir]) -> None:
    app = SratApp(context)
    async with app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        assert sorted(order(screen)) == ["run-a", "run-b", "run-c"]
        labels = [str(column.label).rstrip(" ▲▼") for column in screen.table.ordered_columns]
        assert labels == [
            "", "id", "status", "method", "imb", "epoch",
            "std", "std:u", "rob", "rob:u", "aa", "dataset", "device", "backend", "age",
        ]  # fmt: skip
        assert cell(screen, "run-a", "status") == "running"
        assert cell(screen, "run-a", "method") == "SRAT-LDAM"
        assert cell(screen, "run-a", "dataset") == "digits"
        assert cell(screen, "run-a", "epoch") == "5/10"
        record = context.index.get("run-a")
        assert record is not None
        for column in ("std_overall", "std_under", "rob_overall", "rob_under"):
            assert cell(screen, "run-a", column) == f"{record[column]:.2f}"
        assert cell(screen, "run-a", "imbalance") == f"{record['imbalance']}{record['ratio']:g}"
        assert cell(screen, "run-a", "device") == "cpu"
        assert cell(screen, "run-a", "backend") == "local"
        assert cell(screen, "run-a", "age") == "2h"
        assert cell(screen, "run-b", "status") == "finished"
        assert cell(screen, "run-b", "epoch") == "10/10"
        assert cell(screen, "run-b", "age") == "2d"
        assert cell(screen, "run-c", "std_overall") == "-"  # no metrics yet
        assert cell(screen, "run-c", "rob_under") == "-"
        assert cell(screen, "run-c", "epoch") == "0/10"
        assert cell(screen, "run-a", "aa_overall") == "-"  # never evaluated with AutoAttack


@scenario
async def test_a_queued_run_shows_when_it_should_end(context: AppContext) -> None:
    """The epoch cell of a run waiting for the slot says when its training should end
    (`jobs.forecast`: the holder's end and final evaluation, then its own epochs, at the
    holder's 30 s an epoch); of the holder, its own training's end."""
    root, index, now = context.runs_root, context.index, context.now()
    holder = make_fake_run(root, "run-a", epochs_done=0, epochs=10, index=index)
    for epoch in (1, 2, 3):  # the last written at `now`: 7 epochs left, 210 s
        stamp = (now - timedelta(seconds=30 * (3 - epoch))).isoformat(timespec="seconds")
        timed = {"train_seconds": 29.0, "eval_seconds": 1.0, "time": stamp}
        holder.append_metrics({"event": "epoch", "epoch": epoch, "epochs": 10, **timed})
    make_fake_run(root, "run-b", epochs_done=0, epochs=10, status="queued", index=index)
    app = SratApp(context)
    with queue_of_real_waiters(context.home.slots, "run-a", ["run-b"]):
        async with app.run_test(size=SIZE) as pilot:
            screen = await loaded(pilot)
            a, b = context.index.get("run-a"), context.index.get("run-b")
            assert a is not None and b is not None
            final = 30.0 / a["epoch_forwards"] * a["final_forwards"]
            assert cell(screen, "run-a", "epoch") == "3/10 ~" + duration(210)
            assert cell(screen, "run-b", "epoch") == "0/10 ~" + duration(210 + final + 300)
            count = str(screen.query_one("#runs-count", Static).render())
            assert count == f"2 runs · 1 waiting, the last ends ~{duration(210 + final + 300)}"


def test_autoattack_cell_marks_suspected_gradient_masking() -> None:
    now = datetime(2026, 11, 21, tzinfo=timezone.utc)
    assert runs_cell({"aa_overall": 41.5, "masking": False}, "aa_overall", now) == "41.50"
    assert runs_cell({"aa_overall": 12.0, "masking": True}, "aa_overall", now) == "12.00!"
    assert runs_cell({"aa_overall": None, "masking": None}, "aa_overall", now) == "-"


@scenario
async def test_filter_narrows_rows_as_you_type(
    context: AppContext, three_runs: dict[str, RunDir]
) -> None:
    app = SratApp(context)
    async with app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        await pilot.press("slash")
        assert screen.query_one("#filter").has_focus
        await pilot.press(*"GAIR")  # method, case-insensitive
        assert order(screen) == ["run-c"]
        await pilot.press(*["backspace"] * 4, *"fini")  # status
        assert order(screen) == ["run-b"]
        await pilot.press(*["backspace"] * 4, *"run-")  # id
        assert sorted(order(screen)) == ["run-a", "run-b", "run-c"]
        await pilot.press("x")
        assert order(screen) == []
        await pilot.press("escape")  # back to the table, filter kept
        assert screen.table.has_focus and order(screen) == []
        await pilot.press("escape")  # clears the filter
        assert sorted(order(screen)) == ["run-a", "run-b", "run-c"]


@scenario
async def test_filter_takes_key_value_as_runs_ls_does(
    context: AppContext, three_runs: dict[str, RunDir]
) -> None:
    """`key=value` words select as `srat runs ls -f` does; other words match what is shown."""
    app = SratApp(context)
    async with app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        screen.filter_text = "status=running"
        await wait_for(pilot, lambda: order(screen) == ["run-a"], "status=running")
        screen.filter_text = "method=PGD-AT,GAIRAT"  # PGD-AT: another name of CE
        await wait_for(pilot, lambda: sorted(order(screen)) == ["run-b", "run-c"], "either")
        screen.filter_text = "method=CE status=failed"  # every filter holds
        await wait_for(pilot, lambda: order(screen) == [], "both")
        assert "exp10" in screen._rows["run-b"].cells  # the imbalance column as shown
        screen.filter_text = "exp10 fini"  # a cell as shown, and free text
        await wait_for(pilot, lambda: order(screen) == ["run-b"], "shown cell")


@scenario
async def test_sort_keys_and_header_clicks_reorder(
    context: AppContext, three_runs: dict[str, RunDir]
) -> None:
    app = SratApp(context)
    async with app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        assert order(screen) == ["run-a", "run-c", "run-b"]  # default: newest first
        await pilot.press("s")
        assert screen.sort_column == "id"
        assert order(screen) == ["run-a", "run-b", "run-c"]
        assert str(screen.table.columns[next(iter(screen.table.columns))].label) == ""
        await pilot.press("S")
        assert order(screen) == ["run-c", "run-b", "run-a"]
        assert any(str(c.label) == "id ▼" for c in screen.table.ordered_columns)

        # a click on the "std" header sorts by it, best first; runs without a value stay last
        table = screen.table
        columns = table.ordered_columns
        index = [column.key.value for column in columns].index("std_overall")
        x = sum(column.get_render_width(table) for column in columns[:index]) + 2
        await pilot.click(RunsTable, offset=(x, 0))
        await wait_for(pilot, lambda: screen.sort_column == "std_overall", "header sort")
        assert screen.sort_reverse
        a, b = (float(cell(screen, r, "std_overall")) for r in ("run-a", "run-b"))
        best_first = ["run-a", "run-b"] if a > b else ["run-b", "run-a"]
        assert order(screen) == [*best_first, "run-c"]
        await pilot.click(RunsTable, offset=(x, 0))  # again: reversed
        await wait_for(pilot, lambda: not screen.sort_reverse, "reverse header sort")
        assert order(screen) == [*reversed(best_first), "run-c"]


@scenario
async def test_marks_and_compare(context: AppContext, three_runs: dict[str, RunDir]) -> None:
    compare = pytest.importorskip("srat_tui.tui.screens.compare")
    app = SratApp(context)
    async with app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        notes = record_notifications(app)
        await pilot.press("s")  # by id: run-a, run-b, run-c
        await pilot.press("space")  # marks run-a, cursor moves to run-b
        assert screen.marked == {"run-a"}
        assert cell(screen, "run-a", "mark") == "●"
        assert screen.cursor_run_id() == "run-b"
        await pilot.press("c")
        assert notes and notes[-1][1] == "warning"  # one mark is not a comparison
        assert app.screen is screen
        await pilot.press("down", "space")  # marks run-c
        assert screen.marked == {"run-a", "run-c"}
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, compare.CompareScreen), "compare")
        assert app.screen.run_ids == ["run-a", "run-c"]


async def ask_to_kill(pilot: Pilot[Any], run_id: str) -> RunsScreen:
    """The runs screen, once `k` on `run_id` has opened the kill confirmation."""
    screen = await loaded(pilot)
    await put_cursor_on(pilot, screen, run_id)
    await pilot.press("k")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, ConfirmModal), "confirm modal")
    return screen


@scenario
async def test_kill_asks_first_and_n_cancels(
    context: AppContext, three_runs: dict[str, RunDir], monkeypatch: pytest.MonkeyPatch
) -> None:
    import srat_engine.jobs.supervisor as supervisor

    def must_not_kill(*args: object, **kwargs: object) -> str:
        # run-a's pid is this test process: a kill here would end the test run
        raise AssertionError("kill_run called although the kill was cancelled")

    monkeypatch.setattr(supervisor, "kill_run", must_not_kill)
    app = SratApp(context)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ask_to_kill(pilot, "run-a")
        assert "run-a" in app.screen.message
        await pilot.press("n")
        await wait_for(pilot, lambda: app.screen is screen, "modal closed")
        assert RunDir(three_runs["run-a"].path).state()["status"] == "running"
        assert cell(screen, "run-a", "status") == "running"


@pytest.fixture
def detached_sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A real process in its own session, as a detached worker is."""
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@scenario
async def test_confirmed_kill_stops_the_process_and_shows_killed(
    context: AppContext, detached_sleeper: subprocess.Popen[bytes]
) -> None:
    run = make_fake_run(context.runs_root, "run-live", status="running", index=context.index)
    state = run.state()
    state.update(
        pid=detached_sleeper.pid, pid_start=psutil.Process(detached_sleeper.pid).create_time()
    )
    atomic_write_json(run.path / "state.json", state)

    app = SratApp(context)
    async with app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        assert cell(screen, "run-live", "status") == "running"
        await pilot.press("k")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), "confirm modal")
        await pilot.press("y")
        await wait_for(pilot, lambda: cell(screen, "run-live", "status") == "killed", "killed")
        assert detached_sleeper.wait(timeout=10) == -signal.SIGTERM
        assert run.state()["status"] == "killed"


@scenario
async def test_help_lists_every_binding(context: AppContext, three_runs: dict[str, RunDir]) -> None:
    app = SratApp(context)
    async with app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), "help")
        help_screen = app.screen
        assert isinstance(help_screen, HelpScreen)
        listed = {key: action for key, action, _ in help_screen.rows}
        for key in ("space", "c", "n", "k", "r", "t", "d", "/", "s", "S", "g", "?", "q", "^p"):
            assert key in listed, key
        assert listed["k"] == "Kill" and listed["?"] == "Help" and listed["^p"] == "Commands"
        assert any(action == "Open" for action in listed.values())  # enter on the table
        await pilot.press("q")  # closes help, does not quit
        await wait_for(pilot, lambda: app.screen is screen, "help closed")
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), "help again")
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is screen, "help closed by escape")


@scenario
async def test_command_palette_offers_the_app_commands(
    context: AppContext, three_runs: dict[str, RunDir]
) -> None:
    app = SratApp(context)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        notes = record_notifications(app)
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette), "palette")

        def prompts() -> list[str]:
            commands = app.screen.query_one(CommandList)
            return [
                str(commands.get_option_at_index(i).prompt) for i in range(commands.option_count)
            ]

        await pilot.press(*"open run-b")
        await wait_for(pilot, lambda: any("Open run run-b" in p for p in prompts()), "open hit")
        await pilot.press(*["backspace"] * 10, *"refresh")
        await wait_for(pilot, lambda: any("Refresh" in p for p in prompts()), "refresh hit")
        await pilot.press("enter")
        await wait_for(pilot, lambda: ("refreshing runs", "information") in notes, "refresh ran")


@scenario
async def test_new_metrics_and_new_runs_show_up_live(
    context: AppContext, three_runs: dict[str, RunDir]
) -> None:
    app = SratApp(context)
    async with app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        await put_cursor_on(pilot, screen, "run-b")

        run = three_runs["run-a"]
        resolved = run.config()["resolved"]
        run.append_metrics(
            epoch_record(6, 10, len(resolved["class_counts"]), resolved["under_classes"])
        )
        await wait_for(pilot, lambda: cell(screen, "run-a", "epoch") == "6/10", "epoch 6")

        make_fake_run(
            context.runs_root, "run-d", index=context.index, created="2026-11-21T13:00:00+00:00"
        )
        await wait_for(pilot, lambda: "run-d" in order(screen), "the new run")
        assert order(screen)[0] == "run-d"  # newest first
        assert screen.cursor_run_id() == "run-b"  # the cursor stayed on its run


@scenario
async def test_an_idle_refresh_touches_no_cell(
    context: AppContext, three_runs: dict[str, RunDir], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = SratApp(context)
    async with app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        calls: list[str] = []
        table = screen.table
        for name in ("update_cell", "add_row", "remove_row", "clear", "sort"):
            original = getattr(table, name)

            def spy(*args: Any, _name: str = name, _original: Any = original, **kw: Any) -> Any:
                calls.append(_name)
                return _original(*args, **kw)

            monkeypatch.setattr(table, name, spy)
        for _ in range(3):  # three refreshes, each taken in by the table before the next
            screen.request_refresh()
            await settle(pilot)
        assert calls == []


@scenario
async def test_engine_errors_are_notified_not_raised(
    context: AppContext, three_runs: dict[str, RunDir], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = SratApp(context)
    async with app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        notes = record_notifications(app)
        await put_cursor_on(pilot, screen, "run-a")
        await pilot.press("r")  # running: refused at once, not "resuming…" then an error
        await wait_for(pilot, lambda: bool(notes), "resume refused")
        assert notes == [("nothing to resume: run run-a is running (failed, killed, dead or "
                          "lost runs do)", "information")]  # fmt: skip
        notes.clear()
        import srat_engine.jobs.supervisor as supervisor

        def refused(runs: list[RunDir], *, home: Any) -> str:
            raise SratError(f"run {runs[0].id}: its checkpoint is unreadable")

        monkeypatch.setattr(supervisor, "resume_as_launched", refused)
        await put_cursor_on(pilot, screen, "run-c")
        await pilot.press("r")  # failed, but the engine finds it cannot: its error, notified
        await wait_for(pilot, lambda: any(s == "error" for _, s in notes), "resume error")
        assert notes[0] == ("resuming run run-c…", "information"), notes
        assert "its checkpoint is unreadable" in notes[-1][0]
        notes.clear()
        await put_cursor_on(pilot, screen, "run-a")
        await pilot.press("d")  # running: refused at once, not asked and refused after
        await wait_for(pilot, lambda: bool(notes), "delete refused")
        assert app.screen is screen and "kill first" in notes[-1][0]
        assert three_runs["run-a"].path.is_dir()
        notes.clear()
        await put_cursor_on(pilot, screen, "run-b")
        await pilot.press("k")  # finished: nothing to kill, no modal
        await pilot.pause()
        assert app.screen is screen and "nothing to kill" in notes[-1][0]


@scenario
async def test_verbs_name_the_marked_runs_they_act_on(
    context: AppContext, three_runs: dict[str, RunDir]
) -> None:
    """Marks win over the cursor: the message says so, and u unmarks them all."""
    app = SratApp(context)
    async with app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        notes = record_notifications(app)
        await mark(pilot, screen, *("run-b", "run-c"))
        await put_cursor_on(pilot, screen, "run-a")  # running, unmarked
        await pilot.press("k")
        await wait_for(pilot, lambda: bool(notes), "refusal")
        assert app.screen is screen
        message = notes[-1][0]
        assert "the 2 marked runs (run-c, run-b) are not active" in message  # table order
        assert "u unmarks all" in message
        await pilot.press("u")
        await wait_for(pilot, lambda: not screen.marked, "marks cleared")
        await pilot.press("k")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), "confirm modal")
        assert "Kill run run-a?" in app.screen.message
        await pilot.press("n")


@scenario
async def test_a_bad_tag_is_refused_once(
    context: AppContext, three_runs: dict[str, RunDir]
) -> None:
    app = SratApp(context)
    async with app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        notes = record_notifications(app)
        await mark(pilot, screen, *("run-b", "run-c"))
        await pilot.press("t")
        await wait_for(pilot, lambda: isinstance(app.screen, TextPromptModal), "tag prompt")
        await pilot.press(*"two words", "enter")
        await wait_for(pilot, lambda: bool(notes), "the error")
        await pilot.pause(0.2)
        assert [s for _, s in notes] == ["error"] and "one word" in notes[0][0]
        assert three_runs["run-b"].meta()["tags"] == three_runs["run-c"].meta()["tags"] == []


@scenario
async def test_the_tag_prompt_and_the_kill_question_are_boxes_centred_over_the_table(
    context: AppContext, three_runs: dict[str, RunDir]
) -> None:
    app = SratApp(context)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        for key, modal in (("t", TextPromptModal), ("k", ConfirmModal)):
            await pilot.press(key)
            await wait_for(pilot, lambda modal=modal: isinstance(app.screen, modal), key)
            await settle(pilot)
            box = app.screen.query_one(Vertical).region
            # the prompt once filled the screen from its corner (its CSS was ConfirmModal's)
            assert (box.width, box.x) == (64, (80 - 64) // 2), (key, box)
            assert box.y > 0 and box.bottom < 24 and box.height <= 14, (key, box)
            assert app.screen.query_one(Vertical).styles.border_top[0] == "thick"
            await pilot.press("escape")
            await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen), "the runs again")


@scenario
async def test_the_palette_does_not_stack_a_second_form_or_the_run_already_shown(
    context: AppContext, three_runs: dict[str, RunDir]
) -> None:
    from srat_tui.tui.screens.new_run import NewRunScreen
    from srat_tui.tui.screens.run_detail import RunScreen

    app = SratApp(context)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        notes = record_notifications(app)
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, NewRunScreen), "the form")
        form = app.screen
        depth = len(app.screen_stack)  # the default screen, the runs, the form
        app.open_new_run()  # the palette's "New run", chosen on the form
        await pilot.pause()
        assert app.screen is form and len(app.screen_stack) == depth == 3
        assert "a new-run form is open already" in notes[-1][0]
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen), "the runs again")
        app.open_run("run-b")
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen), "the run")
        shown = app.screen
        app.open_run("run-b")  # "Open run run-b" on its own screen: nothing new
        await pilot.pause()
        assert app.screen is shown and len(app.screen_stack) == 3
        app.action_refresh_runs()
        assert notes[-1][0] == "refreshing runs (the runs list)"


@scenario
async def test_count_line_for_no_run_and_one_run(context: AppContext) -> None:
    app = SratApp(context)
    async with app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        count = screen.query_one("#runs-count", Static)
        assert "no runs yet: n starts one" in str(count.render())
        notes = record_notifications(app)
        await pilot.press("g")  # no NVIDIA GPU here (the fixture): said, not silently ignored
        await wait_for(pilot, lambda: bool(notes), "the GPU note")
        assert "no NVIDIA GPU" in notes[-1][0]
        make_fake_run(context.runs_root, "run-1", index=context.index)
        screen.request_refresh()
        await wait_for(pilot, lambda: str(count.render()).startswith("1 run"), "one run")
        assert not str(count.render()).startswith("1 runs")


@scenario
async def test_tag_and_delete(context: AppContext, three_runs: dict[str, RunDir]) -> None:
    app = SratApp(context)
    async with app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        await put_cursor_on(pilot, screen, "run-b")
        await pilot.press("t")
        await wait_for(pilot, lambda: isinstance(app.screen, TextPromptModal), "tag prompt")
        await pilot.press(*"best", "enter")
        await wait_for(pilot, lambda: three_runs["run-b"].meta()["tags"] == ["best"], "tagged")
        await pilot.press("slash", *"best")
        await wait_for(pilot, lambda: order(screen) == ["run-b"], "filter by tag")
        await pilot.press("escape", "escape")

        await put_cursor_on(pilot, screen, "run-b")
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), "confirm modal")
        # where the run goes, as a path (it read "<srat home>/trash")
        assert f"({context.home.trash})" in app.screen.message
        await pilot.press("y")
        await wait_for(pilot, lambda: "run-b" not in order(screen), "row removed")
        assert not three_runs["run-b"].path.exists()
        assert (context.runs_root.parent / "trash" / "run-b" / "config.json").is_file()
        assert context.index.get("run-b") is None


@scenario
async def test_kill_of_a_stacked_run_says_its_stack_stops_too(
    context: AppContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    import srat_engine.jobs.supervisor as supervisor
    from srat_engine.runs.sync import record_in_index

    monkeypatch.setattr(supervisor, "kill_run", lambda *a, **k: pytest.fail("not confirmed"))
    stack = ["run-s0", "run-s1", "run-s2"]
    for run_id in stack:  # one worker's runs (pid: this test process, never killed here)
        run = make_fake_run(context.runs_root, run_id, status="running", index=context.index)
        atomic_write_json(run.path / "launch.json", {"pid": os.getpid(), "stack": stack})
        record_in_index(run, context.index)
    app = SratApp(context)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ask_to_kill(pilot, "run-s1")
        message = app.screen.message
        assert "Kill run run-s1?" in message
        assert "stops too: 2 runs (run-s0, run-s2)" in message
        await pilot.press("n")
        await wait_for(pilot, lambda: app.screen is screen, "modal closed")


@scenario
async def test_resuming_every_run_of_a_stack_resumes_them_as_one_stack(
    context: AppContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`r` on the marked runs: the runs of a stack all marked resume together, as they were
    launched (`supervisor.resume_groups`); a run marked without the rest resumes alone."""
    import srat_engine.jobs.supervisor as supervisor

    groups: list[list[str]] = []

    def resumed(runs: list[RunDir], *, home: Any) -> str:
        groups.append([run.id for run in runs])
        return f"{', '.join(run.id for run in runs)} resumed"

    monkeypatch.setattr(supervisor, "resume_as_launched", resumed)
    stack = ["run-s0", "run-s1"]
    for run_id in (*stack, "run-x"):
        run = make_fake_run(context.runs_root, run_id, status="killed", index=context.index)
        if run_id in stack:
            atomic_write_json(run.path / "launch.json", {"stack": stack})
    app = SratApp(context)
    async with app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        await mark(pilot, screen, *("run-s1", "run-x", "run-s0"))
        await pilot.press("r")
        await wait_for(pilot, lambda: len(groups) == 2, "the resumes")
    assert sorted(groups) == [["run-s0", "run-s1"], ["run-x"]]
