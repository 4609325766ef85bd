"""`evaluate_run`: robust accuracy of a run's checkpoint under PGD-20, CW-l_inf or AutoAttack:
its last one, or its best epoch's (best.pt, chosen by PGD on the test set) when asked.

Everything is checked before anything is computed (attack name, subset size, run status,
checkpoint), and eval.json is written once, at the end: a failed or interrupted evaluation
leaves the run directory as it was. The model is evaluated in fp32 (TF32 matmuls off too: the
reduced mantissa weakens input gradients, as fp16 does) and in eval mode (BatchNorm running
statistics), on a fixed class-balanced subset of the test set.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from srat_engine.config.schema import RunConfig, validate_config
from srat_engine.data.sources import load_splits
from srat_engine.data.subsets import balanced_subset_indices
from srat_engine.errors import SratError
from srat_engine.evaluation.autoattack import (
    AA_ORDER,
    autoattack_linf,
    require_autoattack,
    standard_settings,
)
from srat_engine.evaluation.classwise import (
    AttackParams,
    BatchHits,
    class_totals,
    clean_hits,
    count_correct,
    pgd_hits,
)
from srat_engine.evaluation.cw import CW_KAPPA, cw_loss
from srat_engine.evaluation.graphs import GraphedHits
from srat_engine.evaluation.masking import (
    LOGIT_SCALES,
    MASKING_THRESHOLD,
    logit_scaled_hits,
    masking_record,
    scale_key,
)
from srat_engine.evaluation.metrics import aggregate, per_class_accuracy
from srat_engine.losses.logit_adjustment import class_log_prior
from srat_engine.models import SratModel, build_model
from srat_engine.models.posthoc import posthoc_view
from srat_engine.runs.evaluations import check_request, store_result
from srat_engine.runs.liveness import ACTIVE, reconcile
from srat_engine.runs.records import best_epoch, class_count
from srat_engine.runs.rundir import RunDir, now_iso
from srat_engine.tf32 import strict_fp32
from srat_engine.training.checkpoint import load_checkpoint
from srat_engine.training.step import robal_options
from srat_engine.versions import versions

# The class-balanced test subset uses the seed of training's per-epoch robust subset, so
# `--n` equal to eval.robust_per_class evaluates exactly the examples training tracked.
SUBSET_SEED = 0

LossFn = Callable[[Tensor, Tensor], Tensor]


def checkpoint_file(run: RunDir, checkpoint: str) -> Path:
    """last.pt or best.pt of `run` (`evaluations.CHECKPOINTS`)."""
    return run.best_checkpoint_path if checkpoint == "best" else run.checkpoint_path


def check_evaluable(run: RunDir, checkpoint: str = "last") -> str:
    """The run's status, if its `checkpoint` (last | best) may be evaluated now; else
    SratError."""
    status = reconcile(run)
    if status in ACTIVE:
        raise SratError(
            f"run {run.id} is {status}: evaluate it when it has finished (or kill it first)"
        )
    path = checkpoint_file(run, checkpoint)
    if checkpoint == "best" and not path.is_file():
        raise SratError(
            f"run {run.id} kept no best-epoch checkpoint ({path}): it trained with "
            "train.keep_best = false, measured no robust accuracy, or predates best.pt"
        )
    if not path.is_file():
        raise SratError(f"run {run.id} has no checkpoint to evaluate ({path})")
    return status


def _check_best(run: RunDir, epoch: int | None) -> None:
    """SratError unless best.pt holds the epoch its records name best (`records.best_epoch`):
    a resume that trained the best epoch again with another result leaves them apart."""
    chosen = best_epoch(run.metrics(), class_count(run.config()))
    if chosen is None or chosen.get("epoch") != epoch:
        named = "no epoch" if chosen is None else f"epoch {chosen.get('epoch')}"
        raise SratError(
            f"run {run.id}: best.pt holds epoch {epoch} but its records name {named} the best; "
            "evaluate --checkpoint last"
        )


def restore_model(
    run: RunDir,
    config: RunConfig,
    resolved: dict[str, Any],
    device: torch.device,
    path: Path | None = None,
) -> tuple[SratModel, int | None]:
    """The run's model as `Trainer._build` makes it, with the weights of checkpoint `path`
    (default last.pt; loaded with weights_only=True); returns the model in fp32 eval mode and
    the checkpoint's epoch."""
    path = path or run.checkpoint_path
    state = load_checkpoint(path, map_location=device)
    model = build_model(
        config.model.arch,
        int(resolved["num_classes"]),
        tuple(resolved["input_shape"]),
        head=str(resolved["head"]),
        cosine_scale=config.loss.ldam_scale,
        # RoBal's head: evaluation attacks its post-hoc logits s cos - tau_p log(pi)
        robal=robal_options(config, [int(n) for n in resolved["class_counts"]]),
    ).to(device)
    weights = state["model"]
    if not isinstance(weights, dict):
        raise SratError(f"checkpoint {path} holds no model state dict")
    # a model saved from torch.compile carries an `_orig_mod.` prefix on every key
    weights = {str(k).removeprefix("_orig_mod."): v for k, v in weights.items()}
    try:
        model.load_state_dict(weights)
    except (RuntimeError, ValueError, TypeError) as err:
        reason = str(err).strip().splitlines()[0]
        raise SratError(f"checkpoint {path} does not fit the run: {reason}") from None
    epoch = state.get("epoch")
    # read as training's evaluation read it: with the post-hoc shift when eval.posthoc_tau > 0
    log_prior = class_log_prior([int(n) for n in resolved["class_counts"]])
    model = posthoc_view(model.float(), log_prior, config.eval.posthoc_tau)
    return model.eval(), int(epoch) if isinstance(epoch, int) else None


