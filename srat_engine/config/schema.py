"""The typed run config: defaults follow the SRAT paper's protocol (Section 5.1, Algorithm 1).

Config flows one way: preset (TOML) -> overrides -> `RunConfig.model_validate` -> run directory
-> engine. Every field is validated here so a bad value fails before any data, GPU or run
directory is touched, with one line that names the field.
"""

from __future__ import annotations

import difflib
import math
from fractions import Fraction
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from srat_engine.config.methods import MethodSpec, canonical_method, get_method
from srat_engine.config.seeds import MAX_SEED
from srat_engine.devices import parse_device
from srat_engine.errors import SratError


def _parse_number(value: Any) -> Any:
    """Accept "8/255" style fractions, the way papers write perturbation budgets."""
    if isinstance(value, str) and "/" in value:
        try:
            return float(Fraction(value.replace(" ", "")))
        except (ValueError, ZeroDivisionError):
            return value  # pydantic reports it as not a number
    return value


# Training computes in float32 (or narrower): a value past float32's largest, e.g. lr=1e39,
# passed every check and then failed inside torch with a traceback
FLOAT32_MAX = 3.4028234663852886e38

Budget = Annotated[
    float, BeforeValidator(_parse_number), Field(ge=0, le=FLOAT32_MAX, allow_inf_nan=False)
]
NonNegative = Annotated[float, Field(ge=0, le=FLOAT32_MAX, allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0, le=FLOAT32_MAX, allow_inf_nan=False)]
Finite = Annotated[float, Field(ge=-FLOAT32_MAX, le=FLOAT32_MAX, allow_inf_nan=False)]


CompileMode = Literal[
    "off", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"
]


def _compile_mode(value: Any) -> Any:
    """`train.compile=true` / `false` mean torch.compile's default mode / no compilation."""
    if isinstance(value, bool):
        return "default" if value else "off"
    return value


def _takes_numbers(annotation: Any) -> bool:
    """Whether a field's type is a number (int, float, or an optional one), not a bool."""
    types = get_args(annotation) or (annotation,)
    return bool({int, float} & set(types)) and bool not in types


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic's lax mode reads true as 1: `--set train.epochs=true` would train one epoch
        field = cls.model_fields.get(info.field_name or "")
        if isinstance(value, bool) and field is not None and _takes_numbers(field.annotation):
            raise ValueError("must be a number")
        return value


class DataConfig(_Section):
    dataset: Literal["cifar10", "cifar100", "svhn", "digits", "gaussian", "synthetic", "folder"] = (
        "cifar10"
    )
    root: str = Field("", description="data directory; empty = <srat home>/data")
    download: bool = False
    imbalance: Literal["none", "step", "exp"] = "exp"
    ratio: Annotated[float, Field(ge=1, allow_inf_nan=False)] = 100.0
    n_max: Annotated[int, Field(ge=0)] = Field(
        0, description="examples of the most frequent class; 0 = smallest class of the source"
    )
    augment: Literal["crop_flip", "crop", "flip", "none"] = "crop_flip"
    pad: Annotated[int, Field(ge=0)] = 4
    policy: Literal["none", "autoaugment", "randaugment"] = Field(
        "none",
        description="drawn per image before `augment`: autoaugment = torchvision's CIFAR-10 "
        "policy, randaugment = RandAugment(2, 8) (AT-BSL-AuA / AT-BSL-RA); images only",
    )
    options: dict[str, float | int | str] = Field(
        default_factory=dict, description="dataset-specific: digits/folder test_per_class, ..."
    )


class ModelConfig(_Section):
    arch: Literal["resnet18", "preact_resnet18", "wrn34_10", "wrn28_10", "small_cnn", "linear"] = (
        "resnet18"
    )
    head: Literal["auto", "linear", "cosine", "robal"] = Field(
        "auto",
        description="auto = cosine (normalised) for LDAM, robal (RoBal's cosine head) for "
        "RoBal, linear otherwise",
    )


