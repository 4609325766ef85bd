"""Class-count profiles and the subsets that realise them."""

from __future__ import annotations

import math

import pytest
import torch

from srat_engine.data.imbalance import class_counts, under_represented_classes
from srat_engine.data.subsets import balanced_subset_indices, imbalanced_indices
from srat_engine.errors import SratError


def test_exp_100_cifar10_matches_ldam_drw() -> None:
    # the CIFAR-10-LT (rho = 100) training counts used by LDAM-DRW and the SRAT paper
    assert class_counts("exp", 100, 5000, 10) == [
        5000,
        2997,
        1796,
        1077,
        645,
        387,
        232,
        139,
        83,
        50,
    ]


def test_exp_10_cifar10() -> None:
    # hand-checked: floor(5000 * 10 ** (-i / 9))
    assert class_counts("exp", 10, 5000, 10) == [
        5000, 3871, 2997, 2320, 1796, 1391, 1077, 834, 645, 500,
    ]  # fmt: skip


def test_step_100() -> None:
    assert class_counts("step", 100, 5000, 10) == [5000] * 5 + [50] * 5


def test_step_odd_number_of_classes_keeps_the_extra_class_in_the_head() -> None:
    assert class_counts("step", 10, 100, 5) == [100, 100, 100, 10, 10]


def test_exp_endpoints_for_cifar100() -> None:
    counts = class_counts("exp", 100, 500, 100)
    assert len(counts) == 100
    assert counts[0] == 500
    assert counts[-1] == 5
    assert counts == sorted(counts, reverse=True)


@pytest.mark.parametrize("kind", ["none", "step", "exp"])
def test_ratio_one_is_balanced(kind: str) -> None:
    assert class_counts(kind, 1, 300, 7) == [300] * 7
    assert class_counts(kind, 1.0, 300, 7) == class_counts("none", 50.0, 300, 7)


def test_single_class() -> None:
    assert class_counts("exp", 100, 40, 1) == [40]
    assert class_counts("step", 100, 40, 1) == [40]


@pytest.mark.parametrize("ratio", [0.5, 0.0, -3.0, math.nan, math.inf])
def test_bad_ratio_raises(ratio: float) -> None:
    with pytest.raises(SratError, match="ratio"):
        class_counts("exp", ratio, 5000, 10)


@pytest.mark.parametrize(("n_max", "num_classes"), [(0, 10), (10, 0), (-5, 3)])
def test_bad_sizes_raise(n_max: int, num_classes: int) -> None:
    with pytest.raises(SratError):
        class_counts("step", 10, n_max, num_classes)


def test_unknown_kind_raises() -> None:
    with pytest.raises(SratError, match="linear"):
        class_counts("linear", 10, 100, 10)


@pytest.mark.parametrize("kind", ["step", "exp"])
def test_zero_count_raises_and_names_the_numbers(kind: str) -> None:
    with pytest.raises(SratError) as info:
        class_counts(kind, 200, 100, 10)
    msg = str(info.value)
    assert "200" in msg and "100" in msg
    assert "\n" not in msg


def test_under_represented_classes_long_tail() -> None:
    assert under_represented_classes([5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]) == [
        5, 6, 7, 8, 9,
    ]  # fmt: skip


def test_under_represented_classes_unsorted_counts() -> None:
    assert under_represented_classes([10, 500, 30, 400]) == [0, 2]


def test_under_represented_classes_ties_prefer_higher_index() -> None:
    assert under_represented_classes([7, 7, 7, 7]) == [2, 3]
    assert under_represented_classes([100, 5, 5, 5, 100]) == [2, 3]
    assert under_represented_classes([3, 3]) == [1]


def test_under_represented_classes_odd_and_tiny() -> None:
    assert under_represented_classes([9, 1, 5]) == [1]
    assert under_represented_classes([4]) == []
    assert under_represented_classes([]) == []


def _labels() -> torch.Tensor:
    # 3 classes with 40, 30, 20 samples, interleaved so indices are not class-contiguous
    y = torch.cat([torch.zeros(40), torch.ones(30), torch.full((20,), 2)]).to(torch.int64)
    return y[torch.randperm(90, generator=torch.Generator().manual_seed(123))]


def test_imbalanced_indices_counts_and_format() -> None:
    y = _labels()
    idx = imbalanced_indices(y, [25, 9, 3], seed=0)
    assert idx.dtype == torch.int64
    assert torch.equal(idx, torch.sort(idx).values)
    assert idx.unique().numel() == idx.numel()
    assert torch.bincount(y[idx], minlength=3).tolist() == [25, 9, 3]


def test_imbalanced_indices_deterministic_per_seed_and_seed_dependent() -> None:
    y = _labels()
    a = imbalanced_indices(y, [10, 10, 10], seed=7)
    torch.manual_seed(0)  # the global RNG must not matter
    b = imbalanced_indices(y, [10, 10, 10], seed=7)
    c = imbalanced_indices(y, [10, 10, 10], seed=8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_imbalanced_indices_too_few_samples_raises() -> None:
    with pytest.raises(SratError) as info:
        imbalanced_indices(_labels(), [10, 10, 21], seed=0)
    msg = str(info.value)
    assert "class 2" in msg and "21" in msg and "20" in msg


def test_imbalanced_indices_full_class_takes_everything() -> None:
    y = _labels()
    idx = imbalanced_indices(y, [40, 30, 20], seed=3)
    assert torch.equal(idx, torch.arange(90))


def test_balanced_subset_indices() -> None:
    y = _labels()
    idx = balanced_subset_indices(y, 25, seed=1)
    assert torch.bincount(y[idx], minlength=3).tolist() == [25, 25, 20]
    assert torch.equal(idx, torch.sort(idx).values)
    assert torch.equal(idx, balanced_subset_indices(y, 25, seed=1))
    assert not torch.equal(idx, balanced_subset_indices(y, 25, seed=2))
