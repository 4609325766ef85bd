"""`--backend slurm` end to end, through the real one-node Slurm of slurm_cluster.py.

Every run here is a real digits run (TINY_RUN) submitted by the `srat` entry point, trained by
a Slurm job that submitit started, and read back through `srat runs ...`. The cluster has two
CPUs, no accounting and KillWait=5 (see slurm_cluster.py).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cli_harness import Srat, make_invoker
from fake_runs import TINY_RUN
from slurm_cluster import SlurmCluster, pid_alive, slurm_cluster

from srat_engine.runs.rundir import RunDir

__all__ = ["slurm_cluster"]  # the fixture, imported for pytest

TINY = [arg for item in TINY_RUN for arg in ("--set", item)]
# fields of a metrics record that say what was computed (not when, nor how fast)
_TIMING = ("time", "train_seconds", "eval_seconds")


@pytest.fixture
def srat(
    slurm_cluster: SlurmCluster,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> Srat:
    """`srat ...` in-process against the test cluster; jobs inherit this environment (sbatch
    exports it), so they beat every 0.5 s and find the same home."""
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    monkeypatch.setenv("SRAT_HEARTBEAT_S", "0.5")
    return make_invoker(capsys, monkeypatch)


def wait_for(what: str, ready: Callable[[], Any], timeout: float = 60.0) -> Any:
    """Poll `ready` every 0.1 s until it returns something true; return that, or fail."""
    deadline = time.monotonic() + timeout
    while True:
        value = ready()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def run_dir(home: Path, run_id: str) -> RunDir:
    return RunDir(home / "runs" / run_id)


def status(home: Path, run_id: str) -> str:
    return str(run_dir(home, run_id).state().get("status"))


def submit(srat: Srat, *args: str) -> list[dict[str, Any]]:
    result = srat("run", "--backend", "slurm", "--device", "cpu", *TINY, *args, "--json")
    assert result.code == 0, result.err
    return json.loads(result.out)


def listing(srat: Srat) -> dict[str, dict[str, Any]]:
    result = srat("runs", "ls", "--json")
    assert result.code == 0, result.err
    return {record["id"]: record for record in json.loads(result.out)} if result.out else {}


def use_presets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, texts: dict[str, str]) -> None:
    """Presets named by `texts`' keys, found first ($SRAT_PRESETS)."""
    presets = tmp_path / "presets"
    presets.mkdir()
    for name, text in texts.items():
        (presets / f"{name}.toml").write_text(text)
    monkeypatch.setenv("SRAT_PRESETS", str(presets))


def block_node(slurm_cluster: SlurmCluster, tmp_path: Path) -> str:
    """A job that takes the whole node, so the next ones wait (reason Resources)."""
    started = tmp_path / "blocker.started"
    job = slurm_cluster.sbatch(
        "--exclusive", f"--output={tmp_path / 'blocker.out'}", "--wrap",
        f"touch {started}; exec sleep 300",
    )  # fmt: skip
    slurm_cluster.wait_for("the blocking job to start", started.exists)
    return job


def results(run: RunDir) -> tuple[dict[int, dict[str, Any]], dict[str, Any]]:
    """The run's epoch records by epoch (the last of each) and its final record, without
    timings."""
    epochs: dict[int, dict[str, Any]] = {}
    final: dict[str, Any] = {}
    for record in run.metrics():
        kept = {k: v for k, v in record.items() if k not in _TIMING}
        if record.get("event") == "epoch":
            epochs[int(record["epoch"])] = kept
        elif record.get("event") == "final":
            final = kept
    return epochs, final


def training_run(srat: Srat, home: Path) -> tuple[dict[str, Any], RunDir]:
    """A submitted 200-epoch run (~5 s), once it has trained an epoch."""
    (entry,) = submit(srat, "--preset", "demo", "--set", "train.epochs=200")
    run = run_dir(home, entry["run_id"])
    wait_for("the run to train an epoch", lambda: run.state().get("epoch"))
    return entry, run


