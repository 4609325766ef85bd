"""`srat bench --study` and `srat_engine.bench.study`: the arithmetic against hand-computed
values, the MPS daemon's start and stop (a stand-in binary), the study's home, bad input, and
one real study of tiny runs on CPU slots. No test asserts a timing: only that the numbers
exist and add up."""

from __future__ import annotations

import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
from cli_harness import Srat, make_invoker
from fake_runs import TINY_RUN

from srat_engine.bench.study import (
    StudyFailed,
    aggregate_images_per_s,
    bf16_peak,
    column_seconds,
    cuda_mps,
    model_tflops,
    parse_per_device,
    peak_share,
    projected_run_seconds,
    run_study,
    study_home,
    wall_images_per_s,
)
from srat_engine.config.workload import pgd_training_forwards
from srat_engine.errors import SratError
from srat_engine.runs.home import Home
from srat_engine.runs.liveness import reconcile
from srat_engine.runs.rundir import RunDir

# the tiny digits runs of tests/fake_runs.py, on the digits data (not the study's synthetic
# CIFAR stand-in), their device left to --device
TINY = (*(s for s in TINY_RUN if not s.startswith("device=")), "data.dataset=digits")


@pytest.fixture
def srat(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Srat:
    return make_invoker(capsys, monkeypatch)


@pytest.fixture
def temp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tempfile's folder -> a fresh one, so a test sees every temporary home it leaves."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


# -- the arithmetic --------------------------------------------------------------------------
def test_aggregate_and_wall_images_per_s() -> None:
    # 12,406 / 2.0 + 12,406 / 2.5 = 6,203 + 4,962.4
    assert aggregate_images_per_s([12406, 12406], [2.0, 2.5]) == pytest.approx(11165.4)
    assert aggregate_images_per_s([100], [0.5]) == pytest.approx(200.0)
    with pytest.raises(ValueError):
        aggregate_images_per_s([1, 2], [1.0])
    # 2 runs x 3 epochs x 100 examples over 7.0 - 1.0 s
    assert wall_images_per_s(600, 1.0, 7.0) == pytest.approx(100.0)
    with pytest.raises(ValueError):
        wall_images_per_s(600, 7.0, 7.0)


def test_model_tflops_and_share() -> None:
    # 1,000 examples/s x 23 forwards x 1 GFLOP = 23 TFLOP/s
    assert model_tflops(1000.0, 1e9, 10) == pytest.approx(23.0)
    # README's figure: 6,329 img/s x 23 x 1.1108 GFLOP = 161.70 TFLOP/s
    assert model_tflops(6329.0, 1.1108e9, 10) == pytest.approx(161.696, abs=1e-3)
    assert peak_share(494.5, 989.0) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        peak_share(1.0, 0.0)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("NVIDIA H200", ("H200 SXM", 989.0)),
        ("NVIDIA H100 80GB HBM3", ("H100 SXM", 989.0)),
        ("NVIDIA H100 PCIe", ("H100 PCIe", 756.0)),
        ("NVIDIA A100-SXM4-80GB", ("A100", 312.0)),
        ("NVIDIA A100 80GB PCIe", ("A100", 312.0)),
        ("NVIDIA H200 NVL", None),  # not an SXM part: no guess
        ("NVIDIA H100 NVL", None),
        ("NVIDIA GeForce RTX 4090", None),
    ],
)
def test_bf16_peak_table(name: str, expected: tuple[str, float] | None) -> None:
    assert bf16_peak(name) == expected


def test_projected_run_and_column() -> None:
    # 200 x 1.9 + 20 x 0.3 + 20 x 0.55 + 4.0 = 380 + 6 + 11 + 4
    assert projected_run_seconds(200, 1.9, (20, 20), 0.3, 0.55, 4.0) == pytest.approx(401.0)
    assert projected_run_seconds(200, 1.9, (0, 200), 0.3, 0.55, 0.0) == pytest.approx(490.0)
    assert column_seconds(11, 4, 360.0) == pytest.approx(1080.0)  # ceil(11/4) = 3 waves
    assert column_seconds(11, 1, 300.0) == pytest.approx(3300.0)
    assert column_seconds(11, 16, 10.0) == pytest.approx(10.0)


