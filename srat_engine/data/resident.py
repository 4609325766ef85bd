"""Training and test data resident on the training device, as uint8 (or float vectors).

Held on the device for the whole run, so a batch is an index into a tensor: no DataLoader,
no host-to-device copy per step.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from srat_engine.data.sources import load_splits
from srat_engine.data.subsets import balanced_subset_indices, imbalanced_indices

if TYPE_CHECKING:  # the config layer sits above data: its types only, never its modules
    from srat_engine.config.resolve import Resolved
    from srat_engine.config.schema import RunConfig


@dataclass
class DeviceData:
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    robust_x: torch.Tensor  # balanced subset of the test set for per-epoch robust accuracy
    robust_y: torch.Tensor
    clip: tuple[float, float] | None


def load_device_data(config: RunConfig, resolved: Resolved, device: torch.device) -> DeviceData:
    splits = load_splits(
        config.data.dataset,
        Path(resolved.data_root),
        download=config.data.download,
        **config.data.options,
    )
    chosen = imbalanced_indices(splits.train_y, resolved.class_counts, seed=config.seed)
    subset = balanced_subset_indices(splits.test_y, config.eval.robust_per_class, seed=0)
    return DeviceData(
        train_x=splits.train_x[chosen].to(device),
        train_y=splits.train_y[chosen].to(device),
        test_x=splits.test_x.to(device),
        test_y=splits.test_y.to(device),
        robust_x=splits.test_x[subset].to(device),
        robust_y=splits.test_y[subset].to(device),
        clip=splits.clip,
    )


def to_inputs(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float in [0, 1]; vectors (Gaussian mixture) pass through as float."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