def test_a_run_goes_pending_running_finished_and_lists_live(
    srat: Srat, slurm_cluster: SlurmCluster, srat_home: Path, tmp_path: Path
) -> None:
    blocker = block_node(slurm_cluster, tmp_path)
    (entry,) = submit(srat, "--preset", "demo", "--set", "train.epochs=60")
    run_id, job = entry["run_id"], entry["slurm_job_id"]
    launch = run_dir(srat_home, run_id).launch_record()
    assert launch["backend"] == "slurm" and launch["job_id"] == job

    pending = listing(srat)[run_id]
    assert pending["status"] == "queued" and pending["backend"] == "slurm"
    assert pending["slurm_state"] in ("PENDING (Resources)", "PENDING (Priority)")
    shown = srat("runs", "show", run_id)
    assert f"slurm    job {job}" in shown.out and "PENDING" in shown.out

    slurm_cluster.scancel(blocker)

    def live() -> dict[str, Any] | None:
        record = listing(srat)[run_id]
        return record if record["status"] == "running" and record["epoch"] >= 1 else None

    running = wait_for("the run to list as running with an epoch done", live)
    assert running["slurm_state"].startswith("RUNNING")
    assert running["std_overall"] is not None  # its metrics, while it trains
    wait_for("the run to finish", lambda: status(srat_home, run_id) == "finished")
    done = listing(srat)[run_id]
    assert done["status"] == "finished" and done["epoch"] == 60
    assert done["std_overall"] is not None and "slurm_state" not in done
    state = run_dir(srat_home, run_id).state()
    assert state["slurm_job_id"] == job and state["node"] == slurm_cluster.node


def test_the_job_writes_its_run_directory_and_never_the_index(
    srat: Srat, slurm_cluster: SlurmCluster, srat_home: Path
) -> None:
    (entry,) = submit(srat, "--preset", "demo", "--set", "train.epochs=2")
    index = srat_home / "index.json"
    before = (index.read_bytes(), index.stat().st_mtime_ns)
    run = run_dir(srat_home, entry["run_id"])
    wait_for("the job to finish the run", lambda: run.exit_record() is not None)
    assert run.exit_record()["status"] == "finished"
    assert (index.read_bytes(), index.stat().st_mtime_ns) == before  # the job never wrote it
    assert json.loads(index.read_text())  # the launcher listed the run as queued
    # a reader brings the index up to date from the run directory
    assert listing(srat)[entry["run_id"]]["status"] == "finished"


