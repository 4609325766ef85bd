"""The paper's columns from per-class counts, and group means of per-class accuracies."""

from __future__ import annotations

import pytest

from srat_engine.evaluation.metrics import aggregate, class_group_mean, per_class_accuracy


def test_overall_and_under_pool_over_examples() -> None:
    correct, total = [9, 5, 1], [10, 10, 5]
    assert per_class_accuracy(correct, total) == [90.0, 50.0, 20.0]
    # overall 15/25 = 60 %; under (classes 1, 2): 6/15 = 40 %
    assert aggregate(correct, total, [1, 2]) == pytest.approx({"overall": 60.0, "under": 40.0})


def test_class_group_mean_skips_missing_classes() -> None:
    per_class = [90.0, 50.0, None, 20.0]
    assert class_group_mean(per_class, [1, 3]) == pytest.approx(35.0)  # (50 + 20) / 2
    assert class_group_mean(per_class, [0, 2, 7]) == pytest.approx(90.0)  # 2: None, 7: absent
    assert class_group_mean(per_class, [2]) is None
    # what a damaged record may hold in place of a number counts as missing, not as a value
    damaged = [90.0, "a", True, {}, 30.0]
    assert class_group_mean(damaged, [0, 1, 2, 3, 4]) == pytest.approx(60.0)  # (90 + 30) / 2
    assert class_group_mean(damaged, [1, 2, 3]) is None
    assert class_group_mean(None, [0]) is None
    assert class_group_mean(per_class, []) is None