def _pgd_attack(
    model: nn.Module,
    config: RunConfig,
    clip: Any,
    device: torch.device,
    loss_fn: LossFn | None = None,
    on_fallback: Callable[[str], None] | None = None,
) -> GraphedHits:
    """The engine's PGD with the run's eval budget (`pgd_hits`), replayed as CUDA graphs where
    eval.cuda_graphs allows; loss_fn None is its cross-entropy (PGD-20), `cw_loss` makes it
    CW-l_inf."""
    attack = AttackParams(config.eval.eps, config.eval.step_size, config.eval.steps)
    return GraphedHits(
        pgd_hits(model, attack, clip, loss_fn),
        device,
        capture=config.eval.cuda_graphs,
        on_fallback=on_fallback,
    )


class _AutoAttack:
    """A BatchHits that also sums which attack of the ensemble broke each example."""

    def __init__(self, model: nn.Module, eps: float, num_classes: int, seed: int) -> None:
        self.model, self.eps, self.num_classes, self.seed = model, eps, num_classes, seed
        self.broken_by = dict.fromkeys(AA_ORDER, 0)

    def __call__(self, xb: Tensor, yb: Tensor, _generator: torch.Generator) -> Tensor:
        result = autoattack_linf(
            self.model, xb, yb, eps=self.eps, num_classes=self.num_classes, seed=self.seed
        )
        for name, count in result.broken_by.items():
            self.broken_by[name] += count
        return result.robust


class _LogitScaled:
    """A BatchHits for the logit-scaled PGD (robust = survives every factor) that also counts,
    per factor, the examples that survived that factor alone."""

    def __init__(self, model: nn.Module, config: RunConfig, clip: Any) -> None:
        self.model, self.config, self.clip = model, config, clip
        self.survived: Tensor | None = None  # summed on the device: no host sync per batch

    def __call__(self, xb: Tensor, yb: Tensor, generator: torch.Generator) -> Tensor:
        hits = logit_scaled_hits(
            self.model,
            xb,
            yb,
            eps=self.config.eval.eps,
            step_size=self.config.eval.step_size,
            steps=self.config.eval.steps,
            generator=generator,
            clip=self.clip,
        )
        counts = hits.sum(dim=1)
        self.survived = counts if self.survived is None else self.survived + counts
        return hits.all(dim=0)

    def by_scale(self, n: int) -> dict[str, float]:
        """Robust accuracy (percent of n) under each factor alone."""
        counts = [0] * len(LOGIT_SCALES) if self.survived is None else self.survived.tolist()
        pairs = zip(LOGIT_SCALES, counts, strict=True)
        return {scale_key(s): 100.0 * c / n if n else 0.0 for s, c in pairs}


def _scores(correct: Tensor, total: list[int], under: list[int]) -> dict[str, Any]:
    counts = correct.tolist()
    return {"class": per_class_accuracy(counts, total), **aggregate(counts, total, under)}


def _params(attack: str, config: RunConfig, num_classes: int) -> dict[str, Any]:
    if attack == "autoattack":
        return {"eps": config.eval.eps, **standard_settings(num_classes)}
    params = {
        "eps": config.eval.eps,
        "step_size": config.eval.step_size,
        "steps": config.eval.steps,
        "random_start": True,
        "norm": "Linf",
        "loss": "ce" if attack == "pgd20" else "cw",
    }
    if attack == "cw":
        params["kappa"] = CW_KAPPA
    if attack == "logit_scaled":
        params["loss"] = "ce"
        params["logit_scales"] = list(LOGIT_SCALES)
    return params


