"""Which torch device a run uses: the one place a device string becomes a torch.device."""

from __future__ import annotations

import torch

from srat_engine.errors import SratError


def pick_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SratError(f"device {requested} requested but CUDA is not available here")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise SratError(f"{requested}: only {torch.cuda.device_count()} CUDA device(s)")
    return device
