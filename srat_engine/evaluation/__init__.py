"""Robustness evaluation of finished runs: PGD-20, CW-l_inf and AutoAttack, into eval.json.

`evaluate_run` (torch, torchattacks) is imported on first use, so that reading stored results
(`read_eval`, `eval_summary`: the run index, `srat runs`, the TUI) never pays for torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from srat_engine.evaluation.masking import (
    MASKING_THRESHOLD,
    gradient_masking_suspected,
    masking_record,
)
from srat_engine.evaluation.store import (
    ATTACK_TITLES,
    ATTACKS,
    EVAL_FILE,
    check_request,
    eval_summary,
    read_eval,
    store_result,
    with_eval_robust,
)

if TYPE_CHECKING:
    from srat_engine.evaluation.runner import evaluate_run


def __getattr__(name: str) -> Any:
    if name == "evaluate_run":
        from srat_engine.evaluation.runner import evaluate_run

        return evaluate_run
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ATTACKS",
    "ATTACK_TITLES",
    "EVAL_FILE",
    "MASKING_THRESHOLD",
    "check_request",
    "eval_summary",
    "evaluate_run",
    "gradient_masking_suspected",
    "masking_record",
    "read_eval",
    "store_result",
    "with_eval_robust",
]
