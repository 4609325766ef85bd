"""Strings a person or a file supplied (tags, notes, paths, class names, logs, state fields) are
shown as text by every command and by the TUI: control characters escaped, markup not read.

EVIL retitles a terminal window (OSC 0 ... BEL), clears the screen (CSI 2J), and holds Rich
markup that either breaks printing ("[/]": a closing tag with nothing to close) or would style
the rest ("[bold]"), plus an emoji code Rich would replace.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_harness import Result, Srat, make_invoker
from fake_runs import make_fake_run
from rich.console import Console
from textual.widgets import Input, Tree
from textual.widgets.tree import TreeNode
from tui_harness import pinned_context, record_notifications, scenario, settle, wait_for

from srat_engine.fsutil import atomic_write_json
from srat_engine.runs.home import Home
from srat_engine.runs.rundir import RunDir
from srat_engine.runs.sync import record_in_index
from srat_tui.render.format import inert, inert_text
from srat_tui.tui.app import SratApp
from srat_tui.tui.screens.run_detail import RunScreen
from srat_tui.tui.screens.runs import RunsScreen

EVIL = "\x1b]0;pwned\x07\x1b[2J[/] [bold]loud :smile: x"
SHOWN = "\\x1b]0;pwned\\x07\\x1b[2J[/] [bold]loud :smile: x"  # what the terminal must show
TAG, TAG_SHOWN = "\x1b[2J[/][bold]:smile:", "\\x1b[2J[/][bold]:smile:"  # tags are one word


@pytest.fixture
def srat(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Srat:
    return make_invoker(capsys, monkeypatch)


def assert_inert(outcome: Result, *, expect: str | None = SHOWN) -> None:
    """Exit 0, no raw escape anywhere in the output, and `expect` printed literally."""
    assert outcome.code == 0, outcome
    assert "\x1b" not in outcome.out + outcome.err
    assert "\x07" not in outcome.out + outcome.err
    assert "Traceback" not in outcome.err
    if expect is not None:
        assert expect in outcome.out, outcome.out


def _plant(run: RunDir) -> None:
    """EVIL everywhere a run directory holds free text: meta (tags, notes), config.json (the
    config file it came from, data.root, the class names of a folder dataset), state.json
    (device), exit.json (error) and its logs."""
    run.write_meta([EVIL, "plain"], [EVIL])
    doc = run.config()
    doc["source"] = f"/configs/{EVIL}.toml"
    doc["config"]["data"]["root"] = f"/data/{EVIL}"
    doc["resolved"]["class_names"] = [
        f"{EVIL}{k}" for k in range(len(doc["resolved"]["class_names"]))
    ]
    atomic_write_json(run.path / "config.json", doc)
    state = json.loads((run.path / "state.json").read_text())
    atomic_write_json(run.path / "state.json", {**state, "device": EVIL})
    run.log(EVIL)


@pytest.fixture
def planted(srat_home: Path) -> Home:
    """Two runs, `evil` (finished, EVIL planted) and `plain` (finished), indexed."""
    home = Home(srat_home)
    evil = make_fake_run(home.runs, "evil", status="finished", epochs_done=10)
    make_fake_run(home.runs, "plain", status="finished", epochs_done=10, index=home.index)
    _plant(evil)
    record_in_index(evil, home.index)
    return home


# -- the rule ---------------------------------------------------------------------------------


def test_inert_escapes_controls_and_keeps_text() -> None:
    assert inert(EVIL) == SHOWN
    assert inert("tab\there\r\n") == "tab\\there\\r\\n"
    assert inert("\x00\x7f\x9b") == "\\x00\\x7f\\x9b"  # NUL, DEL and the one-byte CSI (C1)
    assert inert("abc\u202edcba") == "abc\\u202edcba"  # a right-to-left override
    assert inert("\u2028") == "\\u2028"
    # ordinary text, non-ASCII letters, CJK, emoji and backslashes stay as they are
    for text in ("résumé Ωμέγα 日本語 🐍", "C:\\data\\x1b", "[/] [bold]", ""):
        assert inert(text) == text
    assert inert(3.5) == "3.5" and inert(None) == "None"
    assert inert("a\nb\x1b", newlines=True) == "a\nb\\x1b"


def test_inert_text_is_never_read_as_markup() -> None:
    console = Console(width=200, file=None, force_terminal=False, color_system=None)
    with console.capture() as captured:
        console.print(inert_text(EVIL, "bold"))
    assert captured.get().rstrip("\n") == SHOWN


# -- every command ----------------------------------------------------------------------------


def test_runs_show_prints_tags_notes_paths_logs_and_class_names_inert(
    planted: Home, srat: Srat
) -> None:
    outcome = srat("runs", "show", "evil")
    assert_inert(outcome)
    assert f"tags     {SHOWN}, plain" in outcome.out
    assert f"note     {SHOWN}" in outcome.out
    assert f"/configs/{SHOWN}.toml" in outcome.out
    assert f"{SHOWN}0" in outcome.out  # the first class name, in the per-class table
    assert "😄" not in outcome.out


def test_runs_show_prints_the_error_and_log_tail_of_a_failed_run_inert(
    planted: Home, srat: Srat
) -> None:
    run = RunDir(planted.runs / "evil")
    state = json.loads((run.path / "state.json").read_text())
    atomic_write_json(run.path / "state.json", {**state, "status": "failed"})
    run.write_exit({"status": "failed", "error": EVIL})
    (run.path / "output.log").write_text(f"Traceback of a kind\n{EVIL}\n", encoding="utf-8")
    outcome = srat("runs", "show", "evil")
    assert_inert(outcome)
    assert f"error    {SHOWN}" in outcome.out
    assert outcome.out.count(SHOWN) >= 4  # error, log.txt and output.log tails


def test_runs_ls_logs_and_tag_print_inert(planted: Home, srat: Srat) -> None:
    assert_inert(srat("runs", "ls"))  # the device column holds EVIL
    assert_inert(srat("runs", "logs", "evil"))
    outcome = srat("runs", "tag", "plain", TAG)
    assert_inert(outcome, expect=TAG_SHOWN)
    assert outcome.out.strip() == f"plain tags: {TAG_SHOWN}"


def test_runs_compare_and_export_print_inert(planted: Home, srat: Srat) -> None:
    outcome = srat("runs", "compare", "evil", "plain", "--all")
    assert_inert(outcome)
    assert f"/data/{SHOWN}" in outcome.out  # data.root, a config value
    assert f"{SHOWN}0" in outcome.out  # a class name in the per-class table
    for fmt in ("md", "csv", "latex", "json"):
        assert_inert(srat("runs", "export", "--format", fmt), expect=None)


def test_srat_eval_prints_class_names_and_paths_inert(
    planted: Home, srat: Srat, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The printing of `srat eval`, with the evaluation itself stubbed: its result is what a
    PGD-20 evaluation returns, so only the class names and paths are under test here."""
    from srat_engine.evaluation import runner

    run = RunDir(planted.runs / "evil")
    run.checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
    run.checkpoint_path.write_bytes(b"stub")
    classes = len(run.config()["resolved"]["class_names"])

    def evaluate(run: RunDir, attack: str, n: int | None, device: str, **kw: Any) -> Any:
        kw.get("on_start", lambda: None)()
        accuracy = [50.0] * classes
        return {"attack": attack, "overall": 50.0, "under": 40.0, "class": accuracy,
                "clean_overall": 80.0, "clean_class": accuracy, "class_n": [2] * classes,
                "n": 2 * classes, "checkpoint_epoch": 10, "params": {"eps": 8 / 255},
                "time": "2026-11-21T00:00:00+00:00", "seconds": 1.0}  # fmt: skip

    monkeypatch.setattr(runner, "evaluate_run", evaluate)
    outcome = srat("eval", "evil", "--n", "2")
    assert_inert(outcome)
    assert f"{SHOWN}0" in outcome.out


