"""Each dataset's `data.options`: their names, defaults and the values they may take.

One table, read by the catalog (so resolving a config, which every launch and dry run does
before it creates anything, refuses a bad option) and by the loaders that use the values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from srat_engine.errors import SratError

# sklearn's digits: 50 of each class's ~180 images are held out as the test set
DIGITS_TEST_PER_CLASS = 50


@dataclass(frozen=True)
class Option:
    """One option: its default (None: unset, the loader decides) and what it accepts."""

    default: int | float | None
    kind: Literal["int", "number", "positive"]  # int: an integer >= minimum
    minimum: int = 0


DATASET_OPTIONS: dict[str, dict[str, Option]] = {
    "cifar10": {},
    "cifar100": {},
    "svhn": {},
    "digits": {"test_per_class": Option(DIGITS_TEST_PER_CLASS, "int", 1)},
    # the SRAT paper's Eq. 1 mixture: x | y ~ N(y * (eta, ..., eta), sigma^2 I) in R^d
    "gaussian": {
        "d": Option(2, "int", 1),
        "eta": Option(1.0, "number"),
        "sigma": Option(1.0, "positive"),
        "train_per_class": Option(5000, "int", 1),
        "test_per_class": Option(5000, "int", 1),
        "seed": Option(0, "int", 0),
    },
    # CIFAR-10's shapes and counts by default
    "synthetic": {
        "classes": Option(10, "int", 2),
        "channels": Option(3, "int", 1),
        "size": Option(32, "int", 1),
        "train_per_class": Option(5000, "int", 1),
        "test_per_class": Option(1000, "int", 1),
        "seed": Option(0, "int", 0),
    },
    # test_per_class unset: 20% of the smallest class (catalog.folder_held_out)
    "folder": {"image_size": Option(32, "int", 1), "test_per_class": Option(None, "int", 1)},
}


def dataset_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The dataset's options with `options` over the defaults; a one-line SratError for an
    unknown name or a value the option does not take."""
    table = DATASET_OPTIONS.get(name)
    if table is None:
        raise SratError(
            f"unknown dataset {name!r}: known datasets are {', '.join(DATASET_OPTIONS)}"
        )
    unknown = sorted(set(options) - set(table))
    if unknown:
        known = ", ".join(sorted(table)) or "none"
        raise SratError(
            f"unknown option(s) for dataset {name!r}: {', '.join(unknown)} (accepted: {known})"
        )
    merged = {key: option.default for key, option in table.items()}
    for key, value in options.items():
        merged[key] = _checked(name, key, value, table[key])
    return merged


def _checked(name: str, key: str, value: Any, option: Option) -> int | float:
    if option.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int) or value < option.minimum:
            raise SratError(
                f"dataset {name!r}: option {key} must be an integer >= {option.minimum}, "
                f"got {value!r}"
            )
        return value
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not is_number or not math.isfinite(value) or (option.kind == "positive" and value <= 0):
        need = "a finite number > 0" if option.kind == "positive" else "a finite number"
        raise SratError(f"dataset {name!r}: option {key} must be {need}, got {value!r}")
    return float(value)
