"""Class-balanced weights (Cui et al. 2019, "Class-Balanced Loss Based on Effective Number of
Samples") and their deferred schedule DRW (Cao et al. 2019; SRAT Algorithm 1)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from srat_engine.class_counts import check_class_counts


def class_balanced_weights(counts: Sequence[int], beta: float = 0.9999) -> Tensor:
    """Per-class weights, shape [C]: w_j ∝ 1 / E_j with E_j = (1 - beta^n_j) / (1 - beta).

    E_j is the effective number of class j; the weights are rescaled to sum to C, as LDAM-DRW
    does. ``beta = 0`` gives all ones; ``beta = 1`` is the limit E_j = n_j (inverse frequency).
    """
    check_class_counts(counts, "class_balanced_weights")
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must lie in [0, 1], got {beta}")
    n = torch.tensor(list(counts), dtype=torch.float64)
    if beta == 1.0:
        effective = n
    else:
        # -expm1(n * log(beta)) = 1 - beta^n without cancellation when beta is close to 1.
        effective = -torch.expm1(n * torch.log(torch.tensor(beta, dtype=torch.float64)))
        effective = effective / (1.0 - beta)
    return summing_to_class_count(1.0 / effective)


def summing_to_class_count(weights: Sequence[float] | Tensor) -> Tensor:
    """Per-class weights w rescaled to sum to C, their number: w_j * C / sum_k w_k.

    LDAM-DRW's normalisation of its class-balanced weights, and so of every class weighting a
    run trains with: under the batch-mean reduction of Eq. 5 only the weights' ratios, not
    their scale, then differ between weightings (SRAT Figure 5 takes "78", the class-balanced
    tail-to-head ratio of Step-100, as the class-balanced run).
    """
    values = torch.as_tensor(weights, dtype=torch.float64)
    total = values.sum()
    if values.ndim != 1 or len(values) == 0 or not torch.isfinite(values).all():
        raise ValueError(f"class weights must be a non-empty list of finite numbers: {weights}")
    if (values < 0).any() or total <= 0:
        raise ValueError(f"class weights must be >= 0 with a positive sum: {weights}")
    return (values * (len(values) / total)).to(torch.get_default_dtype())


def deferred_class_weights(
    counts: Sequence[int], beta: float, epoch: int, start_epoch: int
) -> Tensor:
    """DRW: all ones for ``epoch < start_epoch``, ``class_balanced_weights`` from then on.

    Epochs are 0-based and ``start_epoch`` is the 0-based index of the first reweighted epoch
    (LDAM-DRW's ``epoch // 160`` convention). SRAT's Algorithm 1 counts from 1 and reweights
    from epoch T_d, so T_d there is ``start_epoch + 1`` here.
    """
    if epoch < start_epoch:
        return torch.ones(len(counts))
    return class_balanced_weights(counts, beta)
