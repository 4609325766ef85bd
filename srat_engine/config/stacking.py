"""Which runs may train as one stack (`training.stacked_step`): the rule, torch-free, so a
launch checks it before it creates any run."""

from __future__ import annotations

from collections.abc import Sequence

from srat_engine.config.schema import RunConfig
from srat_engine.errors import SratError

# what may differ between the runs of one stack: the run's own name and its seed
PER_RUN_FIELDS: frozenset[str] = frozenset({"name", "seed"})


def stack_refusal(config: RunConfig) -> str | None:
    """Why runs of `config` cannot train stacked, or None when they can.

    Stacked are PGD-AT's objective (with any loss, prior shift, class weights, GAIR weights,
    separation term and either BatchNorm mode of the attack) and natural training. What the
    stacked step does not build trains alone: TRADES', TAET's, REAT's and RoBal's objectives
    (a second attack loss, per-epoch state or a second model view), AWP (a perturbation of
    each run's weights between two passes), RobustLT's class-wise budgets and RoBal's head;
    so does ``train.compile`` (its graphs are of one model)."""
    spec = config.spec
    if spec.adversarial and config.attack.steps > 0 and spec.objective != "pgd":
        return f"its objective {spec.objective!r} trains alone (stacked: pgd and natural)"
    if config.head() == "robal":
        return "RoBal's head attacks its cosine view, which trains alone"
    if spec.awp:
        return "AWP's weight perturbation trains alone"
    if config.attack.class_budget:
        return "class-wise attack budgets (attack.class_budget) train alone"
    if config.train.compile != "off":
        return "train.compile compiles one model: set train.compile=off to stack"
    return None


def check_stackable(configs: Sequence[RunConfig]) -> None:
    """SratError unless `configs` can train as one stack: two or more, each stackable, equal
    in everything but their name and seed (`PER_RUN_FIELDS`), and seeds all different."""
    if len(configs) < 2:
        raise SratError(f"a stack needs two runs or more, got {len(configs)}")
    for config in configs:
        why = stack_refusal(config)
        if why is not None:
            raise SratError(f"cannot stack {config.spec.name} runs: {why}")
    first = _shared_fields(configs[0])
    for config in configs[1:]:
        shared = _shared_fields(config)
        if shared != first:
            differing = sorted(_differences(first, shared))
            raise SratError(
                "stacked runs differ only in their seed; these differ too: "
                + ", ".join(differing[:5])
                + (f" (and {len(differing) - 5} more)" if len(differing) > 5 else "")
            )
    seeds = [config.seed for config in configs]
    if len(set(seeds)) != len(seeds):
        raise SratError(f"stacked runs need different seeds, got {seeds}")


def _shared_fields(config: RunConfig) -> dict[str, object]:
    document = config.model_dump(mode="json")
    return {key: value for key, value in document.items() if key not in PER_RUN_FIELDS}


def _differences(a: dict[str, object], b: dict[str, object], prefix: str = "") -> list[str]:
    names = []
    for key in sorted(set(a) | set(b)):
        left, right = a.get(key), b.get(key)
        if isinstance(left, dict) and isinstance(right, dict):
            names.extend(_differences(left, right, f"{prefix}{key}."))
        elif left != right:
            names.append(f"{prefix}{key}")
    return names