class TrainConfig(_Section):
    epochs: Annotated[int, Field(ge=1)] = 200
    batch_size: Annotated[int, Field(ge=1)] = 128
    lr: Positive = 0.1
    momentum: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = 0.9
    weight_decay: NonNegative = 2e-4
    lr_milestones: list[Annotated[int, Field(ge=0)]] = Field(default_factory=lambda: [160, 180])
    lr_gamma: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 0.01
    reweight_epoch: Annotated[int, Field(ge=0)] = 160
    reference_epochs: Annotated[int, Field(ge=1)] = Field(
        200, description="milestones, reweight_epoch and gair.begin_epoch are on this scale"
    )
    precision: Literal["auto", "fp32", "tf32", "bf16"] = Field(
        "auto",
        description="arithmetic of training attacks and updates (evaluation is always full "
        "fp32): fp32 = full fp32 (TF32 off); tf32 = fp32 with TF32 tensor-core convolutions "
        "and matmuls (Ampere+ GPUs; fp32 elsewhere); bf16 = bf16 autocast; auto = bf16 on "
        "CUDA GPUs that support it, fp32 elsewhere",
    )
    compile: Annotated[CompileMode, BeforeValidator(_compile_mode)] = Field(
        "off",
        description="torch.compile the training forward passes: off | default | "
        "reduce-overhead | max-autotune | max-autotune-no-cudagraphs; true = default "
        "(reduce-overhead and max-autotune make CUDA graphs of their own)",
    )
    channels_last: Literal["auto", "on", "off"] = Field(
        "auto", description="NHWC memory format for conv nets; auto = on for CUDA and CPU"
    )
    fold_bn: bool = Field(
        True,
        description="training attacks with BN in eval mode run on a view of the model with "
        "each BN folded into its convolution (same function, fewer passes)",
    )
    cuda_graphs: bool = Field(
        True,
        description="on CUDA, replay each training step as one CUDA graph after a few "
        "warm-up steps (same kernels, far fewer launches); not with a compile mode that "
        "makes graphs of its own",
    )
    checkpoint_every: Annotated[int, Field(ge=1)] = 1
    keep_best: bool = Field(
        True,
        description="also keep checkpoints/best.pt: the weights of the epoch with the best "
        "per-epoch PGD robust accuracy (chosen on the test set), for `srat eval --checkpoint best`",
    )


class AttackConfig(_Section):
    """The training attack: PGD-10, 8/255, step 2/255 (SVHN: step 1/255)."""

    eps: Budget = 8 / 255
    step_size: Budget = 2 / 255
    steps: Annotated[int, Field(ge=0)] = 10
    random_start: bool = True
    bn_mode: Literal["eval", "train"] = Field(
        "eval", description="BatchNorm mode while generating attacks (TRADES/GAIRAT: eval)"
    )
    class_budget: bool = Field(
        False,
        description="class-wise budgets (RobustLT, Zhang et al. 2026): class c's examples are "
        "attacked within eps_c, step step_size * eps_c / eps; evaluation keeps eval.eps",
    )
    budget_alpha: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = Field(
        0.3,
        description="alpha of eps_c = (1 - alpha) eps + t sqrt(log(n_max / n_c)) eps "
        "(RobustLT's CIFAR-10 configs: 0.3; CIFAR-100, Tiny-ImageNet: 0.4)",
    )
    budget_warmup: Annotated[int, Field(ge=0)] = Field(
        0,
        description="epochs of the linear warm-up of the class-wise budgets, on the "
        "reference_epochs scale; 0 = none (RobustLT: beta 0.8 of the epochs)",
    )
    budget_warmup_start: Literal["zero", "eps"] = Field(
        "zero", description="the warm-up ramps from 0 (RobustLT) or from the global eps"
    )
    loss: Literal["reference", "training"] = Field(
        "reference",
        description="what the training attack ascends: reference = the attack of the method's "
        "reference code (summed CE of the logits; TRADES: KL; REAT: its RBL-weighted CE); "
        "training = the run's own prediction loss L of Eq. 5, unweighted (AT-BSL's prior "
        "shift, RoBal's margin logits; LDAM's margins only where CE saturates, focal never: "
        "README), for the pgd, taet and pgd-kl objectives",
    )


class EvalConfig(_Section):
    """Robust evaluation: PGD-20 under l_inf 8/255."""

    eps: Budget = 8 / 255
    step_size: Budget = 2 / 255
    steps: Annotated[int, Field(ge=0)] = 20
    every: Annotated[int, Field(ge=1)] = Field(
        1,
        description="evaluate (standard and robust) every N epochs; the last epoch and the "
        "final evaluation always",
    )
    robust_every: Annotated[int, Field(ge=1)] = Field(
        1,
        description="robust accuracy on the balanced subset every N epochs (on epochs that "
        "eval.every evaluates)",
    )
    robust_per_class: Annotated[int, Field(ge=1)] = 100
    batch_size: Annotated[int, Field(ge=1)] = 512
    cuda_graphs: bool = Field(
        True,
        description="on CUDA, replay each batch's PGD attack and prediction (per-epoch, final "
        "and `srat eval` pgd20/cw) as one CUDA graph after one warm-up batch per shape",
    )
    posthoc_tau: NonNegative = Field(
        0.0,
        description="evaluate the post-hoc adjusted logits z - tau log(pi) (Menon et al. 2021; "
        "AT-BSL's optional inference step); 0 = the raw logits; training never sees it",
    )