# matplotlib warns of each glyph its font lacks: a control character reaching the legend
@pytest.mark.filterwarnings("error:Glyph:UserWarning")
def test_srat_tsne_prints_class_names_inert(
    planted: Home, srat: Srat, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from srat_engine.analysis import tsne

    names = RunDir(planted.runs / "evil").config()["resolved"]["class_names"]
    result = tsne.TsneResult(
        points=np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 0.5]]),
        labels=np.array([0, 1, 2]),
        class_names=names,
        separability=1.5,
        epoch=10,
        n_per_class=1,
    )
    monkeypatch.setattr(tsne, "run_tsne", lambda *args, **kwargs: result)
    (tmp_path / f"{EVIL}.png").parent.mkdir(parents=True, exist_ok=True)  # never created
    outcome = srat("tsne", "evil", "--out", str(tmp_path / f"{EVIL}.png"))
    assert_inert(outcome, expect=f"{SHOWN}.png")


def test_srat_run_dry_run_prints_the_data_root_inert(srat: Srat) -> None:
    root = '"/data/\\u001b]0;pwned\\u0007\\u001b[2J[/] [bold]loud :smile: x"'  # TOML escapes
    outcome = srat("run", "-p", "digits-ce", "--dry-run", "--set", f"data.root={root}")
    assert_inert(outcome, expect=f"/data/{SHOWN}")


