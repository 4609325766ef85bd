"""Datasets, long-tailed subsampling and batched augmentation."""

from srat_engine.data.augment import random_crop_flip
from srat_engine.data.imbalance import (
    IMBALANCE_KINDS,
    balanced_subset_indices,
    class_counts,
    imbalanced_indices,
    under_represented_classes,
)
from srat_engine.data.sources import DATASETS, Splits, load_splits

__all__ = [
    "DATASETS",
    "IMBALANCE_KINDS",
    "Splits",
    "balanced_subset_indices",
    "class_counts",
    "imbalanced_indices",
    "load_splits",
    "random_crop_flip",
    "under_represented_classes",
]