class LossConfig(_Section):
    focal_gamma: NonNegative = 1.0
    ldam_max_margin: Positive = 0.5
    ldam_scale: Positive = 30.0
    cb_beta: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = 0.9999
    reduction: Literal["mean", "normalized"] | None = Field(
        None,
        description="mean: (1/N) sum w_i L_i (Eq. 5); normalized: / sum w_i; unset: the "
        "method's own (the reduction of the code it comes from, README method table)",
    )
    sep_lambda: NonNegative = Field(1.0, description="lambda in Eq. 7 (SRAT methods)")
    sep_tau: Positive = Field(0.1, description="temperature tau in Eq. 6 (SRAT methods)")
    trades_beta: NonNegative = Field(
        6.0,
        description="beta of TRADES' CE + beta * KL (Zhang et al. 2019; 6 for CIFAR-10), and "
        "of RoBal's L + beta * KL (its beta_reg: 6 on CIFAR-10-LT, 3 for RoBal-N on CIFAR-100-LT)",
    )
    prior_tau: NonNegative = Field(
        1.0, description="tau of the prior-shifted logits z + tau log(pi) (AT-BSL: 1)"
    )
    class_weights: list[NonNegative] = Field(
        default_factory=list,
        description="explicit per-class weights replacing CB weights, rescaled as they are "
        "(loss.class_weight_scale)",
    )
    class_weight_scale: Literal["classes", "head"] = Field(
        "classes",
        description="the scale of the class weights: classes = they sum to the number of "
        "classes (LDAM-DRW's normalisation); head = the most frequent class weighs 1 (SRAT's "
        "Figures 2 and 5); matters under the mean reduction only",
    )


class GairConfig(_Section):
    func: Literal["tanh", "sigmoid", "discrete"] = "tanh"
    lam: Finite = -1.0
    begin_epoch: Annotated[int, Field(ge=0)] = Field(
        100,
        description="1-based, as GAIRAT's --begin_epoch: weights from this epoch on (its 60 of "
        "120 epochs, on the reference_epochs scale)",
    )


class AwpConfig(_Section):
    """Adversarial weight perturbation, for the methods that carry it (AWP, TRADES-AWP)."""

    gamma: NonNegative = Field(
        5e-3,
        description="relative size of v = gamma ||w|| g / ||g|| per layer; 0 = no AWP (Wu et "
        "al. 2020: 5e-3 for TRADES-AWP, 1e-2 for AT-AWP)",
    )
    warmup: Annotated[int, Field(ge=0)] = Field(
        0,
        description="epochs before AWP starts, on the reference_epochs scale (AT-AWP: 0; "
        "TRADES-AWP: 9 of 200, from its 1-based epoch 10)",
    )


class TaetConfig(_Section):
    """TAET's two stages (Wang et al. 2025)."""

    stage1_epochs: Annotated[int, Field(ge=0)] = Field(
        80,
        description="epochs of natural (clean CE) training before the adversarial stage 2, on "
        "the reference_epochs scale (TAET's 40 of 100)",
    )


class ReatConfig(_Section):
    """REAT's tail feature alignment term (Li et al. 2023, GuanlinLee/REAT loss_functions.py)."""

    tfa_weight: NonNegative = Field(
        1.0,
        description="weight of the TFA term added to the balanced softmax (the reference adds "
        "it with weight 1); 0 = balanced softmax only",
    )
    # the modes of srat_engine.losses.reat.TFA_MODES (not imported: config never imports torch)
    tfa_mode: Literal["reference", "pairwise"] = Field(
        "reference",
        description="reference: the reference's computation, each anchor's KL mean-reduced "
        "over all pairs and features (its size_average quirk); pairwise: one KL per pair",
    )


class RobalConfig(_Section):
    """RoBal's classifier and loss (Wu et al. 2021; wutong16/Adversarial_Long-Tail's RoBal-N
    CIFAR-10-LT configs, cifar10_LT0.02_pgdat_robal_N_{train,eval}.yaml)."""

    scale: Positive = Field(10.0, description="s of the loss's and inference's s * cos")
    gamma: NonNegative = Field(
        0.03125, description="the head's w_c / (||w_c|| + gamma); 0 = exact cosine"
    )
    margin: NonNegative = Field(0.1, description="m of m_c = m + tau_m log(n_c / n_min) / s")
    tau_m: NonNegative = Field(
        0.0, description="tau_m of the class-aware margins (RoBal-N 0, RoBal-R 0.3)"
    )
    tau_b: NonNegative = Field(
        1.2, description="train-time logit adjustment + tau_b log(pi) (RoBal-N 1.2, -R 1.5)"
    )
    tau_p: NonNegative = Field(
        0.1,
        description="post-hoc - tau_p log(pi) of the inference logits s * cos - tau_p log(pi) "
        "(RoBal-N: 0.1 on CIFAR-10-LT, 1.5 on CIFAR-100-LT; RoBal-R: 0)",
    )


