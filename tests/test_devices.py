"""The one device-string parser (srat_engine.devices), against a table of inputs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from srat_engine.devices import Device, parse_device, parse_gpu_ids
from srat_engine.errors import SratError


@pytest.mark.parametrize(
    ("text", "expected", "shown"),
    [
        ("auto", Device("auto"), "auto"),
        ("cpu", Device("cpu"), "cpu"),
        ("mps", Device("mps"), "mps"),
        ("cuda", Device("cuda"), "cuda"),  # the current CUDA device, not cuda:0 spelled out
        ("cuda:0", Device("cuda", 0), "cuda:0"),
        ("cuda:3", Device("cuda", 3), "cuda:3"),
        ("cuda:01", Device("cuda", 1), "cuda:1"),
        (" CUDA:1 ", Device("cuda", 1), "cuda:1"),
        ("CPU", Device("cpu"), "cpu"),
    ],
)
def test_good_devices(text: str, expected: Device, shown: str) -> None:
    assert parse_device(text) == expected
    assert str(parse_device(text)) == shown


@pytest.mark.parametrize(
    "text", ["", "gpu", "tpu", "cuda:", "cuda:x", "cuda:-1", "cuda:1.0", "cuda:³", "cpu:0", "0"]
)
def test_bad_devices_are_one_line_quoting_the_input(text: str) -> None:
    with pytest.raises(SratError) as caught:
        parse_device(text)
    assert str(caught.value) == f"unknown device {text!r}: use auto, cpu, cuda or cuda:N"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("all", None),
        (" ALL ", None),
        ("0", [0]),
        ("1,0,1", [1, 0]),
        ("0, 2,", [0, 2]),
        ("3,1,2", [3, 1, 2]),
    ],
)
def test_gpu_ids(text: str, expected: list[int] | None) -> None:
    assert parse_gpu_ids(text) == expected


@pytest.mark.parametrize("text", ["", ",", "-1", "0,x", "cuda:0", "1.5", "²"])
def test_bad_gpu_ids(text: str) -> None:
    with pytest.raises(SratError) as caught:
        parse_gpu_ids(text)
    assert str(caught.value) == f"--gpus expects 'all' or ids like 0,1,3 (got {text!r})"


def test_the_parser_and_the_config_schema_import_no_torch() -> None:
    code = (
        "import sys\n"
        "import srat_engine.devices, srat_engine.config.schema\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_device_option_reports_the_parsers_line() -> None:
    from srat_engine.config.schema import validate_config
    from srat_engine.jobs.supervisor import resolve_devices
    from srat_engine.training.device import pick_device
    from srat_tui.tui.screens.new_run import parse_devices

    line = "unknown device 'tpu': use auto, cpu, cuda or cuda:N"
    for call in (
        lambda: validate_config({"device": "tpu"}),
        lambda: resolve_devices(device="tpu"),
        lambda: pick_device("tpu"),
        lambda: parse_devices("tpu"),
    ):
        with pytest.raises(SratError) as caught:
            call()
        assert line in str(caught.value)


def test_an_absent_mps_is_one_line_before_any_checkpoint_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without the check torch failed later, in `torch.load(map_location="mps")`, which the
    checkpoint reader took for a corrupt file."""
    import torch

    from srat_engine.training.device import pick_device

    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(SratError, match=r"MPS .* is not available here"):
        pick_device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert pick_device("mps").type == "mps"


def test_a_dry_run_refuses_what_the_launch_would(
    srat_home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan is printed, then the launch's own refusal, exit 2, as the launch exits."""
    from cli_harness import make_invoker

    from srat_engine.runs.index import run_dirs

    srat = make_invoker(capsys, monkeypatch)
    monkeypatch.setattr("srat_engine.jobs.supervisor.cuda_device_count", lambda: 0)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    for args, line in (
        (("--device", "cuda"), "CUDA is not available here"),
        (("--detach", "--slots", "0"), "--slots must be at least 1"),
        (("--detach", "--gpus", "0"), "no CUDA GPU is visible here"),
    ):
        dry = srat("run", "--preset", "demo", "--dry-run", *args)
        assert dry.code == 2 and line in dry.err, (args, dry.err)
        assert "method   SRAT-LDAM" in dry.out  # the plan came first
        launch = srat("run", "--preset", "demo", *args)
        assert launch.code == 2 and line in launch.err, (args, launch.err)
    assert srat("run", "--preset", "demo", "--dry-run").code == 0
    assert run_dirs(srat_home / "runs") == []
