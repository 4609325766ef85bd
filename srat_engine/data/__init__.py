"""Datasets, long-tailed subsampling and batched augmentation: `catalog` (what a dataset is,
without reading it), `imbalance` (class counts), `sources` (loading splits), `subsets` (the
examples drawn), `augment`, `resident` (on-device pipelines).

Nothing is re-exported here: importing the package must not import torch, as validating a
config reads `catalog` and `imbalance` only.
"""
