"""`srat runs ...` and the detach options of `srat run`, on real (tiny) digits runs.

Two finished runs are trained once per module into a template home; every test gets its own
copy of them in its fresh SRAT_HOME (conftest), indexed the way the detached worker indexes
its run, so tests may tag, remove and corrupt freely.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import torch
from cli_harness import Result, Srat, make_invoker
from fake_runs import prepare_from_env
from typer.testing import CliRunner

from srat_engine.config.prepare import create_run
from srat_engine.errors import SratError
from srat_engine.fsutil import read_jsonl
from srat_engine.runs.home import Home as SratHome
from srat_engine.runs.liveness import process_start
from srat_engine.runs.rundir import RunDir
from srat_engine.runs.summary import summarize_run
from srat_engine.runs.sync import record_in_index
from srat_engine.training.trainer import execute
from srat_tui.cli.app import app

REPO = Path(__file__).resolve().parent.parent
TINY = (
    "train.epochs=1",
    "data.n_max=20",
    "attack.steps=1",
    "eval.steps=1",
    "eval.robust_per_class=2",
    "eval.batch_size=500",
    "train.batch_size=128",  # the digits protocol's 32 would change these tiny runs
    "eval.robust_every=1",
    "device=cpu",
)
COLUMNS = ("std_overall", "std_under", "rob_overall", "rob_under")
TORN = '{"event": "epoch", "epo'


# --- the runs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    runs: Path
    ce: str
    natural: str
    finals: dict[str, dict[str, Any]]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    home = tmp_path_factory.mktemp("template-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SRAT_HOME", str(home))
        mp.delenv("SRAT_PRESETS", raising=False)
        mp.delenv("SRAT_DATA", raising=False)
        finals = {}
        ids = []
        for extra in (("method=CE",), ("method=Natural", "train.epochs=2", "data.n_max=40")):
            run = create_run(prepare_from_env("digits-ce", (*TINY, *extra)), root=home / "runs")
            finals[run.id] = execute(run)
            ids.append(run.id)
    ce, natural = ids
    # the sort test needs distinct numbers; these two configs give 10.0 and 17.6
    assert finals[ce]["std_overall"] != finals[natural]["std_overall"]
    return Template(home / "runs", ce, natural, finals)


@dataclass(frozen=True)
class Home:
    path: Path
    ce: str
    natural: str
    finals: dict[str, dict[str, Any]]

    def run(self, run_id: str) -> RunDir:
        return RunDir(self.path / "runs" / run_id)

    def add_run(self, run_id: str | None = None, **state: Any) -> RunDir:
        """A created (never trained) run with the CE run's config, `state` written, indexed."""
        run = RunDir.create(self.path / "runs", self.run(self.ce).config(), run_id=run_id)
        if state:
            run.write_state(**state)
        record_in_index(run, SratHome(self.path).index)
        return run

    @property
    def index_path(self) -> Path:
        return SratHome(self.path).index.path


@pytest.fixture
def home(template: Template, srat_home: Path) -> Home:
    shutil.copytree(template.runs, srat_home / "runs")
    for run_id in (template.ce, template.natural):
        record_in_index(RunDir(srat_home / "runs" / run_id), SratHome(srat_home).index)
    return Home(srat_home, template.ce, template.natural, template.finals)


# --- invoking srat --------------------------------------------------------------------------


def cli(*args: str) -> str:
    """`srat ARGS` through typer's CliRunner; must succeed; returns stdout."""
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def cli_json(*args: str) -> Any:
    return json.loads(cli(*args))


@pytest.fixture
def srat(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Srat:
    return make_invoker(capsys, monkeypatch)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.02)


