"""What this machine has to train on: the CUDA devices torch sees, and what `auto` means here.

NVML is asked first: where it answers that there is no NVIDIA GPU (no driver, no device), the
answer is known without importing torch (~1.5 s, ~300 MB), so a CPU machine checks a launch,
and the new-run form each edit, without loading it. Elsewhere torch counts, as training will
(CUDA_VISIBLE_DEVICES applied).
"""

from __future__ import annotations

from contextlib import suppress


def _nvidia_gpu_present() -> bool:
    """False only where NVML answers that this machine has no NVIDIA GPU; True where it has
    one or NVML cannot tell (no bindings): then torch decides."""
    try:
        import pynvml
    except ImportError:
        return True
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False  # no driver library, or the driver is not loaded: no CUDA device either
    try:
        return bool(pynvml.nvmlDeviceGetCount())
    except pynvml.NVMLError:
        return True
    finally:
        with suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()


def cuda_device_count() -> int:
    """The CUDA devices torch sees in this process (CUDA_VISIBLE_DEVICES applied); 0 without
    importing torch where NVML says there is no NVIDIA GPU."""
    if not _nvidia_gpu_present():
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def auto_device() -> str:
    """The device `auto` trains on here: "cuda" where torch sees a CUDA GPU, else "cpu"."""
    return "cuda" if cuda_device_count() > 0 else "cpu"
