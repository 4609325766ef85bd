"""How many CUDA GPUs a run sees here: NVML and CUDA_VISIBLE_DEVICES, torch only where they
cannot tell."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pynvml
import pytest
import torch
from fresh_process import python_json

from srat_engine import hardware
from srat_engine.hardware import visible_gpus


@pytest.fixture(autouse=True)
def nvml_asked_afresh() -> Iterator[None]:
    """`nvidia_gpu_count` asks NVML once per process: each test fakes its own NVML."""
    hardware.nvidia_gpu_count.cache_clear()
    yield
    hardware.nvidia_gpu_count.cache_clear()


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, [0, 1, 2, 3]),  # unset: every GPU
        ("1,3", [1, 3]),
        (" 3, 0 ", [3, 0]),  # CUDA's order is the variable's
        ("", []),  # set and empty: none
        ("0,-1,2", [0]),  # a negative index ends the list
        ("2,7,1", [2]),  # so does one that is not a GPU here
        ("-1", []),
        ("0,,1", [0]),
        ("GPU-5d1c8b", None),  # a UUID: only CUDA can match it
        ("MIG-1a2b", None),
        ("0,0", None),  # twice: CUDA refuses it, let torch say so
    ],
)
def test_visible_gpus_read_cuda_visible_devices_as_cuda_does(
    value: str | None, shown: list[int] | None
) -> None:
    environ = {} if value is None else {"CUDA_VISIBLE_DEVICES": value}
    assert visible_gpus(4, environ) == shown


def test_no_nvidia_driver_means_no_cuda_device_and_no_torch_import() -> None:
    script = (
        "import json, sys, pynvml\n"
        "def no_driver():\n"
        "    raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)\n"
        "pynvml.nvmlInit = no_driver\n"
        "from srat_engine.hardware import auto_device, cuda_device_count\n"
        "print(json.dumps([cuda_device_count(), auto_device(), 'torch' in sys.modules]))\n"
    )
    assert python_json(script) == [0, "cpu", False]


def test_gpus_are_counted_by_nvml_and_cuda_visible_devices_without_torch() -> None:
    script = (
        "import json, os, sys, pynvml\n"
        "pynvml.nvmlInit = pynvml.nvmlShutdown = lambda: None\n"
        "pynvml.nvmlDeviceGetCount = lambda: 4\n"
        "from srat_engine import hardware\n"
        "hardware.version_file_constant = lambda package, name: (True, '13.0')\n"
        "from srat_engine.hardware import auto_device, cuda_device_count\n"
        "counts = [cuda_device_count(), auto_device()]\n"
        "os.environ['CUDA_VISIBLE_DEVICES'] = '2,3'\n"
        "counts.append(cuda_device_count())\n"
        "os.environ['CUDA_VISIBLE_DEVICES'] = ''\n"
        "counts += [cuda_device_count(), auto_device()]\n"
        "print(json.dumps([counts, 'torch' in sys.modules]))\n"
    )
    assert python_json(script) == [[4, "cuda", 2, 0, "cpu"], False]


def no_driver() -> None:
    raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)


def fake_nvml(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    """NVML counting `count` GPUs, and a torch built with CUDA, whatever this machine has."""
    monkeypatch.setattr(hardware, "version_file_constant", lambda package, name: (True, "13.0"))
    monkeypatch.setattr(pynvml, "nvmlInit", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlShutdown", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetCount", lambda: count)


def test_where_only_cuda_can_tell_torch_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nvml(monkeypatch, 4)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-5d1c8b,GPU-77aa01")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert hardware.cuda_device_count() == 2
    assert hardware.auto_device() == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # e.g. a CPU-only torch
    assert hardware.cuda_device_count() == 0
    assert hardware.auto_device() == "cpu"


def test_nvml_without_a_device_or_without_bindings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    fake_nvml(monkeypatch, 0)
    assert hardware.cuda_device_count() == 0  # NVML's "no device" is the answer
    monkeypatch.setitem(sys.modules, "pynvml", None)  # the bindings cannot be imported
    hardware.nvidia_gpu_count.cache_clear()
    assert hardware.nvidia_gpu_count() is None
    assert hardware.cuda_device_count() == 1  # NVML cannot tell: torch decides


def test_a_cpu_only_torch_sees_no_gpu_whatever_nvml_counts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_nvml(monkeypatch, 4)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert hardware.cuda_device_count() == 4  # a CUDA build
    monkeypatch.setattr(hardware, "version_file_constant", lambda package, name: (True, None))
    assert hardware.cuda_device_count() == 0  # version.py: cuda = None
    assert hardware.auto_device() == "cpu"


def test_nvml_is_asked_once_per_process_and_always_shut_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(hardware, "version_file_constant", lambda package, name: (True, "13.0"))
    monkeypatch.setattr(pynvml, "nvmlInit", lambda: calls.append("init"))
    monkeypatch.setattr(pynvml, "nvmlShutdown", lambda: calls.append("shutdown"))
    monkeypatch.setattr(pynvml, "nvmlDeviceGetCount", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert [hardware.cuda_device_count() for _ in range(3)] == [2, 2, 2]
    assert calls == ["init", "shutdown"]  # the form's every edit does not start NVML again
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert hardware.cuda_device_count() == 1  # the variable is read each time


def test_the_gpu_panel_reads_its_gpus_through_the_same_nvml_session(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from types import SimpleNamespace

    from srat_tui.tui.widgets.gpu_panel import GpuInfo, probe_gpus

    calls: list[str] = []
    monkeypatch.setattr(pynvml, "nvmlInit", lambda: calls.append("init"))
    monkeypatch.setattr(pynvml, "nvmlShutdown", lambda: calls.append("shutdown"))
    monkeypatch.setattr(pynvml, "nvmlDeviceGetCount", lambda: 1)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByIndex", lambda index: index)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetName", lambda handle: b"NVIDIA H200")
    monkeypatch.setattr(
        pynvml, "nvmlDeviceGetUtilizationRates", lambda handle: SimpleNamespace(gpu=42)
    )
    monkeypatch.setattr(
        pynvml, "nvmlDeviceGetMemoryInfo", lambda handle: SimpleNamespace(used=1, total=8)
    )
    assert probe_gpus() == [GpuInfo(0, "NVIDIA H200", 42, 1, 8)]
    assert calls == ["init", "shutdown"]
    monkeypatch.setattr(pynvml, "nvmlInit", no_driver)
    assert probe_gpus() is None  # no driver: no panel
