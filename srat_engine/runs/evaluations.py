"""`eval.json` in the run directory: the latest result of each evaluation attack.

    {"format": 1, "results": {"pgd20": {...}, "cw": {...}, "autoattack": {...},
                              "autoattack@best": {...}}}

One entry per attack and checkpoint: the run's last checkpoint under the attack's name, its
best epoch's (`srat eval --checkpoint best`, best.pt) under `<attack>@best`. Evaluating an
attack again replaces its entry and keeps the others.
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
# Which weights an evaluation attacks: the run's end (last.pt) or the epoch with the best
# per-epoch PGD robust accuracy (best.pt), a choice made on the test set.
CHECKPOINTS: tuple[str, ...] = ("last", "best")
_BEST_SUFFIX = "@best"
_LOCK_TIMEOUT_S = 30.0


def check_request(attack: str, n_per_class: int | None, checkpoint: str = "last") -> None:
    """SratError for an unknown attack or checkpoint, or a subset of fewer than 1 example per
    class."""
    if attack not in ATTACKS:
        raise SratError(f"unknown attack {attack!r}: use one of {', '.join(ATTACKS)}")
    check_checkpoint(checkpoint)
    if n_per_class is not None and n_per_class < 1:
        raise SratError(f"--n must be at least 1 example per class (got {n_per_class})")


def check_checkpoint(checkpoint: str) -> None:
    """SratError unless `checkpoint` is one of CHECKPOINTS."""
    if checkpoint not in CHECKPOINTS:
        raise SratError(f"--checkpoint is last or best (got {checkpoint!r})")


def result_key(attack: str, checkpoint: str = "last") -> str:
    """The entry of eval.json that holds `attack` on `checkpoint`: the attack's name for the
    last checkpoint, `<attack>@best` for the best epoch's."""
    return attack if checkpoint == "last" else attack + _BEST_SUFFIX


def attack_of(key: str) -> str:
    """The attack an eval.json entry's key names (`result_key` inverted)."""
    return key.removesuffix(_BEST_SUFFIX)


def attack_title(attack: str, steps: Any = None) -> str:
    """How outputs name an attack: ATTACK_TITLES', with the PGD's own step count when known
    ("PGD-5"): `pgd20` is the run's evaluation PGD, named after its default eval.steps."""
    if attack == "pgd20" and isinstance(steps, int) and not isinstance(steps, bool):
        return f"PGD-{steps}"
    return ATTACK_TITLES.get(attack, attack)


def entry_steps(entry: Any) -> Any:
    """The step count an eval.json entry's params record (None when absent)."""
    params = entry.get("params") if isinstance(entry, dict) else None
    return params.get("steps") if isinstance(params, dict) else None


def result_title(key: str, entry: Any = None) -> str:
    """How tables name an entry: "AutoAttack", or "AutoAttack (best epoch)" for best.pt's;
    a PGD entry by the steps it ran (`entry`: the stored result, `attack_title`)."""
    title = attack_title(attack_of(key), entry_steps(entry))
    return f"{title} (best epoch)" if key.endswith(_BEST_SUFFIX) else title


def eval_path(run: RunDir) -> Path:
    return run.path / EVAL_FILE


def _results_of(data: Any) -> dict[str, dict[str, Any]]:
    results = data.get("results") if isinstance(data, dict) else None
    if not isinstance(results, dict):
        return {}
    return {str(k): v for k, v in results.items() if isinstance(v, dict)}


def _well_formed(data: Any) -> bool:
    """Whether `data` is an eval.json document: its results an object of result objects. One
    that is not would be rewritten as only the new result by `store_result`."""
    results = data.get("results") if isinstance(data, dict) else None
    return isinstance(results, dict) and all(isinstance(v, dict) for v in results.values())


def _set_aside(path: Path) -> None:
    """Move a damaged eval.json to eval.json.corrupt-<unix time>, never over an earlier one."""
    aside = path.with_name(f"{EVAL_FILE}.corrupt-{int(time.time())}")
    while aside.exists():  # another damaged version set aside this second
        aside = aside.with_name(aside.name + "-1")
    path.replace(aside)


def read_eval(run: RunDir) -> dict[str, dict[str, Any]]:
    """The stored results by attack; a missing, corrupt or wrongly shaped file reads as {}."""
    try:
        data = read_json(eval_path(run))
    except (FileNotFoundError, ValueError, OSError):
        return {}
    return _results_of(data)


def current_results(
    results: dict[str, dict[str, Any]], best_epoch: int | None
) -> dict[str, dict[str, Any]]:
    """`results` without the best-epoch entries that evaluated another epoch than the run's
    best one now (`records.best_epoch`; a run resumed for more epochs can have a new best)."""
    return {
        key: entry
        for key, entry in results.items()
        if key == attack_of(key) or entry.get("checkpoint_epoch") == best_epoch
    }


def store_result(
    run: RunDir, attack: str, result: dict[str, Any], checkpoint: str = "last"
) -> dict[str, dict[str, Any]]:
    """Replace the entry of `attack` on `checkpoint` (`result_key`), keep every other; returns
    all results after the write.

    An unparseable or wrongly shaped eval.json (not `{"results": {attack: {...}}}`) is moved
    aside (eval.json.corrupt-<unix time>) rather than silently overwritten, so whatever a
    person can still recover from it stays on disk.
    """
    check_request(attack, None, checkpoint)
    path = eval_path(run)
    lock_path = path.with_name(EVAL_FILE + ".lock")
    busy = f"{path}.lock is held by another srat eval; try again"
    with held_lock(lock_path, timeout=_LOCK_TIMEOUT_S, busy=busy):
        results: dict[str, dict[str, Any]] = {}
        if path.exists():
            try:
                data = read_json(path)
            except (ValueError, OSError):  # DamagedFile: not UTF-8 JSON
                data = None
            if _well_formed(data):
                results = _results_of(data)
            else:
                _set_aside(path)
        # plain JSON types, or fail here
        results[result_key(attack, checkpoint)] = json.loads(json.dumps(result))
        atomic_write_json(path, {"format": FORMAT, "results": results})
    return results


def eval_summary(results: dict[str, dict[str, Any]], checkpoint: str = "last") -> dict[str, Any]:
    """The fields the run index keeps (of the last checkpoint): AutoAttack's robust accuracy
    and the masking verdict.

    aa_overall, aa_under: percent (None before `srat eval RUN --attack autoattack`);
    aa_n: how many test examples they were measured on; masking: True/False, None unknown.
    """
    aa = results.get(result_key("autoattack", checkpoint)) or {}
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
    metrics: dict[str, Any] | None,
    results: dict[str, dict[str, Any]],
    attack: str,
    checkpoint: str = "last",
) -> dict[str, Any]:
    """`metrics` (a metrics event or an index record) with its robust columns replaced by the
    stored evaluation of `attack` on `checkpoint`: rob_overall, rob_under, rob_class (None
    where the run has no such evaluation, never the training-time numbers under another
    attack's name), and the masking verdict of that checkpoint."""
    entry = results.get(result_key(attack, checkpoint)) or {}
    classes = entry.get("class")
    return {
        **(metrics or {}),
        "rob_overall": _number(entry.get("overall")),
        "rob_under": _number(entry.get("under")),
        "rob_class": classes if isinstance(classes, list) else None,
        # which attack and how many test examples the numbers are of (None: no such result)
        "rob_attack": attack_title(attack, entry_steps(entry)) if entry else None,
        "rob_n": entry.get("n") if entry else None,
        "masking": eval_summary(results, checkpoint)["masking"],
    }
