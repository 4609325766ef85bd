"""The AutoAttack ensemble srat builds from torchattacks has the reference's standard settings.

The reference: github fra31/auto-attack at commit a39220048b3c9f2cca9a4d3a54604793c68eca7e,
version="standard", norm="Linf". Where each value comes from:

    autoattack/autoattack.py  33-35    APGDAttack(n_iter=100, eot_iter=1, rho=.75, ...)
                              38-39    FABAttack_PT(n_iter=100, ...)
                              42-43    SquareAttack(p_init=.8, n_queries=5000, n_restarts=1,
                                                    resc_schedule=False, ...)
                              46-48    APGDAttack_targeted(n_restarts=1, n_iter=100, eot_iter=1,
                                                           rho=.75, ...)
                              183-216  loss 'ce' for apgd-ce, fab.targeted=True and
                                       n_restarts=1 for fab-t, every attack's seed = get_seed()
                              306-320  set_version('standard'): the order, apgd.n_restarts=1,
                                       n_target_classes=9 (APGD-T, FAB-T), fab.n_restarts=1,
                                       apgd_targeted.n_restarts=1, square.n_queries=5000
    autoattack/fab_pt.py      35-50    alpha_max=0.1, eta=1.05, beta=0.9 (class defaults)
    autoattack/square.py      36-49    loss='margin', targeted=False (class defaults)
                              192-219  p_selection, the schedule of the square size
"""

from __future__ import annotations

from typing import Any

import pytest
from torch import nn

from srat_engine.evaluation.autoattack import AA_ORDER, build_ensemble, standard_settings

# The reference's values, in the reference's own names.
REFERENCE: dict[str, dict[str, Any]] = {
    "apgd-ce": {"norm": "Linf", "n_iter": 100, "n_restarts": 1, "loss": "ce", "eot_iter": 1,
                "rho": 0.75},
    "apgd-t": {"norm": "Linf", "n_iter": 100, "n_restarts": 1, "eot_iter": 1, "rho": 0.75,
               "n_target_classes": 9},
    "fab-t": {"norm": "Linf", "n_iter": 100, "n_restarts": 1, "targeted": True,
              "n_target_classes": 9, "alpha_max": 0.1, "eta": 1.05, "beta": 0.9},
    "square": {"norm": "Linf", "n_queries": 5000, "n_restarts": 1, "p_init": 0.8,
               "loss": "margin", "targeted": False, "resc_schedule": False},
}  # fmt: skip

# The reference's name -> the attribute torchattacks 3.3.0 keeps the same setting in.
TORCHATTACKS_NAME: dict[str, dict[str, str]] = {
    "apgd-ce": {"n_iter": "steps", "rho": "thr_decr"},
    "apgd-t": {"n_iter": "steps", "rho": "thr_decr"},
    # FAB-T: the reference sets targeted=True and loops over the targets; torchattacks' FAB
    # does the same loop under multi_targeted (its `targeted` is the single-target mode)
    "fab-t": {"n_iter": "steps", "targeted": "multi_targeted"},
    "square": {"resc_schedule": "rescale_schedule"},
}

EPS, SEED = 8 / 255, 7


def tiny_model() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 10))


@pytest.fixture(scope="module")
def ensemble() -> dict[str, Any]:
    return dict(build_ensemble(tiny_model(), 10, EPS, SEED))


def test_the_ensemble_runs_the_reference_s_attacks_in_its_order(ensemble: dict[str, Any]) -> None:
    assert list(ensemble) == list(AA_ORDER) == ["apgd-ce", "apgd-t", "fab-t", "square"]
    kinds = {name: type(attack).__name__ for name, attack in ensemble.items()}
    assert kinds == {"apgd-ce": "APGD", "apgd-t": "APGDT", "fab-t": "FAB", "square": "Square"}


@pytest.mark.parametrize(
    ("attack", "setting"),
    [(attack, setting) for attack, table in REFERENCE.items() for setting in table],
)
def test_each_setting_is_the_reference_s(
    ensemble: dict[str, Any], attack: str, setting: str
) -> None:
    name = TORCHATTACKS_NAME[attack].get(setting, setting)
    assert getattr(ensemble[attack], name) == REFERENCE[attack][setting]


def test_eps_and_one_seed_for_every_attack(ensemble: dict[str, Any]) -> None:
    # the reference gives every attack the same seed (get_seed(), autoattack.py 186-215)
    for attack in ensemble.values():
        assert attack.eps == EPS and attack.seed == SEED
        assert attack.attack_mode == "default"  # no torchattacks target mapping on top


def test_square_s_size_schedule_is_not_rescaled_to_the_query_budget(
    ensemble: dict[str, Any],
) -> None:
    """square.py 192-219: after 150 queries p = p_init / 4 in the reference; the rescaled
    schedule (torchattacks' default) would read query 150 as 300 and give p_init / 8."""
    square = ensemble["square"]
    assert square.p_selection(150) == pytest.approx(0.8 / 4)
    assert square.p_selection(5000) == pytest.approx(0.8 / 128)  # 4000 < 5000 <= 6000


@pytest.mark.parametrize(("num_classes", "targets"), [(100, 9), (10, 9), (5, 4)])
def test_target_classes_are_nine_or_every_other_class(num_classes: int, targets: int) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, num_classes))
    built = dict(build_ensemble(model, num_classes, EPS, SEED))
    assert built["apgd-t"].n_target_classes == built["fab-t"].n_target_classes == targets
    recorded = standard_settings(num_classes)
    assert recorded["target_classes"] == targets
    assert recorded["settings"]["apgd-t"]["n_target_classes"] == targets


def test_eval_json_records_the_settings_it_built_with() -> None:
    settings = standard_settings(10)["settings"]
    assert list(settings) == list(AA_ORDER)
    assert settings["square"]["resc_schedule"] is False and settings["square"]["p_init"] == 0.8
    assert settings["fab-t"]["multi_targeted"] is True
    assert all(s["norm"] == "Linf" and s["n_restarts"] == 1 for s in settings.values())
