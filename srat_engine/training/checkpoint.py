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
    """Save `state` to `path` atomically: a save that fails (a full disk mid-write) raises
    WriteFailed with the OS's cause, not torch's message, and leaves the previous checkpoint
    loadable."""
    atomic_write(path, lambda handle: torch.save(state, handle))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The state saved at `path`, read with weights_only=True; SratError in one line for a file
    that is missing, unreadable, corrupt or not a srat checkpoint.

    torch's own message for a refused file suggests loading it with weights_only=False, the
    load that runs whatever code the file holds: it is never passed on.
    """
    if not path.is_file():
        raise SratError(f"no checkpoint at {path}")
    refused = f"checkpoint {path} is corrupt or unsafe (not a srat checkpoint); it was not loaded"
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except OSError as err:
        if err.strerror:  # the disk, not the file: say what the OS said
            raise SratError(f"cannot read checkpoint {path}: {err.strerror}") from None
        raise SratError(refused) from None
    except (
        RuntimeError,
        pickle.UnpicklingError,
        EOFError,
        zipfile.BadZipFile,
        ValueError,
        TypeError,
        KeyError,
        AttributeError,
        IndexError,
        UnicodeDecodeError,
    ):
        # every way a truncated, garbled or foreign file makes the unpickler fail
        raise SratError(refused) from None
    if not isinstance(state, dict) or "model" not in state:
        raise SratError(refused)
    return state