class RunConfig(_Section):
    name: str = ""
    method: str = "SRAT-LDAM"
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] = 0
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    attack: AttackConfig = Field(default_factory=AttackConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    gair: GairConfig = Field(default_factory=GairConfig)
    awp: AwpConfig = Field(default_factory=AwpConfig)
    taet: TaetConfig = Field(default_factory=TaetConfig)
    reat: ReatConfig = Field(default_factory=ReatConfig)
    robal: RobalConfig = Field(default_factory=RobalConfig)

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        try:
            return canonical_method(value)
        except SratError as err:
            raise ValueError(str(err)) from None

    @field_validator("device")
    @classmethod
    def _device_syntax(cls, value: str) -> str:
        try:
            return str(parse_device(value))
        except SratError as err:
            raise ValueError(str(err)) from None

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        if self.train.lr_milestones != sorted(self.train.lr_milestones):
            raise ValueError("train.lr_milestones must be increasing")
        return self

    @property
    def spec(self) -> MethodSpec:
        return get_method(self.method)

    def reduction(self) -> str:
        """How weighted per-sample losses become one: loss.reduction, else the method's."""
        return self.loss.reduction or self.spec.reduction

    def head(self) -> str:
        """The classifier head actually used: LDAM needs the cosine (normalised) head, RoBal
        its own (`srat_engine.models.robal.RobalHead`)."""
        if self.model.head != "auto":
            return self.model.head
        return {"ldam": "cosine", "robal": "robal"}.get(self.spec.loss, "linear")


def scaled_epoch(epoch: int, config: RunConfig) -> int:
    """An epoch given on the `reference_epochs` scale, mapped onto `train.epochs`.

    A 20-epoch run of the paper's 200-epoch protocol decays at 16 and 18.
    """
    return round(epoch * config.train.epochs / config.train.reference_epochs)


def _format_error(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(part) for part in first["loc"]) or "config"
    kind = first["type"]
    if kind == "extra_forbidden":
        section = _section_fields(first["loc"][:-1])
        near = difflib.get_close_matches(str(first["loc"][-1]), section, n=1, cutoff=0.6)
        hint = (
            f"; did you mean {'.'.join([*map(str, first['loc'][:-1]), near[0]])}?" if near else ""
        )
        return f"unknown config key {loc!r}{hint}"
    msg = first["msg"].removeprefix("Value error, ")
    if kind == "finite_number" or (
        isinstance(first.get("input"), float) and math.isnan(first["input"])
    ):
        msg = "must be a finite number"
    bound = (first.get("ctx") or {}).get("le")
    if kind == "less_than_equal" and bound == FLOAT32_MAX:
        msg = "must be at most 3.4e38, float32's largest number (training computes in float32)"
    given = first.get("input")
    # pydantic's own messages never repeat the input ("greater than 0" for an input of 0
    # still needs it); a validator's own message may already
    echoed = kind == "value_error" and repr(given) in msg
    shown = "" if isinstance(given, dict) or echoed else f" (got {given!r})"
    where = "" if loc == "config" else f"{loc}: "
    return f"invalid config: {where}{msg}{shown}"


def _section_fields(loc: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] = RunConfig
    for part in loc:
        annotation = model.model_fields[str(part)].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def validate_config(raw: dict[str, Any]) -> RunConfig:
    """Validate a raw (preset + overrides) dict; raise SratError with one line on failure."""
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as err:
        raise SratError(_format_error(err)) from None


def set_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply one `--set section.key=value` to a raw config dict, in place.

    Values parse as TOML (numbers, booleans, lists, quoted strings); anything that is not valid
    TOML is taken as a bare string, so `--set data.dataset=svhn` works without quotes.
    """
    import tomllib

    key, sep, text = assignment.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SratError(f"--set expects key=value (got {assignment!r})")
    try:
        value = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()
    if isinstance(value, str) and value.lower() in {"nan", "+nan", "-nan", "inf", "+inf", "-inf"}:
        value = float(value)
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise SratError(f"--set {key}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def config_toml(config: RunConfig) -> str:
    """The config as an editable TOML document (`srat presets show`, `srat run --dry-run`).
    TOML has no null: a field left unset (None, e.g. loss.reduction: the method's own) is a
    comment under its table, with its description, so a reader still finds the key to set,
    and the document validates to the same config."""
    import tomli_w

    lines = tomli_w.dumps(config.model_dump(mode="json", exclude_none=True)).splitlines()
    for name in type(config).model_fields:
        section = getattr(config, name)
        if not isinstance(section, BaseModel):
            continue
        unset = [
            f"# {key} is unset: {info.description or 'see the README'}"
            for key, info in type(section).model_fields.items()
            if getattr(section, key) is None
        ]
        if unset and f"[{name}]" in lines:
            at = lines.index(f"[{name}]") + 1
            lines[at:at] = unset
    return "\n".join(lines) + "\n"