# -- the TUI ----------------------------------------------------------------------------------


def _screen_text(app: SratApp) -> str:
    """What the app's screen shows, as plain text (the SVG screenshot's text, unescaped)."""
    import html
    import re

    svg = app.export_screenshot()
    return html.unescape("".join(re.findall(r">([^<]*)</text>", svg))).replace("\xa0", " ")


@scenario
async def test_tui_draws_planted_strings_inert(planted: Home) -> None:
    app = SratApp(pinned_context(planted.root, poll_seconds=0.05))
    notes = record_notifications(app)
    async with app.run_test(size=(200, 50)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.loaded)
        await settle(pilot)
        runs = app.screen
        assert isinstance(runs, RunsScreen)
        assert str(runs.table.get_cell("evil", "device")) == SHOWN
        shown = _screen_text(app)
        assert "\x1b" not in shown and SHOWN[:30] in shown  # the device cell, drawn literally

        # a tag through the TUI: its notification shows the tag as text
        runs.focus_run("plain")
        await settle(pilot)
        await pilot.press("t")
        await pilot.pause()
        app.screen.query_one("#answer", Input).value = TAG
        await pilot.press("enter")
        await wait_for(pilot, lambda: any("tags" in message for message, _ in notes), "tags")
        drawn = [n.message for n in app._notifications]  # what the toasts render
        assert any(TAG_SHOWN in message for message in drawn)
        assert not any("\x1b" in message for message in drawn)

        app.open_run("evil")
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen), "the run screen")
        screen = app.screen
        assert isinstance(screen, RunScreen)
        await wait_for(pilot, lambda: bool(screen.config_doc) and screen.rows, "the first poll")
        await settle(pilot)
        assert screen.names[0] == f"{SHOWN}0"
        await pilot.press("3")  # the classes tab: class names in the table
        await settle(pilot)
        shown = _screen_text(app)
        assert "\x1b" not in shown and f"{SHOWN}0" in shown
        await pilot.press("4")  # the log tab
        await settle(pilot)
        shown = _screen_text(app)
        assert "\x1b" not in shown and SHOWN in shown
        await pilot.press("5")  # the config tree: data.root
        await settle(pilot)
        assert "\x1b" not in _screen_text(app)
        tree = screen.query_one("#config-tree", Tree)
        assert f"root = /data/{SHOWN}" in _labels(tree.root)


def _labels(node: TreeNode[Any]) -> list[str]:
    """Every label under `node`, as the tree draws it (plain text)."""
    out = []
    for child in node.children:
        out.append(str(child.label))
        out.extend(_labels(child))
    return out