def test_parse_per_device() -> None:
    assert parse_per_device("1,2,4") == [1, 2, 4]
    assert parse_per_device(" 4 2,2 ") == [4, 2]
    for bad in ("0", "1,0", "-1", "a", "", "1.5", "²"):
        with pytest.raises(SratError, match="--study"):
            parse_per_device(bad)


@pytest.mark.parametrize("timeout", [0.0, -1.0, math.nan, math.inf])
def test_a_timeout_that_bounds_nothing_is_refused_before_any_run(
    tmp_path: Path, timeout: float
) -> None:
    home = Home(tmp_path / "home")
    # NaN compared false with "<= 0" and was taken: the study then ran unbounded
    with pytest.raises(SratError, match="--timeout must be a positive number of seconds"):
        run_study(home, "digits-ce", [1], epochs=2, device="cpu", timeout_s=timeout)
    assert not home.runs.exists()


# -- homes and MPS -----------------------------------------------------------------------------
def test_study_home_is_temporary_unless_named(temp_root: Path, tmp_path: Path) -> None:
    user = Home(tmp_path / "user", data_override=tmp_path / "datasets")
    with study_home(user) as home:
        assert home.root.parent == temp_root and home.root.is_dir()
        assert home.preset_dirs[0] == user.presets  # the user's presets are found
        assert home.data_dir == tmp_path / "datasets"
    assert not home.root.exists()
    with pytest.raises(SratError), study_home(user) as home:
        raise SratError("bad input")
    assert not home.root.exists()
    with pytest.raises(StudyFailed, match="kept"), study_home(user) as home:
        raise StudyFailed("run x failed")
    assert home.root.is_dir()  # kept, for its logs
    with study_home(user, tmp_path / "mine") as home:
        assert home.root == tmp_path / "mine"
    assert not user.root.exists()  # never touched


def _fake_mps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start_code: int = 0) -> Path:
    """A stand-in nvidia-cuda-mps-control on PATH that logs its calls (and `quit`)."""
    bin_dir, log = tmp_path / "bin", tmp_path / "mps-calls.txt"
    bin_dir.mkdir()
    script = bin_dir / "nvidia-cuda-mps-control"
    script.write_text(
        "#!/bin/sh\n"
        'echo "args:$* pipe:$CUDA_MPS_PIPE_DIRECTORY log:$CUDA_MPS_LOG_DIRECTORY" >> "$MPS_CALLS"\n'
        f'if [ "$1" = "-d" ]; then exit {start_code}; fi\n'
        'cat >> "$MPS_CALLS"\n'
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("MPS_CALLS", str(log))
    return log


def test_mps_daemon_is_stopped_even_on_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, temp_root: Path
) -> None:
    calls = _fake_mps(tmp_path, monkeypatch)
    monkeypatch.delenv("CUDA_MPS_PIPE_DIRECTORY", raising=False)
    with pytest.raises(RuntimeError), cuda_mps(tmp_path / "mps-log") as values:
        pipe = Path(values["CUDA_MPS_PIPE_DIRECTORY"])
        assert os.environ["CUDA_MPS_PIPE_DIRECTORY"] == str(pipe) and pipe.is_dir()
        assert os.environ["CUDA_MPS_LOG_DIRECTORY"] == str(tmp_path / "mps-log")
        raise RuntimeError("the study failed")
    lines = calls.read_text().splitlines()
    assert lines == [
        f"args:-d pipe:{pipe} log:{tmp_path / 'mps-log'}",
        f"args: pipe:{pipe} log:{tmp_path / 'mps-log'}",
        "quit",
    ]
    assert "CUDA_MPS_PIPE_DIRECTORY" not in os.environ and not pipe.exists()
    assert list(temp_root.iterdir()) == []


