"""The paper's method names, each a composition of a loss, a reweighting scheme and two switches.

SRAT Section 5.1 defines the baselines; every name below maps to the pieces the training loop
composes, so no method has a training loop of its own.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass
from typing import Literal

from srat_engine.errors import SratError

LossName = Literal["ce", "focal", "ldam", "robal"]
ReweightName = Literal["none", "cb", "drcb"]
ObjectiveName = Literal["pgd", "trades", "taet", "reat", "pgd-kl"]


@dataclass(frozen=True)
class MethodSpec:
    """What a method trains with.

    loss: the prediction loss L in Eq. 5 ("robal": CE(s (cos - m_y onehot(y)) + tau_b log(pi))
    on the cosines of RoBal's head, Wu et al. 2021, `models/robal.py`). reweight: "cb"
    applies class-balanced weights from the first epoch, "drcb" defers them to
    `train.reweight_epoch` (Cao et al. 2019).
    separation: adds lambda * L_sep (Eq. 7). gair: GAIRAT's instance weights.
    adversarial: False trains on natural examples (the paper's Section 2 comparison).
    objective: "pgd" attacks the CE of the logits (the reference codes' PGD; the run's own L
    with attack.loss = "training") and updates on the adversarial examples (Madry et al. 2018);
    "trades" attacks KL(f(x) || f(x')) and updates on CE(f(x), y) + beta KL (Zhang et al.
    2019); "taet" trains on clean inputs with L for its first `taet.stage1_epochs` and then
    attacks as "pgd" and updates on TAET's equalisation loss of L(f(x'), y) (Wang et al. 2025);
    "reat" attacks CE weighted by the effective number of the previous epoch's adversarial
    predictions per class and adds REAT's tail feature alignment term to L (Li et al. 2023);
    "pgd-kl" attacks as "pgd" and updates on L(f(x'), y) + beta KL(f(x) || f(x')), beta =
    `loss.trades_beta` (RoBal's `add_reg` with its TRADES regulariser, Wu et al. 2021).
    prior_shift: L sees the prior-shifted logits z + tau log(pi) (balanced softmax, Ren et al.
    2020; AT-BSL, Yue et al. 2024); the attack (unless attack.loss = "training") and
    evaluation see plain z. awp: the update's gradient is taken at adversarially perturbed
    weights w + v from `awp.warmup` on (Wu et al. 2020, `training/awp.py`), whatever the
    objective.
    """

    name: str
    loss: LossName
    reweight: ReweightName
    separation: bool = False
    gair: bool = False
    adversarial: bool = True
    description: str = ""
    objective: ObjectiveName = "pgd"
    prior_shift: bool = False
    # how the code a method comes from reduces weighted losses (weights change nothing when
    # none apply): "normalized" = F.cross_entropy(weight=...) of the LDAM-DRW reference
    reduction: Literal["mean", "normalized"] = "mean"
    awp: bool = False

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


_SPECS: tuple[MethodSpec, ...] = (
    MethodSpec("CE", "ce", "none", description="PGD adversarial training, cross entropy"),
    MethodSpec("Focal", "focal", "none", description="PGD-AT with focal loss"),
    MethodSpec("LDAM", "ldam", "none", description="PGD-AT with LDAM loss, cosine head"),
    MethodSpec(
        "CB-Reweight",
        "ce",
        "cb",
        description="class-balanced weights from epoch 0",
        reduction="normalized",
    ),
    MethodSpec("CB-Focal", "focal", "cb", description="class-balanced focal loss"),
    MethodSpec(
        "CB-LDAM",
        "ldam",
        "cb",
        description="class-balanced LDAM (not in the tables)",
        reduction="normalized",
    ),
    MethodSpec(
        "DRCB-CE", "ce", "drcb", description="deferred class-balanced CE", reduction="normalized"
    ),
    MethodSpec("DRCB-Focal", "focal", "drcb", description="deferred class-balanced focal"),
    MethodSpec(
        "DRCB-LDAM",
        "ldam",
        "drcb",
        description="LDAM-DRW (Cao et al. 2019)",
        reduction="normalized",
    ),
    MethodSpec("SRAT-CE", "ce", "drcb", separation=True, description="SRAT with CE"),
    MethodSpec("SRAT-Focal", "focal", "drcb", separation=True, description="SRAT with focal"),
    MethodSpec("SRAT-LDAM", "ldam", "drcb", separation=True, description="SRAT with LDAM"),
    MethodSpec("GAIRAT", "ce", "none", gair=True, description="geometry-aware instance weights"),
    MethodSpec("Natural", "ce", "none", adversarial=False, description="no attack, CE"),
    MethodSpec(
        "TRADES",
        "ce",
        "none",
        objective="trades",
        description="TRADES (Zhang et al. 2019): KL attack, CE + beta KL update",
    ),
    MethodSpec(
        "AT-BSL",
        "ce",
        "none",
        prior_shift=True,
        description="PGD-AT with balanced softmax (Yue et al. 2024)",
    ),
    MethodSpec(
        "AWP",
        "ce",
        "none",
        awp=True,
        description="PGD-AT with adversarial weight perturbation (Wu et al. 2020)",
    ),
    MethodSpec(
        "TRADES-AWP",
        "ce",
        "none",
        objective="trades",
        awp=True,
        description="TRADES with adversarial weight perturbation (Wu et al. 2020)",
    ),
    MethodSpec(
        "TAET",
        "ce",
        "none",
        objective="taet",
        description="natural CE, then PGD-AT on the equalisation loss (Wang et al. 2025)",
    ),
    MethodSpec(
        "REAT",
        "ce",
        "none",
        objective="reat",
        prior_shift=True,
        description="re-balancing AT: RBL-weighted attack, balanced softmax + TFA (Li et al. 2023)",
    ),
    MethodSpec(
        "RoBal",
        "robal",
        "none",
        objective="pgd-kl",
        description="RoBal (Wu et al. 2021): cosine head, margins, logit adjustment, TRADES term",
    ),
    # reweighted natural training, the natural arm of the paper's Figure 2 reweighting sweep
    MethodSpec(
        "Natural-CB",
        "ce",
        "cb",
        adversarial=False,
        description="no attack, CE, class weights",
        reduction="normalized",  # as CB-Reweight, the adversarial arm of the same sweep
    ),
)

METHODS: dict[str, MethodSpec] = {spec.name: spec for spec in _SPECS}
# Other names the field uses for a registered method.
ALIASES: dict[str, str] = {"PGD-AT": "CE"}

# The rows of the paper's Tables 1-4, in table order.
PAPER_METHODS: tuple[str, ...] = (
    "CE",
    "Focal",
    "LDAM",
    "CB-Reweight",
    "CB-Focal",
    "DRCB-CE",
    "DRCB-Focal",
    "DRCB-LDAM",
    "SRAT-CE",
    "SRAT-Focal",
    "SRAT-LDAM",
)

# Scheme x loss -> method name, for interfaces that pick the two separately.
SCHEMES: tuple[str, ...] = (
    "none", "cb", "drcb", "srat", "gairat", "trades", "bsl", "awp", "trades-awp", "taet",
    "reat", "robal", "natural",
)  # fmt: skip
_BY_SCHEME: dict[tuple[str, str], str] = {}
for _spec in _SPECS:
    # the newer methods get schemes of their own (their names), so that ("none", "ce") and
    # ("trades", "ce") stay CE and TRADES
    if _spec.awp or _spec.objective in ("taet", "reat", "pgd-kl"):
        _scheme = _spec.name.lower()
    elif _spec.objective == "trades":
        _scheme = "trades"
    elif _spec.prior_shift:
        _scheme = "bsl"
    elif not _spec.adversarial:
        # Natural-CB gets its own key: ("natural", "ce") stays plain natural training
        _scheme = "natural" if _spec.reweight == "none" else f"natural-{_spec.reweight}"
    elif _spec.gair:
        _scheme = "gairat"
    elif _spec.separation:
        _scheme = "srat"
    else:
        _scheme = _spec.reweight
    _BY_SCHEME[(_scheme, _spec.loss)] = _spec.name


def canonical_method(name: str) -> str:
    """The registered spelling of a method name, matched case-insensitively."""
    lookup = {key.lower(): key for key in METHODS}
    lookup.update({alias.lower(): target for alias, target in ALIASES.items()})
    key = name.strip().lower()
    if key in lookup:
        return lookup[key]
    near = difflib.get_close_matches(key, list(lookup), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(lookup[n] for n in near)}?" if near else ""
    known = ", ".join([*METHODS, *ALIASES])
    raise SratError(f"unknown method {name!r}{hint} (known: {known})")


def get_method(name: str) -> MethodSpec:
    return METHODS[canonical_method(name)]


def compose_method(scheme: str, loss: str) -> str:
    """The method for a scheme (none/cb/drcb/srat/gairat/trades/bsl/natural, and awp/trades-awp/
    taet/reat, robal) and a loss (ce/focal/ldam, robal: RoBal's)."""
    try:
        return _BY_SCHEME[(scheme.lower(), loss.lower())]
    except KeyError:
        combos = ", ".join(f"{s}+{lo}" for s, lo in _BY_SCHEME)
        raise SratError(f"no method for scheme {scheme!r} with loss {loss!r} ({combos})") from None
