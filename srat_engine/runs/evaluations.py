"""`eval.json` in the run directory: the latest result of each evaluation attack.

    {"format": 1, "results": {"pgd20": {...}, "cw": {...}, "autoattack": {...}}}

One entry per attack; evaluating an attack again replaces its entry and keeps the others.
Every write is read-merge-replace under a per-run file lock (two `srat eval` of one run at
once must not drop each other's attack) through `atomic_write_json` (a crash leaves the old
file or the new one, never a torn one). Nothing here imports torch: the run summary, `srat runs`
and the TUI read it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from srat_engine.errors import SratError
from srat_engine.fsutil import atomic_write_json, held_lock, read_json
from srat_engine.runs.rundir import RunDir

EVAL_FILE = "eval.json"
FORMAT = 1
ATTACKS: tuple[str, ...] = ("pgd20", "cw", "autoattack")
ATTACK_TITLES: dict[str, str] = {
    "pgd20": "PGD-20",
    "cw": "CW-inf",
    "autoattack": "AutoAttack",
}
_LOCK_TIMEOUT_S = 30.0


def check_request(attack: str, n_per_class: int | None) -> None:
    """SratError for an unknown attack or a subset of fewer than 1 example per class."""
    if attack not in ATTACKS:
        raise SratError(f"unknown attack {attack!r}: use one of {', '.join(ATTACKS)}")
    if n_per_class is not None and n_per_class < 1:
        raise SratError(f"--n must be at least 1 example per class (got {n_per_class})")


def eval_path(run: RunDir) -> Path:
    return run.path / EVAL_FILE


def _results_of(data: Any) -> dict[str, dict[str, Any]]:
    results = data.get("results") if isinstance(data, dict) else None
    if not isinstance(results, dict):
        return {}
    return {str(k): v for k, v in results.items() if isinstance(v, dict)}


def read_eval(run: RunDir) -> dict[str, dict[str, Any]]:
    """The stored results by attack; a missing, corrupt or wrongly shaped file reads as {}."""
    try:
        data = read_json(eval_path(run))
    except (FileNotFoundError, ValueError, OSError):
        return {}
    return _results_of(data)


def store_result(run: RunDir, attack: str, result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Replace `attack`'s entry, keep every other attack's; returns all results after the write.

    An unparseable eval.json is moved aside (eval.json.corrupt-<unix time>) rather than
    silently overwritten, so whatever a person can still recover from it stays on disk.
    """
    check_request(attack, None)
    path = eval_path(run)
    lock_path = path.with_name(EVAL_FILE + ".lock")
    busy = f"{path}.lock is held by another srat eval; try again"
    with held_lock(lock_path, timeout=_LOCK_TIMEOUT_S, busy=busy):
        results: dict[str, dict[str, Any]] = {}
        if path.exists():
            try:
                results = _results_of(read_json(path))
            except (ValueError, OSError):
                path.replace(path.with_name(f"{EVAL_FILE}.corrupt-{int(time.time())}"))
        results[attack] = json.loads(json.dumps(result))  # plain JSON types, or fail here
        atomic_write_json(path, {"format": FORMAT, "results": results})
    return results


def eval_summary(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The fields the run index keeps: AutoAttack's robust accuracy and the masking verdict.

    aa_overall, aa_under: percent (None before `srat eval RUN --attack autoattack`);
    aa_n: how many test examples they were measured on; masking: True/False, None unknown.
    """
    aa = results.get("autoattack") or {}
    masking = aa.get("masking") if isinstance(aa.get("masking"), dict) else {}
    suspected = masking.get("suspected")
    return {
        "aa_overall": _number(aa.get("overall")),
        "aa_under": _number(aa.get("under")),
        "aa_n": aa.get("n") if isinstance(aa.get("n"), int) else None,
        "masking": suspected if isinstance(suspected, bool) else None,
    }


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def with_eval_robust(
    metrics: dict[str, Any] | None, results: dict[str, dict[str, Any]], attack: str
) -> dict[str, Any]:
    """`metrics` (a metrics event or an index record) with its robust columns replaced by the
    stored `attack` evaluation: rob_overall, rob_under, rob_class (None where the run has no
    such evaluation, never the training-time numbers under another attack's name), and the
    run's masking verdict."""
    entry = results.get(attack) or {}
    classes = entry.get("class")
    return {
        **(metrics or {}),
        "rob_overall": _number(entry.get("overall")),
        "rob_under": _number(entry.get("under")),
        "rob_class": classes if isinstance(classes, list) else None,
        "masking": eval_summary(results)["masking"],
    }
