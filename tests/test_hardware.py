"""How many CUDA GPUs this machine has: NVML's "none" answers without torch, else torch counts."""

from __future__ import annotations

import sys

import pynvml
import pytest
import torch
from fresh_process import python_json

from srat_engine import hardware


def no_driver() -> None:
    raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)


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


def test_where_nvml_sees_a_gpu_torch_counts_the_visible_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # NVML counts every GPU; torch only the CUDA_VISIBLE_DEVICES ones: torch's count is kept
    monkeypatch.setattr(pynvml, "nvmlInit", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlShutdown", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetCount", lambda: 4)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert hardware.cuda_device_count() == 2
    assert hardware.auto_device() == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # e.g. a CPU-only torch
    assert hardware.cuda_device_count() == 0
    assert hardware.auto_device() == "cpu"


def test_nvml_with_no_device_or_no_bindings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pynvml, "nvmlInit", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlShutdown", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetCount", lambda: 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert hardware.cuda_device_count() == 0  # NVML's no device is the answer
    monkeypatch.setitem(sys.modules, "pynvml", None)  # the bindings cannot be imported
    assert hardware.cuda_device_count() == 1  # NVML cannot tell: torch decides
