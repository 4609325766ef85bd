"""`srat bench` and `srat_engine.bench.benchmark`: the report's arithmetic and the CLI contract.

No test asserts a timing: only that the numbers exist, are positive and add up. The FLOP
counters the report uses are tested by hand in tests/test_models.py (`models.flops`).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from cli_harness import Srat, make_invoker

from srat_engine.bench.benchmark import run_benchmark


@pytest.fixture
def srat(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Srat:
    return make_invoker(capsys, monkeypatch)


def test_json_report_is_consistent(srat: Srat) -> None:
    result = srat(
        "bench", "--model", "small", "--batch", "8", "--repeats", "2", "--iters", "1",
        "--device", "cpu", "--json",
    )  # fmt: skip
    assert result.code == 0, result.err
    report = json.loads(result.out)
    engine, reference = report["engine"], report["reference"]
    assert report["arch"] == "small_cnn" and report["batch"] == 8 and report["repeats"] == 2
    for path in (engine, reference):
        assert path["images_per_s"] > 0 and path["tflops"] > 0
        assert len(path["seconds"]) == 2
        assert path["peak_memory_mb"] >= 0
    assert report["ratio"] == pytest.approx(engine["images_per_s"] / reference["images_per_s"])
    assert report["fwd_equivalents"] == 23
    # FLOPs actually executed: input-only attack gradients vs. full backward in the reference
    assert engine["executed_fwd_equivalents"] == pytest.approx(23, abs=0.5)
    assert reference["executed_fwd_equivalents"] == pytest.approx(33, abs=0.5)
    rate = engine["images_per_s"] * 23 * report["forward_gflops"] * 1e9 / 1e12
    assert engine["tflops"] == pytest.approx(rate)
    assert report["engine_precision"] == "fp32"  # auto on a CPU
    assert report["engine_fold_bn"] == 3


def test_text_report_names_both_paths(srat: Srat) -> None:
    result = srat(
        "bench", "--model", "small", "--batch", "4", "--repeats", "1", "--iters", "1",
        "--warmup", "0", "--device", "cpu", "--set", "train.fold_bn=false",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert "engine / reference = " in result.out
    assert "no BN folding" in result.out
    for name in ("engine", "reference"):
        assert any(line.startswith(name) for line in result.out.splitlines())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--model", "vgg"), "unknown bench model 'vgg'"),
        (("--batch", "0"), "--batch must be at least 1"),
        (("--device", "cuda:7"), "CUDA"),
        (("--device", "abacus"), "unknown device 'abacus'"),
        (("--set", "train.batch_size=5"), "fixed by the benchmark"),
        (("--set", "train.precision=fp16"), "train.precision"),
        (("--workers", "-1"), "--workers must be >= 0"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(srat: Srat, args: tuple[str, ...], message: str) -> None:
    if args == ("--device", "cuda:7") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    result = srat("bench", "--model", "small", "--batch", "4", *args)
    assert result.code == 2
    assert len(result.err_lines) == 1 and message in result.err_lines[0]


def test_engine_settings_reach_the_engine_step() -> None:
    result = run_benchmark(
        model="small",
        batch=4,
        device="cpu",
        repeats=1,
        iters=1,
        warmup=0,
        overrides=("train.channels_last=off", "train.precision=bf16"),
        count_executed=False,
    )
    assert result.engine_precision == "bf16" and not result.engine_channels_last
    assert result.engine.executed_fwd_equivalents is None
    assert math.isfinite(result.ratio) and result.ratio > 0
