"""The input every per-class formula takes (class-balanced weights, LDAM and RoBal margins, the
log prior, REAT's weights, class-wise budgets): training examples per class, checked once here.
"""

from __future__ import annotations

from collections.abc import Sequence


def check_class_counts(counts: Sequence[int], who: str) -> None:
    """ValueError unless `counts` holds at least one count and every count is positive (`who`:
    the function that needs them, named in the message)."""
    if len(counts) == 0:
        raise ValueError(f"{who} needs at least one class count")
    if any(n <= 0 for n in counts):
        raise ValueError(f"class counts must be positive, got {list(counts)}")
