"""Everything a run derives from its config before it touches data: the `resolved` block.

Per-class train counts, the under-represented classes, class weights, LDAM margins, the
class-wise attack budgets and the epoch schedule scaled to the run's length. `srat run
--dry-run` prints exactly this, and `config.json` records it, so a reader never has to
re-derive what a run trained with.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from srat_engine.config.schema import RunConfig, scaled_epoch
from srat_engine.data.catalog import dataset_info
from srat_engine.data.imbalance import class_counts, under_represented_classes
from srat_engine.errors import SratError
from srat_engine.per_class import (
    class_balanced_weights,
    class_budgets,
    ldam_margins,
    robal_margins,
    scaled_to_head,
    summing_to_class_count,
)
from srat_engine.versions import versions


@dataclass(frozen=True)
class Resolved:
    method: dict[str, Any]
    data_root: str
    num_classes: int
    class_names: list[str]
    input_shape: tuple[int, ...]
    class_counts: list[int]
    train_size: int
    under_classes: list[int]
    class_weights: list[float]  # applied from `reweight_epoch` (drcb) or epoch 0 (cb)
    ldam_margins: list[float] | None
    head: str
    lr_milestones: list[int]
    reweight_epoch: int | None
    gair_begin_epoch: int | None
    versions: dict[str, str]
    # the class-wise attack budgets eps_c once warmed up, and the warm-up's length on this run's
    # epoch scale; None without attack.class_budget (and in run directories made before them)
    class_budgets: list[float] | None = None
    budget_warmup_epochs: int | None = None
    # the first epoch with AWP (None: a method without it, or awp.gamma = 0 as in the reference)
    # and TAET's first adversarial (stage-2) epoch, on this run's epoch scale
    awp_begin_epoch: int | None = None
    taet_stage2_epoch: int | None = None
    # RoBal's per-class margins m_c in cosine units (None: another method)
    robal_margins: list[float] | None = None
    # the test split's examples per class (None in run directories made before it was kept)
    test_class_counts: list[int] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def data_root(config: RunConfig, data_dir: Path) -> Path:
    """The config's data.root, else `data_dir` (a home's `Home.data_dir`, the default)."""
    if config.data.root:
        return Path(config.data.root).expanduser()
    if config.data.dataset == "folder":
        raise SratError("data.root must name your image folder when data.dataset = 'folder'")
    return data_dir


def _check_budgets_fit(config: RunConfig, clip: tuple[float, float] | None) -> None:
    """An L-inf budget wider than the inputs' whole range (`attack.eps=8` meant as 8/255 on
    images in [0, 1]) lets the attack set every pixel to anything: refused, naming the unit."""
    if clip is None:
        return
    low, high = clip
    for section in ("attack", "eval"):
        eps = getattr(config, section).eps
        if eps > high - low:
            raise SratError(
                f"{section}.eps={eps:g} is wider than the whole pixel range [{low:g}, {high:g}] "
                f"of {config.data.dataset} images: budgets are in pixel units (8/255, not 8)"
            )


def _check_padding_fits(config: RunConfig, input_shape: tuple[int, ...]) -> None:
    """The crop's zero padding is at most the image's side: a crop offset past the image
    shows only padding, and a large pad allocated a padded batch of terabytes."""
    if len(input_shape) != 3 or config.data.augment not in {"crop_flip", "crop"}:
        return
    side = max(input_shape[1:])
    if config.data.pad > side:
        raise SratError(
            f"data.pad={config.data.pad} pads more than a whole {config.data.dataset} image "
            f"({side} pixels a side): the crop would show only padding (CIFAR's is 4)"
        )


def _no_training_attack(config: RunConfig) -> str | None:
    """Why the run trains without an attack, None when it attacks."""
    if not config.spec.adversarial:
        return f"{config.spec.name} trains on clean inputs"
    if config.attack.steps == 0:
        return "attack.steps=0"
    return None


def _check_head_scale(config: RunConfig) -> None:
    """loss.class_weight_scale = "head" needs class weights whose scale the loss keeps."""
    spec = config.spec
    if spec.reweight == "none":
        raise SratError(
            f"loss.class_weight_scale='head' has no effect with {spec.name} (no reweighting)"
        )
    if config.reduction() == "normalized":
        raise SratError(
            f"loss.class_weight_scale='head' has no effect under the normalized reduction of "
            f"{spec.name}, which divides by the sum of the weights (set loss.reduction=mean)"
        )


# objectives whose attack is part of the method's definition, so no other loss can stand in
_OWN_ATTACKS: dict[str, str] = {
    "trades": "TRADES' attack ascends its own KL(f(x) || f(x'))",
    "reat": "REAT's attack ascends its own RBL-weighted CE",
}


def _check_attack_loss(config: RunConfig) -> None:
    """attack.loss = "training" needs a training attack whose loss the method leaves open."""
    if config.attack.loss == "reference":
        return
    spec = config.spec
    if (no_attack := _no_training_attack(config)) is not None:
        raise SratError(
            f"attack.loss='training' has no effect without a training attack ({no_attack})"
        )
    if spec.objective in _OWN_ATTACKS:
        raise SratError(
            f"attack.loss='training' does not fit {spec.name}: {_OWN_ATTACKS[spec.objective]} "
            "(leave attack.loss='reference')"
        )


def resolve(config: RunConfig, data_dir: Path) -> Resolved:
    """Derive the resolved block, datasets under `data_dir` unless the config names its
    data.root; raises SratError for configs that cannot run."""
    spec = config.spec
    _check_attack_loss(config)
    root = data_root(config, data_dir)
    info = dataset_info(config.data.dataset, config.data.options, root)
    _check_budgets_fit(config, info.clip)
    _check_padding_fits(config, info.input_shape)
    available = info.train_class_sizes
    n_max = config.data.n_max or min(available)
    counts = class_counts(config.data.imbalance, config.data.ratio, n_max, info.num_classes)
    for cls, (want, have) in enumerate(zip(counts, available, strict=True)):
        if want > have:
            raise SratError(
                f"data.n_max={n_max} asks {want} examples of class {cls}, "
                f"but {config.data.dataset} has only {have}"
            )
    if config.loss.class_weights and spec.reweight == "none":
        raise SratError(
            f"loss.class_weights has no effect with {spec.name} (no reweighting): "
            "use CB-Reweight or a DRCB/SRAT method"
        )
    if config.loss.class_weights:
        if len(config.loss.class_weights) != info.num_classes:
            raise SratError(
                f"loss.class_weights has {len(config.loss.class_weights)} entries, "
                f"{config.data.dataset} has {info.num_classes} classes"
            )
        if not any(config.loss.class_weights):
            raise SratError("loss.class_weights are all 0: no class would be trained on")
        weights = summing_to_class_count(config.loss.class_weights)
    elif spec.reweight != "none":
        weights = class_balanced_weights(counts, config.loss.cb_beta)
    else:
        weights = [1.0] * info.num_classes
    if config.loss.class_weight_scale == "head":
        _check_head_scale(config)
        weights = scaled_to_head(weights, counts)
    margins = None
    if spec.loss == "ldam":
        margins = ldam_margins(counts, config.loss.ldam_max_margin)
    budgets = None
    if config.attack.class_budget:
        if (no_attack := _no_training_attack(config)) is not None:
            raise SratError(
                f"attack.class_budget has no effect without a training attack ({no_attack})"
            )
        budgets = class_budgets(counts, config.attack.eps, config.attack.budget_alpha)
    head = config.head()
    if spec.loss == "robal" and config.eval.posthoc_tau:
        raise SratError(
            "eval.posthoc_tau: RoBal applies its own post-hoc shift (robal.tau_p); leave it 0"
        )
    if (spec.loss == "robal") != (head == "robal"):
        raise SratError(
            f"model.head {head!r} does not fit {spec.name}: RoBal's loss needs its own head "
            "(model.head = 'robal' or 'auto'), and that head trains only with RoBal"
        )
    margins_robal = None
    if spec.loss == "robal":
        margins_robal = robal_margins(
            counts, config.robal.margin, config.robal.tau_m, config.robal.scale
        )
    if config.model.arch == "linear" and len(info.input_shape) != 1:
        raise SratError("model.arch 'linear' takes vectors (data.dataset = 'gaussian')")
    if config.model.arch != "linear" and len(info.input_shape) == 1:
        raise SratError(f"{config.data.dataset} gives vectors: use model.arch = 'linear'")
    return Resolved(
        method=spec.as_dict(),
        data_root=str(root),
        num_classes=info.num_classes,
        class_names=info.names(),
        input_shape=info.input_shape,
        class_counts=counts,
        train_size=sum(counts),
        under_classes=under_represented_classes(counts),
        class_weights=weights,
        ldam_margins=margins,
        head=head,
        lr_milestones=[scaled_epoch(m, config) for m in config.train.lr_milestones],
        reweight_epoch=scaled_epoch(config.train.reweight_epoch, config)
        if spec.reweight == "drcb"
        else (0 if spec.reweight == "cb" else None),
        # GAIRAT's --begin_epoch counts from 1 (`if (epoch + 1) >= args.begin_epoch`)
        gair_begin_epoch=max(0, scaled_epoch(config.gair.begin_epoch, config) - 1)
        if spec.gair
        else None,
        # torchvision only where the dataset's loader imported it: other runs do not use it
        versions=versions(if_loaded=("torchvision",)),
        class_budgets=budgets,
        budget_warmup_epochs=scaled_epoch(config.attack.budget_warmup, config)
        if budgets is not None
        else None,
        awp_begin_epoch=scaled_epoch(config.awp.warmup, config)
        if spec.awp and config.awp.gamma > 0
        else None,
        taet_stage2_epoch=scaled_epoch(config.taet.stage1_epochs, config)
        if spec.objective == "taet"
        else None,
        robal_margins=margins_robal,
        test_class_counts=list(info.test_class_sizes) or None,
    )
