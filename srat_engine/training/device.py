"""Which torch device a run uses: the one place a device string becomes a torch.device.

The string's syntax is `srat_engine.devices.parse_device`'s; this adds what needs torch.
"""

from __future__ import annotations

import torch

from srat_engine.devices import parse_device
from srat_engine.errors import SratError


def pick_device(requested: str) -> torch.device:
    """The torch device for `requested` (auto: CUDA if present, else CPU), checked to exist."""
    device = parse_device(requested)
    if device.kind == "auto":  # torch's own answer: this process trains on it
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.kind == "cuda" and not torch.cuda.is_available():
        raise SratError(f"device {device} requested but CUDA is not available here")
    if device.kind == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise SratError(f"{device}: only {torch.cuda.device_count()} CUDA device(s)")
    if device.kind == "mps" and not torch.backends.mps.is_available():
        raise SratError("device mps requested but MPS (Apple GPUs) is not available here")
    return torch.device(str(device))
