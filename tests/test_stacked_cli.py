"""`srat run --seeds ... --stack`: the seeds of a configuration in one process, foreground or
detached (a real worker), and what it refuses."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from cli_harness import Srat, make_invoker
from fake_runs import TINY_RUN, make_fake_run

from srat_engine.jobs.supervisor import kill_run
from srat_engine.runs.home import Home
from srat_engine.runs.liveness import ACTIVE, reconcile
from srat_engine.runs.records import epoch_summary
from srat_engine.runs.rundir import RunDir

TINY = [item for setting in TINY_RUN for item in ("--set", setting)]


@pytest.fixture
def srat(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Srat:
    return make_invoker(capsys, monkeypatch)


def runs_in(home: Path) -> list[RunDir]:
    return sorted((RunDir(p) for p in (home / "runs").iterdir()), key=lambda r: r.id)


def wait_until_ended(runs: list[RunDir], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(reconcile(run) in ACTIVE for run in runs):
        if time.monotonic() > deadline:
            raise AssertionError(f"runs still active after {timeout}s")
        time.sleep(0.2)


def test_foreground_stack_trains_each_seed_into_its_own_run(srat: Srat, srat_home: Path) -> None:
    result = srat(
        "run", "-p", "digits-ce", "--seeds", "0-1", "--stack", *TINY, "--set", "train.epochs=2"
    )
    assert result.code == 0, result.err
    runs = runs_in(srat_home)
    assert len(runs) == 2
    assert sorted(run.config()["config"]["seed"] for run in runs) == [0, 1]
    for run in runs:
        assert run.exit_record()["status"] == "finished"
        assert [r["epoch"] for r in run.metrics() if r["event"] == "epoch"] == [1, 2]
        # every epoch line names its run
        assert result.out.count(f"{run.id}  epoch ") == 2
        # and the run's log keeps the same line per epoch (`srat runs logs -f` follows it)
        logged = [line.split(" ", 1)[1] for line in run.log_path.read_text().splitlines()
                  if " epoch " in line]  # fmt: skip
        epochs = [r for r in run.metrics() if r["event"] == "epoch"]
        assert logged == [epoch_summary(r) for r in epochs]
        assert all(f"{run.id}  {line}" in result.out for line in logged)
    listed = srat("runs", "ls", "--json")
    assert {entry["status"] for entry in json.loads(listed.out)} == {"finished"}
    # recorded as one stack, as a detached one: `runs show` says so, `resume --stack` knows it
    ids = sorted(run.id for run in runs)
    assert all(sorted(run.stack() or []) == ids for run in runs)
    assert "stack" in srat("runs", "show", runs[0].id).out


def test_detached_stack_shares_one_worker_and_a_kill_stops_the_stack(
    srat: Srat, srat_home: Path
) -> None:
    result = srat(
        "run", "-p", "digits-ce", "--seeds", "0-1", "--stack", "--detach", "--json", *TINY,
        "--set", "train.epochs=400",
    )  # fmt: skip
    assert result.code == 0, result.err
    launched = json.loads(result.out)
    assert len(launched) == 2 and len({entry["pid"] for entry in launched}) == 1
    runs = [RunDir(srat_home / "runs" / entry["run_id"]) for entry in launched]
    deadline = time.monotonic() + 120
    while not all(run.metrics() for run in runs):  # both training, in one process
        assert time.monotonic() < deadline, "the stack did not start training"
        time.sleep(0.2)
    assert {run.state()["pid"] for run in runs} == {launched[0]["pid"]}
    assert runs[1].launch_record()["stack"] == [run.id for run in runs]
    killed = srat("runs", "kill", runs[1].id)
    assert killed.out.strip() == f"{runs[1].id} killed, and the rest of its stack: {runs[0].id}"
    wait_until_ended(runs, 60)
    ends = [run.exit_record() for run in runs]
    assert [reconcile(run) for run in runs] == ["killed", "killed"], ends
    shown = srat("runs", "show", runs[1].id)
    assert f"stack    one process with {runs[0].id}: a kill stops them all" in shown.out
    # together again: one worker for the stack, each run from its own checkpoint
    together = srat("runs", "resume", runs[1].id, "--stack")
    assert together.code == 0, together.err
    pid = int(together.out.split("worker pid ")[1].rstrip(")\n"))
    assert together.out.startswith(f"{runs[0].id}, {runs[1].id} resumed as one stack")
    for run in runs:
        assert run.launch_record()["pid"] == pid and run.launch_record()["resume"] is True
        assert run.launch_record()["stack"] == [r.id for r in runs]
    deadline = time.monotonic() + 60
    while not all("resumed on cpu" in run.log_path.read_text() for run in runs):
        assert time.monotonic() < deadline, "the stack did not resume"
        time.sleep(0.2)
    kill_run(runs[0], home=Home(srat_home))
    wait_until_ended(runs, 60)
    # each resumes alone from its own checkpoint (or from epoch 1, if none was written yet)
    assert srat("runs", "resume", runs[0].id).code == 0
    deadline = time.monotonic() + 60
    while "resumed on cpu" not in runs[0].log_path.read_text():
        assert time.monotonic() < deadline, "the resumed run did not start"
        time.sleep(0.2)
    assert runs[0].launch_record().get("stack") is None  # alone, in a worker of its own
    assert reconcile(runs[1]) == "killed"
    assert "stack    " not in srat("runs", "show", runs[0].id).out
    kill_run(runs[0], home=Home(srat_home))


def test_resuming_a_lone_run_as_a_stack_is_refused(srat: Srat, srat_home: Path) -> None:
    run = make_fake_run(srat_home / "runs", "alone", status="killed")
    result = srat("runs", "resume", run.id, "--stack")
    assert result.code == 2 and result.err_lines == [
        "error: run alone was launched alone: resume it without --stack"
    ], result.err
    assert run.launch_record() == {}  # nothing launched


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--stack",), "give two or more with --seeds"),
        (("--seeds", "0,0", "--stack"), "give two or more with --seeds"),
        (("--seeds", "0-1", "--stack", "--set", "method=TRADES"), "TRADES"),
        (("--seeds", "0-1", "--stack", "--set", "method=AWP", "--backend", "slurm"), "AWP"),
    ],
)
def test_what_cannot_stack_is_refused_before_any_run_exists(
    srat: Srat, srat_home: Path, args: tuple[str, ...], message: str
) -> None:
    result = srat("run", "-p", "digits-ce", *args, *TINY)
    assert result.code == 2
    assert message in result.err and len(result.err_lines) == 1, result.err
    assert not (srat_home / "runs").exists() or not any((srat_home / "runs").iterdir())


def test_resume_groups_keep_a_whole_stack_together_and_the_rest_alone(srat_home: Path) -> None:
    from srat_engine.fsutil import atomic_write_json
    from srat_engine.jobs.supervisor import resume_groups

    runs = {i: make_fake_run(srat_home / "runs", i, status="killed") for i in ("a", "b", "c")}
    for run_id in ("a", "b"):
        atomic_write_json(runs[run_id].path / "launch.json", {"stack": ["a", "b"]})

    def ids(*order: str) -> list[list[str]]:
        return [[run.id for run in group] for group in resume_groups([runs[i] for i in order])]

    assert ids("b", "c", "a") == [["a", "b"], ["c"]]  # the stack's order, at its first place
    assert ids("a", "c") == [["a"], ["c"]]  # b not among them: a alone
    assert ids("c") == [["c"]]