def test_mps_start_failure_and_missing_binary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_mps(tmp_path, monkeypatch, start_code=3)
    with pytest.raises(SratError, match="exited 3"), cuda_mps(tmp_path / "log"):
        pytest.fail("the body must not run")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(SratError, match="not on PATH"), cuda_mps(tmp_path / "log"):
        pytest.fail("the body must not run")


# -- bad input -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--study", "0"], "at least 1"),
        (["--study", "1,x"], "run counts like 1,2,4"),
        (["--study", "1", "--device", "tpu"], "unknown device"),
        (["--study", "1", "--device", "cuda:7"], "cuda:7"),
        (["--study", "1", "--device", "cpu", "--preset", "no-such-preset"], "no-such-preset"),
        (["--study", "1", "--device", "cpu", "--epochs", "1"], "at least 2"),
        (["--study", "1", "--device", "cpu", "--set", "train.epochs=5"], "--epochs"),
        (["--study", "1", "--device", "cpu", "--mps"], "--mps needs a CUDA device"),
        (["--study", "1", "--device", "cpu", "--peak-tflops", "0"], "--peak-tflops"),
        (["--study", "1", "--model", "small"], "--model"),
        (["--preset", "digits-ce"], "only with --study"),
        (["--mps", "--epochs", "2"], "--epochs, --mps: only with --study"),
        (["--stack"], "--stack: only with --study"),
        (["--study", "1,2", "--stack", "--mps"], "a --stack is one process"),
        (["--study", "2", "--stack", "--set", "method=TRADES"], "TRADES"),
    ],
)
def test_bad_input_is_one_line(
    srat: Srat, srat_home: Path, temp_root: Path, args: list[str], says: str
) -> None:
    # a short --timeout: should a bad input get through, its runs fail fast instead of training
    result = srat("bench", *args, *(("--timeout", "1") if "--study" in args else ()))
    assert result.code == 2, result.err
    assert len(result.err_lines) == 1 and says in result.err, result.err
    assert list(temp_root.iterdir()) == [] and list(srat_home.iterdir()) == []


