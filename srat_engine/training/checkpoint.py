"""Checkpoints: written atomically, read with `weights_only=True`.

`torch.load` without `weights_only` unpickles arbitrary objects, i.e. runs code from whoever
made the file; a checkpoint here holds only tensors, numbers, strings and containers.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from srat_engine.errors import SratError
from srat_engine.fsutil import atomic_write


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda handle: torch.save(state, handle))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    if not path.is_file():
        raise SratError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile, OSError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SratError(f"checkpoint {path} is corrupt or unsafe to load: {reason}") from None
    if not isinstance(state, dict) or "model" not in state:
        raise SratError(f"checkpoint {path} is not an srat checkpoint")
    return state
