"""Class-wise accuracy and the paper's aggregate columns (Tables 1-4).

Overall = accuracy pooled over the test examples; Under = accuracy on the examples of the
under-represented classes (the least frequent half of the training classes). On a balanced test
set (CIFAR-10, digits) Overall is also the mean of the class accuracies; on SVHN's unbalanced
test split it is not (README, Data).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from srat_engine.runs.records import is_number


def per_class_accuracy(correct: Sequence[int], total: Sequence[int]) -> list[float]:
    """100 * correct_c / total_c per class (0 for a class with no test examples)."""
    return [100.0 * c / t if t else 0.0 for c, t in zip(correct, total, strict=True)]


def class_group_mean(per_class: Sequence[Any] | None, classes: Sequence[int]) -> float | None:
    """Mean of per-class accuracies over `classes` (classes without a number left out: a
    hand-edited or damaged record may hold anything).

    On a balanced test set this is the group's pooled accuracy. None when no class of the
    group has a value.
    """
    if per_class is None:
        return None
    present = [per_class[c] for c in classes if c < len(per_class) and is_number(per_class[c])]
    return sum(present) / len(present) if present else None


def aggregate(
    correct: Sequence[int], total: Sequence[int], under_classes: Sequence[int]
) -> dict[str, float]:
    """Overall and under-represented accuracy (percent), pooled over examples."""
    all_total = sum(total)
    under_total = sum(total[c] for c in under_classes)
    return {
        "overall": 100.0 * sum(correct) / all_total if all_total else 0.0,
        "under": 100.0 * sum(correct[c] for c in under_classes) / under_total
        if under_total
        else 0.0,
    }