# -- real runs -----------------------------------------------------------------------------------
def test_a_run_that_does_not_end_in_time_is_killed(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    with pytest.raises(StudyFailed, match="did not end within") as failure:
        run_study(home, "digits-ce", [1], epochs=2, device="cpu", overrides=TINY, timeout_s=0.2)
    (run_id,) = os.listdir(home.runs)
    assert run_id in str(failure.value) and "log.txt" in str(failure.value)
    assert reconcile(RunDir(home.runs / run_id)) == "killed"


def test_cpu_study_end_to_end(srat: Srat, srat_home: Path, temp_root: Path) -> None:
    sets = [part for assignment in TINY for part in ("--set", assignment)]
    result = srat(
        "bench", "--study", "1,2", "--preset", "digits-ce", "--epochs", "2", "--device", "cpu",
        *sets, "--json",
    )  # fmt: skip
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["device"] == "cpu" and report["peak_tflops"] is None
    # --set names the dataset: the synthetic default is not applied, nor listed
    assert "data.dataset=synthetic" not in report["overrides"] and report["home_kept"] is False
    assert "data.dataset=digits" in report["overrides"]
    assert report["fwd_equivalents"] == pgd_training_forwards(report["attack_steps"])
    assert report["project_epochs"] == 125  # the digits preset's own length
    flops = report["forward_gflops"] * 1e9
    packs = report["packs"]
    assert [pack["per_device"] for pack in packs] == [1, 2]
    for pack in packs:
        k, runs = pack["per_device"], pack["runs"]
        assert [run["seed"] for run in runs] == list(range(k))
        for run in runs:
            assert len(run["train_seconds"]) == len(run["eval_seconds"]) == 2
            assert run["train_s"] == pytest.approx(statistics.median(run["train_seconds"][1:]))
            assert run["images_per_s"] == pytest.approx(run["examples"] / run["train_s"])
            assert run["rob_overall"] is not None and run["final_s"] is not None
            assert run["end_s"] > run["start_s"] >= 0
        assert pack["images_per_s"] == pytest.approx(sum(r["images_per_s"] for r in runs))
        window = max(r["end_s"] for r in runs) - min(r["start_s"] for r in runs)
        assert pack["wall_s"] == pytest.approx(window)
        trained = sum(r["examples"] * 2 for r in runs)
        assert pack["images_per_s_wall"] == pytest.approx(trained / window)
        assert pack["tflops"] == pytest.approx(
            model_tflops(pack["images_per_s"], flops, report["attack_steps"])
        )
        assert pack["peak_share"] is None
        assert pack["projected_run_s"] == max(r["projected_run_s"] for r in runs)
        assert pack["waves"] == math.ceil(11 / k)
        assert pack["projected_column_s"] == pytest.approx(pack["waves"] * pack["projected_run_s"])
    assert packs[0]["speedup"] == 1.0
    assert packs[1]["speedup"] == pytest.approx(packs[1]["images_per_s"] / packs[0]["images_per_s"])
    # the runs lived in a temporary home, now gone; the user's home is untouched
    assert not Path(report["home"]).exists() and Path(report["home"]).parent == temp_root
    assert list(srat_home.iterdir()) == []


def test_a_stacked_study_trains_each_k_in_one_worker(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    result = run_study(home, "digits-ce", [2], epochs=2, device="cpu", overrides=TINY, stacked=True)
    (pack,) = result.packs
    assert result.stacked and pack.per_device == 2 and len(pack.runs) == 2
    runs = [RunDir(home.runs / timing.run_id) for timing in pack.runs]
    pids = {run.launch_record()["pid"] for run in runs}
    assert len(pids) == 1 and runs[0].launch_record()["stack"] == [r.id for r in runs]
    # one stack, one epoch wall: each run's epochs took the stack's time
    assert pack.runs[0].train_seconds == pack.runs[1].train_seconds
    assert pack.images_per_s == pytest.approx(2 * pack.runs[0].images_per_s)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_a_stop_signal_stops_the_study_s_runs_and_removes_its_home(
    tmp_path: Path, stop: signal.Signals
) -> None:
    """`kill PID` (or a closed SSH session) ended the study without its cleanup: its worker
    went on training, the temporary home stayed. Ctrl-C cleaned up but exited 1 with Typer's
    "Aborted!". Each now stops the runs, removes the home and exits 128 + its number."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp), "SRAT_HOME": str(tmp_path / "home")}
    sets = [part for assignment in TINY for part in ("--set", assignment)]
    study = subprocess.Popen(
        [sys.executable, "-m", "srat_tui.cli", "bench", "--study", "1", "--preset", "digits-ce",
         "--epochs", "50", "--device", "cpu", *sets],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        training: list[RunDir] = []
        while not training:  # a run's worker has started training
            assert time.monotonic() < deadline and study.poll() is None, study.communicate()
            runs = [RunDir(p) for p in temp.glob("srat-study-*/runs/*") if p.is_dir()]
            training = [r for r in runs if r.state().get("status") == "running"]
            time.sleep(0.1)
        worker = training[0].state()["pid"]
        study.send_signal(stop)
        _, err = study.communicate(timeout=60)
    finally:
        if study.poll() is None:
            study.kill()
    assert study.returncode == 128 + stop, err
    assert err.splitlines()[-1] == f"stopped by {stop.name}: the study's runs were stopped"
    assert not psutil.pid_exists(worker) or psutil.Process(worker).status() == "zombie"
    assert list(temp.glob("srat-study-*")) == []