def evaluate_run(
    run: RunDir,
    attack: str,
    n_per_class: int | None,
    device: str = "auto",
    *,
    checkpoint: str = "last",
    on_start: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Robust accuracy of `run`'s `checkpoint` (last | best: best.pt, the epoch with the best
    per-epoch PGD robust accuracy) under `attack`, stored in its eval.json.

    attack: pgd20 | cw | autoattack. n_per_class: examples per class of the class-balanced
    test subset (None: the whole test set). device: auto | cpu | cuda | cuda:N. Returns the
    stored entry: per-class ("class"), "overall" and "under" robust accuracy in percent, the
    clean accuracy on the same examples, the attack's parameters and provenance; for
    autoattack also PGD-20 and the logit-scaled PGD ("logit_scaled", `masking.LOGIT_SCALES`)
    on the same examples, the masking verdict and which attack of the ensemble broke how many
    examples. on_start: called once the checkpoint has loaded (so a
    corrupt or foreign one is refused before anything says the evaluation started).
    """
    from srat_engine.training.device import (
        pick_device,  # deferred: train imports most of the engine
    )

    check_request(attack, n_per_class, checkpoint)
    status = check_evaluable(run, checkpoint)
    doc = run.config()
    config = validate_config(doc["config"])
    resolved = doc["resolved"]
    num_classes = int(resolved["num_classes"])
    under = [int(c) for c in resolved["under_classes"]]
    torch_device = pick_device(device)
    path = checkpoint_file(run, checkpoint)
    model, epoch = restore_model(run, config, resolved, torch_device, path)
    if checkpoint == "best":
        _check_best(run, epoch)
    if on_start is not None:
        on_start()
    splits = load_splits(
        config.data.dataset,
        Path(resolved["data_root"]),
        download=config.data.download,
        **config.data.options,
    )
    if attack == "autoattack":
        if splits.clip != (0.0, 1.0):
            raise SratError(
                f"AutoAttack needs images in [0, 1]; {config.data.dataset} inputs are "
                "unbounded vectors: use --attack pgd20 or cw"
            )
        require_autoattack(num_classes, splits.test_x.dim())

    per_class = n_per_class if n_per_class is not None else len(splits.test_y)
    subset = balanced_subset_indices(splits.test_y, per_class, seed=SUBSET_SEED)
    x = splits.test_x[subset].to(torch_device)
    y = splits.test_y[subset].to(torch_device)
    total = class_totals(y, num_classes)
    batch_size = config.eval.batch_size
    # seed + 1: the seed of training's own robust evaluation, so pgd20 on the whole test set
    # reproduces the run's final robust accuracy
    seed = config.seed + 1

    started = time.perf_counter()

    def correct(hits: BatchHits) -> Tensor:
        # a graphed attack's graphs draw from its own generator, re-seeded by count_correct
        generator = hits.generator if isinstance(hits, GraphedHits) else None
        return count_correct(
            x, y, num_classes, batch_size=batch_size, hits=hits, seed=seed, generator=generator
        )

    extra: dict[str, Any] = {}
    with strict_fp32():
        clean = correct(clean_hits(model))
        if attack == "autoattack":
            ensemble = _AutoAttack(model, config.eval.eps, num_classes, seed)
            robust = correct(ensemble)
            # PGD-20 on the same examples: the masking flag compares like with like
            pgd_attack = _pgd_attack(model, config, splits.clip, torch_device, None, run.log)
            pgd = _scores(correct(pgd_attack), total, under)
            aa_overall = _scores(robust, total, under)["overall"]
            # the second half of the masking check: PGD-20 on scaled logits, same examples
            scaled_attack = _LogitScaled(model, config, splits.clip)
            scaled = _scores(correct(scaled_attack), total, under)
            extra = {
                "broken_by": ensemble.broken_by,
                "pgd20": {**pgd, "params": _params("pgd20", config, num_classes)},
                "logit_scaled": {
                    **scaled,
                    "by_scale": scaled_attack.by_scale(len(y)),
                    "params": _params("logit_scaled", config, num_classes),
                },
                "masking": masking_record(
                    pgd["overall"], aa_overall, MASKING_THRESHOLD, scaled_rob=scaled["overall"]
                ),
            }
        else:
            loss_fn = cw_loss if attack == "cw" else None
            robust = correct(
                _pgd_attack(model, config, splits.clip, torch_device, loss_fn, run.log)
            )
    seconds = time.perf_counter() - started

    clean_scores = _scores(clean, total, under)
    result: dict[str, Any] = {
        "attack": attack,
        **_scores(robust, total, under),
        "clean_overall": clean_scores["overall"],
        "clean_under": clean_scores["under"],
        "clean_class": clean_scores["class"],
        **extra,
        "params": _params(attack, config, num_classes),
        "n": len(y),
        "n_per_class": n_per_class,
        "class_n": total,
        "under_classes": under,
        "subset_seed": SUBSET_SEED,
        "seed": seed,
        "checkpoint": checkpoint,
        "checkpoint_epoch": epoch,
        "run_status": status,
        "precision": "fp32",
        "device": str(torch_device),
        "seconds": round(seconds, 3),
        "time": now_iso(),
        # torchattacks whenever installed, as only AutoAttack needs it: PGD-20 and CW run without
        "versions": versions(if_installed=("torchattacks",)),
    }
    store_result(run, attack, result, checkpoint)
    run.log(f"eval {attack} ({checkpoint} checkpoint, epoch {epoch}): robust "
            f"{result['overall']:.2f} / under {result['under']:.2f} "
            f"on {result['n']} test examples")  # fmt: skip
    return result