def test_a_preset_glob_is_one_array_that_runs_one_at_a_time(
    srat: Srat, slurm_cluster: SlurmCluster, srat_home: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    text = 'extends = "demo"\n[train]\nepochs = 3\n'
    use_presets(tmp_path, monkeypatch, {"tiny-a": text, "tiny-b": text})
    entries = submit(srat, "--preset", "tiny-*", "--max-parallel", "1")
    assert len(entries) == 2
    runs = [run_dir(srat_home, e["run_id"]) for e in entries]
    arrays = {run.launch_record()["array_job_id"] for run in runs}
    assert len(arrays) == 1 and None not in arrays  # one sbatch, one array
    assert sorted(run.launch_record()["array_index"] for run in runs) == [0, 1]
    most = 0
    deadline = time.monotonic() + 90
    while not all(run.exit_record() for run in runs):
        assert time.monotonic() < deadline, "the array did not finish in 90 s"
        most = max(most, sum(run.state().get("status") == "running" for run in runs))
        time.sleep(0.05)
    assert most == 1
    assert [run.exit_record()["status"] for run in runs] == ["finished"] * 2
    spans = sorted((run.state()["started"], run.exit_record()["time"]) for run in runs)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end  # ISO times of one clock: the next started after the last ended


def test_a_sweep_is_one_array(srat: Srat, slurm_cluster: SlurmCluster, srat_home: Path) -> None:
    result = srat(
        "sweep", "lambda", "--preset", "demo", "--lambdas", "0,1", *TINY,
        "--set", "train.epochs=1", "--device", "cpu", "--backend", "slurm", "--json",
    )  # fmt: skip
    assert result.code == 0, result.err
    entries = json.loads(result.out)["runs"]
    runs = [run_dir(srat_home, e["run_id"]) for e in entries]
    assert len({run.launch_record()["array_job_id"] for run in runs}) == 1
    for run in runs:
        wait_for(f"{run.id} to finish", lambda run=run: run.exit_record() is not None)
        assert run.exit_record()["status"] == "finished"
        assert run.meta()["tags"] == [f"sweep-{json.loads(result.out)['sweep_id']}"]


def test_kill_cancels_pending_and_running_jobs_and_resume_resubmits(
    srat: Srat, slurm_cluster: SlurmCluster, srat_home: Path, tmp_path: Path
) -> None:
    blocker = block_node(slurm_cluster, tmp_path)
    (waiting,) = submit(srat, "--preset", "demo", "--set", "train.epochs=1")
    assert listing(srat)[waiting["run_id"]]["status"] == "queued"
    killed = srat("runs", "kill", waiting["run_id"])
    assert killed.code == 0, killed.err
    assert status(srat_home, waiting["run_id"]) == "killed"
    assert not slurm_cluster.squeue(waiting["slurm_job_id"])  # cancelled, not left pending
    slurm_cluster.scancel(blocker)
    slurm_cluster.wait_gone(blocker)

    (entry,) = submit(srat, "--preset", "demo", "--set", "train.epochs=60", "--mem", "500M")
    run = run_dir(srat_home, entry["run_id"])
    wait_for("the run to train an epoch", lambda: run.state().get("epoch"))
    pid = run.state()["pid"]
    start = time.monotonic()
    killed = srat("runs", "kill", run.id)
    took = time.monotonic() - start
    assert killed.code == 0, killed.err
    # the job recorded its own end on SIGTERM: no wait for Slurm's SIGKILL (KillWait=5)
    assert took < 4.5 and run.exit_record()["status"] == "killed"
    assert "stopped by SIGTERM" in run.exit_record()["error"]
    slurm_cluster.wait_gone(entry["slurm_job_id"])
    assert not pid_alive(pid)
    epochs_before = run.state()["epoch"]

    resumed = srat("runs", "resume", run.id)
    assert resumed.code == 0, resumed.err
    launch = run.launch_record()
    assert launch["resume"] is True and launch["job_id"] != entry["slurm_job_id"]
    assert launch["options"]["mem"] == "500M"  # resubmitted with the options it had
    wait_for("the resumed run to finish", lambda: status(srat_home, run.id) == "finished", 90)
    events = [r for r in run.metrics() if r.get("event") == "resume"]
    assert events and events[-1]["from_epoch"] >= 1 and epochs_before >= 1
    assert sorted(results(run)[0]) == list(range(1, 61))  # every epoch once


def test_a_job_whose_process_is_killed_reads_dead(
    srat: Srat, slurm_cluster: SlurmCluster, srat_home: Path
) -> None:
    entry, run = training_run(srat, srat_home)
    # what a node crash or the kernel's OOM killer does: SIGKILL, no chance to record anything
    os.kill(run.state()["pid"], signal.SIGKILL)
    start = time.monotonic()
    # within the heartbeat threshold (3 beats of 0.5 s): dead by its pid on this host, or lost
    # by its heartbeat from another
    wait_for(
        "the run to read dead or lost",
        lambda: listing(srat)[run.id]["status"] in ("dead", "lost"),
        timeout=10,
    )
    assert time.monotonic() - start < 3 * 0.5 + 2
    assert run.exit_record() is None  # nothing recorded an end: it died
    slurm_cluster.wait_gone(entry["slurm_job_id"])
    resumed = srat("runs", "resume", run.id, "--backend", "local", "--device", "cpu")
    assert resumed.code == 0, resumed.err
    # resumed here, from its checkpoint: training again, as a local run (that a resume runs on
    # to the end is test_kill_cancels_..., through Slurm, and test_detached's)
    died_at = max(results(run)[0])

    def training_locally() -> bool:
        state = run.state()
        return state.get("status") == "running" and int(state.get("epoch") or 0) > died_at

    wait_for("the local resume to train an epoch", training_locally, 60)
    assert run.state()["backend"] == "local" and run.state()["slurm_job_id"] is None
    assert [r["event"] for r in run.metrics()].count("resume") == 1
    killed = srat("runs", "kill", run.id)
    assert killed.code == 0, killed.err
    assert run.exit_record()["status"] == "killed"


def test_scancel_signal_kill_is_a_cancel_the_job_records(
    srat: Srat, slurm_cluster: SlurmCluster, srat_home: Path
) -> None:
    # Slurm turns `scancel --signal=KILL` of a job into a cancel: SIGTERM to its steps first,
    # SIGKILL KillWait later, so the job has the time to record the kill (resumable)
    entry, run = training_run(srat, srat_home)
    slurm_cluster.scancel(entry["slurm_job_id"], sig="KILL")
    wait_for("the kill to be recorded", lambda: run.exit_record() is not None, timeout=10)
    assert run.exit_record() == {**run.exit_record(), "status": "killed",
                                 "error": "stopped by SIGTERM"}  # fmt: skip
    assert listing(srat)[run.id]["status"] == "killed"


def test_a_job_past_its_time_limit_is_requeued_and_ends_as_an_uninterrupted_run(
    srat: Srat, slurm_cluster: SlurmCluster, srat_home: Path
) -> None:
    """Slurm's own time-limit warning (a 1-minute limit, `--signal-s 20`) requeues the job and
    the run ends as the same run without a limit does, every epoch recorded once."""
    epochs = 40  # held at its first epoch until the warning: a few dozen suffice anywhere
    config = ["--preset", "demo", "--set", f"train.epochs={epochs}", "--set",
              "train.checkpoint_every=500", "--cpus-per-run", "1"]  # fmt: skip
    (limited,) = submit(srat, *config, "--time", "1", "--signal-s", "20")
    (reference,) = submit(srat, *config, "--time", "10")
    job = limited["slurm_job_id"]
    run, other = run_dir(srat_home, limited["run_id"]), run_dir(srat_home, reference["run_id"])
    hold_until_warned(run)
    deadline = time.monotonic() + 240
    lifted = False
    while run.exit_record() is None or other.exit_record() is None:
        assert time.monotonic() < deadline, "the runs did not finish in 240 s"
        if not lifted and run.state().get("requeues"):
            # one requeue is the case under test: the requeued job may then run to the end
            # however slowly this machine trains (one more limit would requeue it again)
            slurm_cluster.run("scontrol", "update", f"JobId={job}", "TimeLimit=10")
            lifted = True
        if any(j.reason == "BeginTime" for j in slurm_cluster.squeue(job)):
            # a requeued job is held ~2 min (BeginTime): let it start at once
            slurm_cluster.run("scontrol", "update", f"JobId={job}", "StartTime=now")
        time.sleep(0.2)
    state = run.state()
    assert state["requeues"] >= 1 and state["restarts"] >= 1
    assert "requeued" in run.log_path.read_text()
    assert run.exit_record()["status"] == other.exit_record()["status"] == "finished"
    epochs_seen, final = results(run)
    reference_epochs, reference_final = results(other)
    assert sorted(epochs_seen) == list(range(1, epochs + 1))
    assert epochs_seen == reference_epochs  # every epoch's accuracies and losses, bit for bit
    assert final == reference_final


def hold_until_warned(run: RunDir, timeout: float = 120.0) -> None:
    """Stop the run's process (SIGSTOP) once it has trained an epoch, until Slurm's warning
    (USR2, within about a minute of the job's start) has reached it: so on any machine the
    warning lands mid-run. slurmstepd continues a stopped task to deliver a signal, so the
    warning is either still pending or already acted on (the run requeued)."""
    wait_for("the limited run's first epoch", lambda: run.state().get("epoch"), timeout=60)
    pid = int(run.state()["pid"])
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_for(
            "Slurm's warning",
            lambda: run.state().get("requeues") or _pending(pid, signal.SIGUSR2),
            timeout=timeout,
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def _pending(pid: int, sig: signal.Signals) -> bool:
    """Whether `sig` waits for the process (its thread-shared or main-thread pending set)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:  # ended: whatever was pending is no longer
        return False
    masks = [int(line.split()[1], 16) for line in status.splitlines()
             if line.startswith(("ShdPnd:", "SigPnd:"))]  # fmt: skip
    return any(mask & (1 << (sig - 1)) for mask in masks)


def test_bad_slurm_input_is_one_line_exit_2_and_creates_nothing(
    srat: Srat, slurm_cluster: SlurmCluster, srat_home: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    cases = {
        ("--partition", "gpu-nope"): "unknown Slurm partition 'gpu-nope' (this cluster has: debug)",
        ("--time", "12h"): "is not a Slurm time",
        ("--time", "1", "--signal-s", "45"): "leaves no training time",
    }
    for args, message in cases.items():
        result = srat("run", "--preset", "demo", "--backend", "slurm", *args)
        assert result.code == 2 and len(result.err_lines) == 1, (args, result.err)
        assert message in result.err
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    result = srat("run", "--preset", "demo", "--backend", "slurm")
    assert result.code == 2 and result.err_lines == [
        "error: no sbatch on PATH: submit from a Slurm login node, or use --backend local"
    ]
    assert not (srat_home / "runs").exists() or not any((srat_home / "runs").iterdir())
    assert not (srat_home / "index.json").exists()
    assert not (srat_home / "slurm").exists() or not any((srat_home / "slurm").iterdir())


def test_a_refusal_after_a_taken_sbatch_cancels_its_job_and_leaves_nothing(
    srat: Srat, slurm_cluster: SlurmCluster, srat_home: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    # a cpu run and a cuda run: two sbatch calls; the GPU-less cluster refuses the second
    use_presets(tmp_path, monkeypatch, {
        "mix-a-cpu": 'extends = "demo"\ndevice = "cpu"\n',
        "mix-b-cuda": 'extends = "demo"\ndevice = "cuda"\n',
    })  # fmt: skip
    blocker = block_node(slurm_cluster, tmp_path)  # the taken job stays pending
    tiny = [arg for item in TINY_RUN if not item.startswith("device=") for arg in ("--set", item)]
    result = srat("run", "--backend", "slurm", "--preset", "mix-*", *tiny)
    assert result.code == 2 and len(result.err_lines) == 1, result.err
    assert result.err.startswith("error: sbatch refused the job: "), result.err
    assert not any((srat_home / "runs").iterdir())
    assert listing(srat) == {}
    # the cpu group's job was taken, then cancelled (it would wait behind the blocker), and
    # none of submitit's files for either sbatch is left: only the lock of the submissions
    assert [job.job_id for job in slurm_cluster.squeue()] == [blocker]
    assert [path.name for path in (srat_home / "slurm").iterdir()] == [".submit.lock"]
    slurm_cluster.scancel(blocker)


def test_two_homes_on_one_filesystem_never_see_each_others_runs(
    srat: Srat, slurm_cluster: SlurmCluster, srat_home: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    (mine,) = submit(srat, "--preset", "demo", "--set", "train.epochs=1")
    other_home = tmp_path / "colleague"
    monkeypatch.setenv("SRAT_HOME", str(other_home))
    (theirs,) = submit(srat, "--preset", "demo", "--set", "train.epochs=1")
    assert set(listing(srat)) == {theirs["run_id"]}
    monkeypatch.setenv("SRAT_HOME", str(srat_home))
    assert set(listing(srat)) == {mine["run_id"]}
    # what they train is not the point: cancelled, so the next test has the node to itself
    jobs = [entry["slurm_job_id"] for entry in (mine, theirs)]
    slurm_cluster.scancel(*jobs)
    for job in jobs:
        slurm_cluster.wait_gone(job)


def submitted_stack(srat: Srat, home: Path, epochs: int) -> tuple[str, list[RunDir]]:
    """Seeds 0 and 1 of demo submitted as one stack (`--stack`): its job id and runs, once
    both have trained an epoch."""
    sets = ["--set", f"train.epochs={epochs}", "--set", "train.checkpoint_every=1000"]
    entries = submit(srat, "--preset", "demo", "--seeds", "0,1", "--stack", *sets)
    runs = [run_dir(home, entry["run_id"]) for entry in entries]
    (job,) = {entry["slurm_job_id"] for entry in entries}  # one job for the stack
    wait_for("the stack to train an epoch", lambda: all(r.state().get("epoch") for r in runs))
    return job, runs


def test_a_stack_is_one_job_that_requeues_on_slurms_warning_and_finishes(
    srat: Srat, slurm_cluster: SlurmCluster, srat_home: Path
) -> None:
    """Slurm's warning signal (USR2, as before a time limit) reaches a stacked job: every run
    checkpoints one position, the job requeues, and the requeued job resumes the stack to
    the end, each epoch recorded once in each run."""
    epochs = 60
    job, runs = submitted_stack(srat, srat_home, epochs)
    ids = [run.id for run in runs]
    assert [run.stack() for run in runs] == [ids, ids]
    slurm_cluster.scancel(job, sig="USR2")
    wait_for("the requeue", lambda: all(r.state().get("requeues") for r in runs), timeout=30)
    deadline = time.monotonic() + 120
    while not all(run.exit_record() for run in runs):
        assert time.monotonic() < deadline, "the stack did not finish in 120 s"
        # a requeued job is held ~2 min (BeginTime): let it start at once
        if any(queued.reason == "BeginTime" for queued in slurm_cluster.squeue(job)):
            slurm_cluster.run("scontrol", "update", f"JobId={job}", "StartTime=now")
        time.sleep(0.2)
    for run in runs:
        assert run.exit_record()["status"] == "finished", run.exit_record()
        epochs_seen, final = results(run)
        assert sorted(epochs_seen) == list(range(1, epochs + 1)) and final
        resumes = [r for r in run.metrics() if r["event"] == "resume"]
        # from the position checkpointed on the signal: mid-epoch or at an epoch's end
        assert len(resumes) == 1 and resumes[0]["from_epoch"] + resumes[0]["from_batch"] > 0
        log = run.log_path.read_text()
        assert "requeued (requeue 1)" in log and log.count("stacked with 1 other run(s)") >= 2
    assert runs[0].state()["restarts"] >= 1


def test_killing_one_run_of_a_slurm_stack_cancels_its_job_and_the_stack_resumes_together(
    srat: Srat, slurm_cluster: SlurmCluster, srat_home: Path
) -> None:
    job, runs = submitted_stack(srat, srat_home, 2000)
    killed = srat("runs", "kill", runs[0].id)
    assert killed.code == 0, killed.err
    assert f"and the rest of its stack: {runs[1].id}" in killed.out
    wait_for("both kills to be recorded", lambda: all(r.exit_record() for r in runs), 20)
    assert [r.exit_record()["status"] for r in runs] == ["killed", "killed"]
    slurm_cluster.wait_gone(job)
    # resumed together: one new job for the stack, each run from its own checkpoint
    resumed = srat("runs", "resume", runs[1].id, "--stack")
    assert resumed.code == 0, resumed.err
    assert "resubmitted as one stack (Slurm job " in resumed.out
    (again,) = {run.launch_record()["job_id"] for run in runs}
    assert again != job and all(run.launch_record()["resume"] for run in runs)
    wait_for(
        "the stack to resume", lambda: all("resumed on" in r.log_path.read_text() for r in runs)
    )
    assert srat("runs", "kill", runs[0].id).code == 0
    wait_for("the second kill", lambda: all(r.exit_record() for r in runs), 20)
    slurm_cluster.wait_gone(again)
