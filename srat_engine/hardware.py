"""What this machine has to train on: the CUDA devices a run sees, and what `auto` means here.

NVML is asked, not torch (~1.5 s, ~300 MB to import): it counts the NVIDIA GPUs, and
CUDA_VISIBLE_DEVICES says which of them CUDA shows and in what order (`visible_gpus`), so
checking a launch, and the new-run form checking each edit, load no torch. Only where NVML
cannot answer, or the variable names GPUs by UUID or MIG instance, torch counts, as training
will.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from types import ModuleType

from srat_engine.versions import version_file_constant


@contextmanager
def nvml_session() -> Iterator[ModuleType | None]:
    """pynvml, initialised for the block and shut down after it; None where NVML cannot start
    (no driver library, or the driver is not loaded). ImportError where the bindings
    (nvidia-ml-py) are not installed. The one way srat opens NVML: here and the TUI's panel."""
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        yield None
        return
    try:
        yield pynvml
    finally:
        with suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()


@functools.cache
def nvidia_gpu_count() -> int | None:
    """The NVIDIA GPUs NVML counts on this machine, all of them, whatever CUDA_VISIBLE_DEVICES
    says; 0 where the driver is absent or not loaded; None where NVML cannot tell (no
    bindings, or an error after start-up). Asked once per process: GPUs do not come and go
    under a running srat, and NVML's start can be slow where persistence mode is off, while
    the new-run form asks at every edit."""
    try:
        import pynvml
    except ImportError:
        return None
    with nvml_session() as nvml:
        if nvml is None:
            return 0  # no driver: no CUDA device either
        try:
            return int(nvml.nvmlDeviceGetCount())
        except pynvml.NVMLError:
            return None


def visible_gpus(count: int, environ: Mapping[str, str] | None = None) -> list[int] | None:
    """The NVML indices of the GPUs CUDA shows a process, in CUDA's order (cuda:0 first), for
    a machine of `count` GPUs and CUDA_VISIBLE_DEVICES in `environ` (default os.environ).

    Unset: all of them. Else its comma-separated indices, read as CUDA reads them: up to the
    first one that is negative or not a GPU here (``0,-1,2`` shows only GPU 0), and an empty
    value shows none. None where only CUDA can tell: GPUs named by UUID or MIG instance, or
    an index given twice. The order is NVML's, which is CUDA's with CUDA_DEVICE_ORDER=PCI_BUS_ID
    and, on machines of one GPU model, in practice.
    """
    value = (os.environ if environ is None else environ).get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return list(range(count))
    shown: list[int] = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            break
        number = item[1:] if item.startswith("-") else item
        if not (number.isascii() and number.isdigit()):
            return None  # a UUID or MIG name: CUDA matches it against the devices
        index = int(item)
        if index < 0 or index >= count:
            break
        if index in shown:
            return None
        shown.append(index)
    return shown


def cuda_device_count() -> int:
    """The CUDA devices a run launched from this process sees (CUDA_VISIBLE_DEVICES applied),
    from NVML where it can tell (`visible_gpus`), else from torch. 0 with a CPU-only torch
    build (its version.py says ``cuda = None``), whatever GPUs the machine has."""
    count = nvidia_gpu_count()
    if count == 0:
        return 0
    found, cuda_build = version_file_constant("torch", "cuda")
    if found and cuda_build is None:
        return 0  # torch cannot use them
    if count is not None:
        visible = visible_gpus(count)
        if visible is not None:
            return len(visible)
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def auto_device() -> str:
    """The device `auto` should train on here, said without torch: "cuda" where a run sees a
    CUDA GPU (`cuda_device_count`), else "cpu". For estimates and checks before a run; the
    run itself asks torch (`training.device.pick_device`)."""
    return "cuda" if cuda_device_count() > 0 else "cpu"