def assert_user_error(outcome: Result, *fragments: str) -> str:
    """Exit 2 and exactly one stderr line, `error: ...`, containing every fragment."""
    assert outcome.code == 2, outcome
    lines = outcome.err.splitlines()
    assert len(lines) == 1, outcome.err
    assert lines[0].startswith("error:"), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under root (the whole srat home: runs, trash, index) with file contents."""
    return {
        path.relative_to(root).as_posix(): path.read_bytes() if path.is_file() else None
        for path in sorted(root.rglob("*"))
    }


def changed_paths(before: dict[str, bytes | None], root: Path) -> set[str]:
    after = snapshot(root)
    return {path for path in before.keys() | after.keys() if before.get(path) != after.get(path)}


def assert_unchanged(before: dict[str, bytes | None], root: Path) -> None:
    assert changed_paths(before, root) == set()


def ls_rows(output: str) -> dict[str, list[str]]:
    """`runs ls` table rows by run id (first column), header skipped."""
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines[0].split()[:3] == ["id", "status", "method"], lines[0]
    return {line.split()[0]: line.split() for line in lines[1:]}


def ls_ids(*args: str) -> list[str]:
    return [record["id"] for record in cli_json("runs", "ls", "--json", *args)]


# --- ls -------------------------------------------------------------------------------------


def test_ls_lists_runs_with_status_and_method(home: Home) -> None:
    rows = ls_rows(cli("runs", "ls"))
    assert set(rows) == {home.ce, home.natural}
    assert rows[home.ce][1:3] == ["finished", "CE"]
    assert rows[home.natural][1:3] == ["finished", "Natural"]
    assert rows[home.ce][3:6] == ["digits", "exp10", "1/1"]
    assert rows[home.natural][5] == "2/2"
    for run_id, row in rows.items():
        expected = [f"{home.finals[run_id][c]:.2f}" for c in COLUMNS]
        assert row[6:10] == expected


def test_ls_json_has_every_run_and_its_columns(home: Home) -> None:
    records = {r["id"]: r for r in cli_json("runs", "ls", "--json")}
    assert set(records) == {home.ce, home.natural}
    for run_id, record in records.items():
        assert record["status"] == "finished"
        assert record["final"] is True
        assert {c: record[c] for c in COLUMNS} == {c: home.finals[run_id][c] for c in COLUMNS}
    assert records[home.ce]["method"] == "CE"
    assert records[home.natural]["method"] == "Natural"


def test_ls_without_runs(srat_home: Path) -> None:
    assert cli("runs", "ls").strip() == "no runs"
    assert cli_json("runs", "ls", "--json") == []


def test_ls_status_filter(home: Home) -> None:
    created = home.add_run()
    assert ls_ids("--status", "finished") == sorted([home.ce, home.natural])
    assert ls_ids("--status", "created") == [created.id]
    assert ls_ids("--status", "running") == []


def test_ls_filter_by_field(home: Home) -> None:
    assert ls_ids("--filter", "method=CE") == [home.ce]
    assert ls_ids("-f", "method=natural") == [home.natural]  # case-insensitive
    assert ls_ids("--filter", "method=CE", "--filter", "dataset=digits") == [home.ce]
    assert ls_ids("--filter", "method=GAIRAT") == []
    # key=a,b: either, so one table can hold a chosen set of methods
    assert ls_ids("--filter", "method=CE,Natural") == sorted([home.ce, home.natural])
    assert ls_ids("--filter", "method=GAIRAT, natural") == [home.natural]
    assert ls_ids("--filter", "method=PGD-AT") == [home.ce]  # another name of CE


def test_ls_filter_by_tag(home: Home) -> None:
    assert ls_ids("--filter", "tag=x") == []
    cli("runs", "tag", home.natural, "x")
    assert ls_ids("--filter", "tag=x") == [home.natural]
    rows = ls_rows(cli("runs", "ls", "--filter", "tag=x"))
    assert list(rows) == [home.natural]


def test_ls_filter_needs_key_value(home: Home, srat: Srat) -> None:
    assert_user_error(srat("runs", "ls", "--filter", "methodCE"), "key=value")


def test_ls_sort_by_column(home: Home) -> None:
    home.add_run()  # no metrics: listed after every run that has the column
    by_std = sorted((home.ce, home.natural), key=lambda r: home.finals[r]["std_overall"])
    descending = ls_ids("--sort", "-std_overall")
    assert descending[:2] == by_std[::-1]
    ascending = ls_ids("--sort", "std_overall")
    assert ascending[:2] == by_std
    table = list(ls_rows(cli("runs", "ls", "--sort", "-std_overall")))
    assert table == descending


def test_ls_never_truncates_ids_when_piped(home: Home) -> None:
    long_id = ("z-" + "0123456789abcdef" * 4)[:64]
    assert len(long_id) == 64  # the longest id a run may have
    home.add_run(long_id)
    env = {**os.environ, "COLUMNS": "40", "TERM": "xterm-256color"}
    piped = subprocess.run(
        [sys.executable, "-m", "srat_tui.cli", "runs", "ls"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert piped.returncode == 0, piped.stderr
    rows = ls_rows(piped.stdout)
    assert set(rows) == {home.ce, home.natural, long_id}
    assert all(len(line) > 40 for line in piped.stdout.splitlines()[1:])  # not wrapped either


# --- show -----------------------------------------------------------------------------------


def test_show_prints_status_source_and_the_four_columns(home: Home) -> None:
    out = cli("runs", "show", home.ce)
    first = out.splitlines()[0].split()
    assert first[:2] == [home.ce, "finished"]
    assert "source   digits-ce" in out
    for header in ("Std overall", "Std under", "Rob overall", "Rob under"):
        assert header in out
    values = [f"{home.finals[home.ce][c]:.2f}" for c in COLUMNS]
    row = next(line for line in out.splitlines() if all(v in line for v in values))
    assert [cell for cell in row.replace("│", " ").split()] == values
    assert "CE (final)" in out


def test_show_json_has_summary_and_config(home: Home) -> None:
    doc = cli_json("runs", "show", "--json", home.natural)
    assert set(doc) >= {"summary", "config"}
    summary = doc["summary"]
    assert summary["id"] == home.natural
    assert summary["status"] == "finished"
    assert {c: summary[c] for c in COLUMNS} == {c: home.finals[home.natural][c] for c in COLUMNS}
    assert doc["config"]["config"]["method"] == "Natural"
    assert doc["config"]["source"] == "digits-ce"
    assert doc["config"] == home.run(home.natural).config()
    assert doc["exit"]["status"] == "finished"


def test_show_treats_a_final_followed_by_more_epochs_as_stale(home: Home) -> None:
    run = home.run(home.ce)
    assert "CE (final)" in cli("runs", "show", home.ce)
    last = [r for r in run.metrics() if r.get("event") == "epoch"][-1]
    run.append_metrics({"event": "resume", "from_epoch": last["epoch"]})
    run.append_metrics({**last, "epoch": last["epoch"] + 1})  # trained further
    out = cli("runs", "show", home.ce)
    assert f"CE (epoch {last['epoch'] + 1})" in out and "(final)" not in out
    assert cli_json("runs", "show", "--json", home.ce)["summary"]["final"] is False


# --- tag / note -----------------------------------------------------------------------------


def test_tag_and_remove_persist_to_meta_and_index(home: Home) -> None:
    run = home.run(home.ce)
    assert cli("runs", "tag", home.ce, "baseline").strip() == f"{home.ce} tags: baseline"
    cli("runs", "tag", home.ce, "paper")
    again = cli("runs", "tag", home.ce, "baseline")  # already there: not added twice, and said
    assert again.strip() == f"{home.ce} already had the tag 'baseline'; tags: baseline, paper"
    assert json.loads((run.path / "meta.json").read_text())["tags"] == ["baseline", "paper"]
    assert SratHome.from_env().index.get(home.ce)["tags"] == ["baseline", "paper"]
    assert "tags     baseline, paper" in cli("runs", "show", home.ce)

    cli("runs", "tag", "--remove", home.ce, "baseline")
    assert run.meta()["tags"] == ["paper"]
    # a removal that finds no such tag (a typo) says so rather than looking done
    absent = cli("runs", "tag", "--remove", home.ce, "basline")
    assert absent.strip() == f"{home.ce} had no tag 'basline'; tags: paper"
    assert SratHome.from_env().index.get(home.ce)["tags"] == ["paper"]
    assert SratHome.from_env().index.get(home.natural)["tags"] == []


def test_note_persists_to_meta_and_index(home: Home) -> None:
    cli("runs", "note", home.natural, "  lr too high?  ")
    cli("runs", "note", home.natural, "second thought")
    notes = ["lr too high?", "second thought"]
    assert home.run(home.natural).meta()["notes"] == notes
    assert SratHome.from_env().index.get(home.natural)["notes"] == notes
    out = cli("runs", "show", home.natural)
    assert "note     lr too high?" in out and "note     second thought" in out


@pytest.mark.parametrize(
    ("tag", "said"),
    [
        ("two words", "one word"),
        ("tab\tbed", "one word"),
        ("   ", "one word"),
        # `-f tag=x,y` selects x or y: a tag "x,y" was taken and could never be found
        ("x,y", "no ',' or '='"),
        ("k=v", "no ',' or '='"),
        ("t" * 65, "at most 64 characters (got 65)"),
    ],
)
def test_tag_must_be_one_word_a_filter_can_find(
    home: Home, srat: Srat, tag: str, said: str
) -> None:
    before = snapshot(home.path)
    assert_user_error(srat("runs", "tag", home.ce, tag), said)
    assert_unchanged(before, home.path)
    assert cli("runs", "tag", home.ce, "t" * 64).strip().endswith("t" * 64)


def test_a_tag_that_reads_as_a_removal_is_refused(home: Home, srat: Srat) -> None:
    # after `--` a tag "-best" got in, and the runs screen's `t` reads "-best" as "remove best"
    before = snapshot(home.path)
    assert_user_error(srat("runs", "tag", home.ce, "--", "-best"), "does not start with '-'")
    assert_unchanged(before, home.path)


def test_empty_note_is_refused(home: Home, srat: Srat) -> None:
    before = snapshot(home.path)
    assert_user_error(srat("runs", "note", home.ce, "  "), "note")
    assert_unchanged(before, home.path)


# --- rm -------------------------------------------------------------------------------------


def test_rm_moves_to_trash_and_drops_from_index(home: Home) -> None:
    out = cli("runs", "rm", home.ce)
    trashed = home.path / "trash" / home.ce
    assert f"moved to {trashed}" in out
    assert (trashed / "config.json").is_file() and (trashed / "metrics.jsonl").is_file()
    assert not (home.path / "runs" / home.ce).exists()
    assert SratHome.from_env().index.get(home.ce) is None
    assert ls_ids() == [home.natural]


def test_rm_of_an_id_given_twice_removes_it_once(home: Home) -> None:
    out = cli("runs", "rm", home.ce, home.ce)  # exited 1 with "No such file" after moving it
    assert out.splitlines() == [f"{home.ce} moved to {home.path / 'trash' / home.ce}"]
    assert ls_ids() == [home.natural]


def test_rm_purge_deletes(home: Home) -> None:
    out = cli("runs", "rm", "--purge", home.ce, home.natural)
    assert f"{home.ce} deleted" in out and f"{home.natural} deleted" in out
    assert list((home.path / "runs").iterdir()) == []
    assert not (home.path / "trash").exists()
    assert len(SratHome.from_env().index) == 0
    assert cli("runs", "ls").strip() == "no runs"


def alive_state() -> dict[str, Any]:
    """state.json fields of a run whose process is this (very much alive) test process."""
    pid = os.getpid()
    return {"status": "running", "pid": pid, "pid_start": psutil.Process(pid).create_time()}


@pytest.mark.parametrize("purge", [False, True])
def test_rm_refuses_a_running_run(home: Home, srat: Srat, purge: bool) -> None:
    running = home.add_run(**alive_state())
    before = snapshot(home.path)
    args = ["runs", "rm", *(["--purge"] if purge else []), running.id]
    assert_user_error(srat(*args), running.id, "running", "kill")
    assert_unchanged(before, home.path)


def test_rm_refuses_a_queued_run(home: Home, srat: Srat) -> None:
    queued = home.add_run(**{**alive_state(), "status": "queued"})
    before = snapshot(home.path)
    assert_user_error(srat("runs", "rm", queued.id), "queued")
    assert_unchanged(before, home.path)


def test_rm_with_one_bad_id_moves_nothing(home: Home, srat: Srat) -> None:
    before = snapshot(home.path)
    assert_user_error(srat("runs", "rm", home.ce, "no-such-run"), "no-such-run")
    assert_unchanged(before, home.path)


def test_rm_refusal_moves_no_other_run(home: Home, srat: Srat) -> None:
    running = home.add_run(**alive_state())
    before = snapshot(home.path)
    assert_user_error(srat("runs", "rm", home.ce, running.id), "running")
    assert_unchanged(before, home.path)


# --- reindex --------------------------------------------------------------------------------


def test_reindex_rebuilds_a_deleted_index_with_tags(home: Home) -> None:
    cli("runs", "tag", home.natural, "keep")
    cli("runs", "note", home.ce, "a note")
    home.index_path.unlink()
    assert cli("runs", "ls").strip() == "no runs"

    assert "indexed 2 runs" in cli("runs", "reindex")
    records = {r["id"]: r for r in cli_json("runs", "ls", "--json")}
    assert set(records) == {home.ce, home.natural}
    assert records[home.natural]["tags"] == ["keep"]
    assert records[home.ce]["notes"] == ["a note"]
    assert records[home.ce]["std_overall"] == home.finals[home.ce]["std_overall"]
    assert ls_ids("--filter", "tag=keep") == [home.natural]


def test_corrupt_index_is_a_user_error_and_reindex_repairs_it(home: Home, srat: Srat) -> None:
    home.index_path.write_text("{not json")
    assert_user_error(srat("runs", "ls"), "reindex")
    assert "indexed 2 runs" in cli("runs", "reindex")
    assert ls_ids() == sorted([home.ce, home.natural])


# --- bad input: exit 2, one line, nothing changed -------------------------------------------

VERBS = {
    "show": ("show", "{id}"),
    "show-json": ("show", "--json", "{id}"),
    "logs": ("logs", "{id}"),
    "tag": ("tag", "{id}", "x"),
    "untag": ("tag", "--remove", "{id}", "x"),
    "note": ("note", "{id}", "hello"),
    "rm": ("rm", "{id}"),
    "rm-purge": ("rm", "--purge", "{id}"),
    "kill": ("kill", "{id}"),
    "resume": ("resume", "{id}"),
}
BAD_IDS = ["no-such-run", "../x", "a/b", "UPPER", ".."]


@pytest.mark.parametrize("bad_id", BAD_IDS)
@pytest.mark.parametrize("verb", sorted(VERBS))
def test_bad_run_id_is_a_user_error_and_changes_nothing(
    home: Home, srat: Srat, verb: str, bad_id: str
) -> None:
    # what each bad id would reach from the runs directory if it were not rejected
    for reachable in ("x", "runs/a/b", "runs/UPPER", "."):
        (home.path / reachable).mkdir(parents=True, exist_ok=True)
        shutil.copy(home.run(home.ce).path / "config.json", home.path / reachable)
    before = snapshot(home.path)
    args = [part.replace("{id}", bad_id) for part in VERBS[verb]]
    assert_user_error(srat("runs", *args), repr(bad_id))
    assert_unchanged(before, home.path)


def test_resuming_a_finished_run_is_refused(home: Home, srat: Srat) -> None:
    before = snapshot(home.path)
    assert_user_error(srat("runs", "resume", home.ce), home.ce, "finished")
    assert_unchanged(before, home.path)


@pytest.mark.parametrize("damage", ["garbage", "cut short"])
def test_resuming_from_a_damaged_checkpoint_is_refused_before_a_worker_starts(
    home: Home, srat: Srat, damage: str
) -> None:
    run = home.run(home.ce)
    run.check_checkpoint_file()  # a whole checkpoint passes
    run.record_end("killed", error="stopped by SIGTERM", log="killed")
    whole = run.checkpoint_path.read_bytes()
    damaged = b"garbage\n" if damage == "garbage" else whole[: len(whole) // 2]
    run.checkpoint_path.write_bytes(damaged)
    before = snapshot(home.path)
    # it said "resumed (worker pid N)", exit 0, and the worker failed seconds later
    assert_user_error(srat("runs", "resume", home.ce), f"checkpoint {run.checkpoint_path}",
                      "is corrupt")  # fmt: skip
    assert_unchanged(before, home.path)
    assert run.checkpoint_path.read_bytes() == damaged


def test_killing_a_finished_run_is_refused(home: Home, srat: Srat) -> None:
    before = snapshot(home.path)
    assert_user_error(srat("runs", "kill", home.ce), "not running", "finished")
    assert_unchanged(before, home.path)


def dead_pid() -> tuple[int, float]:
    """The pid and start time of a process that has exited (and been reaped)."""
    process = subprocess.Popen(["sleep", "60"])
    started = psutil.Process(process.pid).create_time()
    process.kill()
    process.wait()
    assert not psutil.pid_exists(process.pid)
    return process.pid, started


def test_killing_a_dead_run_is_refused_and_marks_it_dead(home: Home, srat: Srat) -> None:
    pid, started = dead_pid()
    dead = home.add_run(status="running", pid=pid, pid_start=started)
    before = snapshot(home.path)
    line = assert_user_error(srat("runs", "kill", dead.id), dead.id, "not running", "dead")
    assert "status dead" in line
    assert dead.state()["status"] == "dead"
    assert dead.exit_record() is None
    assert "marked dead" in dead.log_path.read_text()
    # the reconciled state (and the index's copy of it) is the only change
    own = {f"runs/{dead.id}/state.json", f"runs/{dead.id}/log.txt", "index.json"}
    assert changed_paths(before, home.path) <= own
    assert ls_rows(cli("runs", "ls"))[dead.id][1] == "dead"


# --- liveness -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("boot_offset", "expected"), [(0.0, "running"), (-100.0, "dead")], ids=["same", "reused"]
)
def test_liveness_reads_the_start_since_boot_which_no_clock_change_moves(
    home: Home, boot_offset: float, expected: str
) -> None:
    """A run recorded with `pid_boot_start` (srat's own processes) is judged by it: its
    `pid_start`, seconds since the epoch, is what an NTP adjustment moves, here by 1 s (psutil
    adds a boot time the kernel recomputes from the wall clock), and a live run stays
    running; a start since boot that does not match is another process on a reused pid."""
    started = process_start(os.getpid())
    state = {"status": "running", "pid": os.getpid(), "pid_start": started["pid_start"] + 1.0,
             "pid_boot_start": started["pid_boot_start"] + boot_offset}  # fmt: skip
    run = home.add_run(**state)
    assert ls_rows(cli("runs", "ls"))[run.id][1] == expected
    assert run.state()["status"] == expected


@pytest.mark.parametrize(("start_offset", "expected"), [(0.0, "running"), (-100.0, "dead")])
def test_ls_checks_the_process_start_time_not_just_the_pid(
    home: Home, start_offset: float, expected: str
) -> None:
    state = alive_state()
    state["pid_start"] += start_offset  # -100: this pid now belongs to another process
    run = home.add_run(**state)
    rows = ls_rows(cli("runs", "ls"))
    assert rows[run.id][1] == expected
    assert run.state()["status"] == expected
    records = {r["id"]: r for r in cli_json("runs", "ls", "--json")}
    assert records[run.id]["status"] == expected
    assert SratHome.from_env().index.get(run.id)["status"] == expected
    assert ls_ids("--status", expected) == [run.id]


def test_run_on_another_host_keeps_its_status(home: Home) -> None:
    state = {**alive_state(), "pid_start": 1.0, "host": "some-other-host.invalid"}
    run = home.add_run(**state)
    assert ls_rows(cli("runs", "ls"))[run.id][1] == "running"
    assert run.state()["status"] == "running"


# --- torn metrics line ----------------------------------------------------------------------


def test_torn_last_metrics_line_is_tolerated(home: Home) -> None:
    run = home.run(home.ce)
    final = home.finals[home.ce]
    complete = read_jsonl(run.metrics_path)
    with run.metrics_path.open("a", encoding="utf-8") as handle:
        handle.write(TORN)  # a crash mid-append: no newline

    assert read_jsonl(run.metrics_path) == complete
    summary = summarize_run(run)
    assert summary["final"] is True
    assert {c: summary[c] for c in COLUMNS} == {c: final[c] for c in COLUMNS}

    cli("runs", "reindex")  # the index record re-read from the torn file
    record = {r["id"]: r for r in cli_json("runs", "ls", "--json")}[home.ce]
    assert {c: record[c] for c in COLUMNS} == {c: final[c] for c in COLUMNS}
    assert ls_rows(cli("runs", "ls"))[home.ce][6:10] == [f"{final[c]:.2f}" for c in COLUMNS]
    shown = cli_json("runs", "show", "--json", home.ce)["summary"]
    assert {c: shown[c] for c in COLUMNS} == {c: final[c] for c in COLUMNS}
    out = cli("runs", "show", home.ce)
    assert "CE (final)" in out and f"{final['std_overall']:.2f}" in out

    run.append_metrics({"event": "note", "text": "after the crash"})
    records = read_jsonl(run.metrics_path)
    assert records == [*complete, {"event": "note", "text": "after the crash"}]
    lines = run.metrics_path.read_text(encoding="utf-8").split("\n")
    assert lines[-3:] == [TORN, '{"event":"note","text":"after the crash"}', ""]


# --- srat run: sweeps and detach options ----------------------------------------------------


def test_dry_run_pattern_lists_three_configs_and_creates_nothing(srat_home: Path) -> None:
    out = cli("run", "--preset", "digits-drcb-*", "--dry-run")
    assert out.count("(dry run: nothing was created)") == 3
    # a study's blocks say which seed each is (the preset's own, 0, here; --seeds: each)
    assert out.count("digits-drcb-ce, seed 0 (dry run") == 1
    seeded = cli("run", "--preset", "digits-ce", "--seeds", "3,5", "--dry-run")
    assert "digits-ce, seed 3 (dry run" in seeded and "digits-ce, seed 5 (dry run" in seeded
    for method in ("DRCB-CE", "DRCB-Focal", "DRCB-LDAM"):
        assert f'method = "{method}"' in out
    docs = []
    text = cli("run", "--preset", "digits-drcb-*", "--dry-run", "--json")
    decoder, position = json.JSONDecoder(), 0
    while text[position:].strip():
        doc, position = decoder.raw_decode(text, len(text) - len(text[position:].lstrip()))
        docs.append(doc)
    assert [d["config"]["method"] for d in docs] == ["DRCB-CE", "DRCB-Focal", "DRCB-LDAM"]
    assert [d["source"] for d in docs] == [
        "digits-drcb-ce",
        "digits-drcb-focal",
        "digits-drcb-ldam",
    ]
    assert list(srat_home.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--preset", "digits-drcb-*"), "--detach"),
        (("--preset", "digits-ce", "--preset", "digits-drcb-ce"), "--detach"),
        (("--preset", "digits-ce", "--gpus", "0"), "--detach"),
        (("--preset", "digits-ce", "--slots", "2"), "--detach"),
        (("--preset", "digits-ce", "--detach", "--device", "cpu", "--slots", "0"), "at least 1"),
        (("--preset", "digits-ce", "--detach", "--device", "tpu"), "tpu"),
        (("--preset", "digits-nope-*"), "no preset matches"),
    ],
)
def test_run_usage_errors_create_nothing(
    srat: Srat, srat_home: Path, args: tuple[str, ...], fragment: str
) -> None:
    assert_user_error(srat("run", *args), fragment)
    assert list(srat_home.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_run_gpus_detach_without_a_gpu(srat: Srat, srat_home: Path) -> None:
    assert_user_error(
        srat("run", "--preset", "digits-ce", "--gpus", "0", "--detach"), "no CUDA GPU"
    )
    assert list(srat_home.iterdir()) == []


def test_foreground_run_is_listed(srat: Srat, srat_home: Path) -> None:
    outcome = srat("run", "--preset", "digits-ce", *(f"--set={o}" for o in TINY))
    assert outcome.code == 0, outcome.err
    (run_path,) = (srat_home / "runs").iterdir()
    assert RunDir(run_path).state()["status"] == "finished"
    assert ls_ids() == [run_path.name]


def test_kill_a_queued_detached_run(home: Home, srat: Srat) -> None:
    """A real worker queued behind a slot this test holds: kill stops it and records why."""
    from srat_engine.jobs.slots import hold_slot, slots_for

    slots = SratHome(home.path).slots
    with hold_slot("0-test", slots_for(["cpu"], 1), root=slots, poll_seconds=0.05):
        out = cli("run", "--preset", "digits-ce", *(f"--set={o}" for o in TINY), "--detach")
        run_id, source, *_ = out.split()
        assert source == "digits-ce"
        run = home.run(run_id)
        worker = run.launch_record()["pid"]
        ticket = home.path / "slots" / "queue" / run_id

        def queued() -> bool:
            assert psutil.pid_exists(worker), (run.path / "output.log").read_text()
            return run.state().get("pid") == worker and ticket.exists()

        wait_for(queued, "the worker to queue for the held slot", timeout=60)
        assert ls_rows(cli("runs", "ls"))[run_id][1] == "queued"

        assert cli("runs", "kill", run_id).strip() == f"{run_id} killed"
    assert run.state()["status"] == "killed"
    assert run.exit_record()["status"] == "killed"
    assert "while queued" in run.exit_record()["error"]
    assert not ticket.exists()
    assert SratHome.from_env().index.get(run_id)["status"] == "killed"
    assert_user_error(srat("runs", "kill", run_id), "not running", "killed")


def test_a_detached_run_under_a_relative_srat_home_trains_where_it_was_put(
    srat_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker runs in its run's directory: a relative $SRAT_HOME, read there, named
    another folder, and the run died at once ("dead", a FileNotFoundError in output.log)."""
    monkeypatch.chdir(srat_home.parent)
    monkeypatch.setenv("SRAT_HOME", srat_home.name)
    out = cli("run", "--preset", "digits-ce", *(f"--set={o}" for o in TINY), "--detach")
    run = RunDir(srat_home / "runs" / out.split()[0])

    def ended() -> bool:
        return run.exit_record() is not None

    wait_for(ended, "the detached run to end", timeout=120)
    assert run.exit_record()["status"] == "finished", (run.path / "output.log").read_text()
    assert not (run.path / srat_home.name).exists()  # no second home made inside the run
    assert SratHome.from_env().root == srat_home
    monkeypatch.setenv("SRAT_PRESETS", "mine")
    monkeypatch.setenv("SRAT_DATA", "datasets")
    moved = SratHome.from_env()  # the folders a worker is told of: absolute too
    assert moved.extra_presets == (srat_home.parent / "mine",)
    assert moved.data_override == srat_home.parent / "datasets"


def test_a_home_that_is_a_file_is_refused_in_one_line(
    srat: Srat, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from srat_tui.tui.app import main as tui_main

    afile = tmp_path / "home"
    afile.write_text("not a folder\n")
    monkeypatch.setenv("SRAT_HOME", str(afile))
    for args in (("runs", "ls"), ("sweep", "ls"), ("run", "--preset", "digits-ce", "--dry-run")):
        assert_user_error(srat(*args), f"SRAT_HOME={afile} is a file, not a folder")
    with pytest.raises(SystemExit) as stop:
        tui_main([])  # before the app takes the screen
    assert stop.value.code == 2
    assert afile.read_text() == "not a folder\n"


# --- resolve_devices ------------------------------------------------------------------------


def test_resolve_devices_cpu() -> None:
    from srat_engine.jobs.supervisor import resolve_devices

    assert resolve_devices(device="cpu", slots=3) == (["cpu"], 3)
    assert resolve_devices(device="cpu") == (["cpu"], 1)
    with pytest.raises(SratError, match="at least 1"):
        resolve_devices(device="cpu", slots=0)
    with pytest.raises(SratError, match="at least 1"):
        resolve_devices(device="cpu", per_gpu=0)
    with pytest.raises(SratError, match="unknown device 'tpu'"):
        resolve_devices(device="tpu")


def test_resolve_devices_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    import srat_engine.jobs.supervisor as supervisor

    monkeypatch.setattr(supervisor, "cuda_device_count", lambda: 0)
    assert supervisor.resolve_devices() == (["cpu"], 1)
    assert supervisor.resolve_devices(device="auto", slots=2) == (["cpu"], 2)
    with pytest.raises(SratError, match="no CUDA GPU"):
        supervisor.resolve_devices(gpus="0")
    with pytest.raises(SratError, match="not a visible CUDA device"):
        supervisor.resolve_devices(device="cuda")


def test_resolve_devices_gpu_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    import srat_engine.jobs.supervisor as supervisor

    monkeypatch.setattr(supervisor, "cuda_device_count", lambda: 2)
    resolve = supervisor.resolve_devices
    assert resolve() == (["cuda:0", "cuda:1"], 1)
    assert resolve(gpus="all", per_gpu=3) == (["cuda:0", "cuda:1"], 3)
    assert resolve(gpus="1,0,1") == (["cuda:1", "cuda:0"], 1)
    assert resolve(device="cuda") == (["cuda:0"], 1)
    assert resolve(device="cuda:1", per_gpu=2) == (["cuda:1"], 2)
    for bad in ("2", "-1", "", "0,x"):
        with pytest.raises(SratError, match="--gpus"):
            resolve(gpus=bad)
    with pytest.raises(SratError, match="not a visible"):
        resolve(device="cuda:2")


# --- ls --status / --sort, logs -n, resume --slots: bad values are one line ----------------


def test_ls_unknown_status_is_refused_naming_the_statuses(home: Home, srat: Srat) -> None:
    from srat_engine.runs.liveness import ACTIVE, ENDED, LOST

    line = assert_user_error(srat("runs", "ls", "--status", "nosuch"), "'nosuch'")
    for status in ("created", *ACTIVE, *ENDED, LOST):
        assert status in line
    assert ls_ids("--status", "FINISHED") == sorted([home.ce, home.natural])  # any case


def test_ls_sorts_by_the_column_as_headed_and_refuses_unknown_ones(home: Home, srat: Srat) -> None:
    assert ls_ids("--sort", "-std") == ls_ids("--sort", "-std_overall")
    assert ls_ids("--sort", "std") == ls_ids("--sort", "std_overall")
    by_rob = sorted((home.ce, home.natural), key=lambda r: home.finals[r]["rob_overall"])
    assert ls_ids("--sort", "rob") == by_rob and ls_ids("--sort", "-rob") == by_rob[::-1]
    line = assert_user_error(srat("runs", "ls", "--sort", "nosuch"), "'nosuch'")
    assert "rob (rob_overall)" in line and "age" in line
    assert_user_error(srat("runs", "ls", "--sort", "-"), "sort by one of")


def test_ls_sort_by_age_puts_the_youngest_first(home: Home) -> None:
    config = home.run(home.natural).path / "config.json"
    doc = json.loads(config.read_text())
    config.write_text(json.dumps({**doc, "created": "2000-01-01T00:00:00+00:00"}))
    cli("runs", "reindex")
    assert ls_ids("--sort", "age") == [home.ce, home.natural]
    assert ls_ids("--sort", "-age") == [home.natural, home.ce]


def test_logs_lines_zero_prints_none_and_a_negative_count_is_refused(
    home: Home, srat: Srat
) -> None:
    log = home.run(home.ce).log_path.read_text().splitlines()
    assert len(log) > 1
    assert cli("runs", "logs", home.ce, "-n", "1").splitlines() == log[-1:]
    assert cli("runs", "logs", home.ce, "-n", "0") == ""
    assert_user_error(srat("runs", "logs", home.ce, "-n", "-5"), "-n", "0 or more")


def test_resume_checks_slots_as_run_does(
    home: Home, srat: Srat, monkeypatch: pytest.MonkeyPatch
) -> None:
    import srat_engine.jobs.supervisor as supervisor

    placements: list[object] = []
    monkeypatch.setattr(
        supervisor, "resume", lambda runs, **kwargs: placements.append(kwargs["placement"]) or ""
    )
    run = home.add_run(status="killed")
    before = snapshot(home.path)
    for args in (("--slots", "0"), ("--slots", "-1"), ("--per-gpu", "0")):
        # the message of `srat run --detach --slots 0` (resolve_devices), not a silent 1
        assert_user_error(srat("runs", "resume", run.id, *args), "at least 1")
    assert_unchanged(before, home.path)
    assert placements == []
    # --slots alone: the CPU it was launched on, with that many slots (not dropped)
    assert srat("runs", "resume", run.id, "--slots", "2").code == 0
    assert placements == [(["cpu"], 2)]
