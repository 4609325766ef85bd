"""The per-class constants a run resolves from its class counts, against hand-computed values,
and the check that computing them (resolving a config) loads no torch."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from fresh_process import python_json

from srat_engine.config.resolve import resolve
from srat_engine.config.schema import set_override, validate_config
from srat_engine.errors import SratError
from srat_engine.per_class import (
    check_class_counts,
    class_balanced_weights,
    class_budgets,
    ldam_margins,
    robal_margins,
    scaled_to_head,
    summing_to_class_count,
)
from srat_engine.runs.home import Home

EPS = 8 / 255


def close(got: list[float], expected: list[float], rel: float = 1e-12) -> bool:
    return len(got) == len(expected) and all(
        g == pytest.approx(e, rel=rel, abs=1e-15) for g, e in zip(got, expected, strict=True)
    )


# ---------------------------------------------------------------- counts


def test_class_counts_must_be_positive_and_present() -> None:
    check_class_counts([1, 5], "f")
    with pytest.raises(ValueError, match="f needs at least one class count"):
        check_class_counts([], "f")
    with pytest.raises(ValueError, match="must be positive"):
        check_class_counts([3, 0], "f")


# ---------------------------------------------------------------- LDAM margins


def test_ldam_margins_hand_computed() -> None:
    # 100^(1/4) = sqrt(10): m = [0.5 / sqrt(10), 0.5] = [0.1581, 0.5]
    assert close(ldam_margins([100, 1], max_margin=0.5), [0.5 / math.sqrt(10), 0.5])
    # fourth roots 2, 1, 3 -> m proportional to 1/2, 1, 1/3, largest = 0.5
    assert close(ldam_margins([16, 1, 81], max_margin=0.5), [0.25, 0.5, 0.5 / 3])


def test_ldam_margins_reject_bad_input() -> None:
    for counts in ([], [10, 0]):
        with pytest.raises(ValueError):
            ldam_margins(counts)
    with pytest.raises(ValueError):
        ldam_margins([10, 5], max_margin=-0.1)


# ---------------------------------------------------------------- class-balanced weights


def test_class_balanced_weights_hand_computed() -> None:
    beta = 0.9999
    e_head = (1 - beta**5000) / (1 - beta)  # (1 - 0.60653) / 1e-4 = 3934.7
    e_tail = (1 - beta**50) / (1 - beta)  # (1 - 0.99501) / 1e-4 = 49.88
    inv_sum = 1 / e_head + 1 / e_tail
    expected = [2 * (1 / e_head) / inv_sum, 2 * (1 / e_tail) / inv_sum]  # [0.02504, 1.97496]
    got = class_balanced_weights([5000, 50], beta=beta)
    assert close(got, expected, rel=1e-9)
    assert sum(got) == pytest.approx(2.0)
    assert got[0] == pytest.approx(0.02504, abs=1e-5)


def test_class_balanced_weights_limits() -> None:
    assert class_balanced_weights([5000, 50, 7], beta=0.0) == [1.0, 1.0, 1.0]
    # beta = 1: effective number = n, so w proportional to [1/5000, 1/50], scaled to sum 2
    assert close(class_balanced_weights([5000, 50], beta=1.0), [2 * 50 / 5050, 2 * 5000 / 5050])


def test_class_balanced_weights_reject_bad_input() -> None:
    with pytest.raises(ValueError):
        class_balanced_weights([10, 0])
    with pytest.raises(ValueError):
        class_balanced_weights([10, 5], beta=1.5)
    with pytest.raises(ValueError):
        class_balanced_weights([])


def test_weights_summing_to_class_count_hand_computed() -> None:
    # [1, 1, 78, 78] * 4 / 158 = [0.025316, 0.025316, 1.974684, 1.974684]
    got = summing_to_class_count([1.0, 1.0, 78.0, 78.0])
    assert close(got, [4 / 158, 4 / 158, 312 / 158, 312 / 158])
    assert got[0] == pytest.approx(0.025316, abs=1e-6)
    # [1e308, 1e308]: finite weights whose sum is not (fsum raised OverflowError)
    for bad in ([], [0.0, 0.0], [1.0, -1.0], [1.0, float("nan")], ["x"], [1e308, 1e308]):
        with pytest.raises(ValueError):
            summing_to_class_count(bad)  # type: ignore[arg-type]


def test_class_balanced_step_ratio_weights_are_the_class_balanced_weights() -> None:
    """SRAT Figure 5: tail weight "78" (the class-balanced tail/head ratio of Step-100) with
    head weight 1 is the class-balanced weighting itself once both sum to C."""
    counts = [5000] * 5 + [50] * 5
    balanced = class_balanced_weights(counts)
    ratio = balanced[-1] / balanced[0]
    assert ratio == pytest.approx(78.9, abs=0.05)
    assert close(summing_to_class_count([1.0] * 5 + [ratio] * 5), balanced, rel=1e-9)


def test_class_balanced_weights_average_0171_on_cifar10_exp100() -> None:
    # under the "mean" reduction a batch's weights average sum_c pi_c w_c: 0.171 for CIFAR-10
    # Exp-100 (the README's figure), under "normalized" 1
    counts = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    weights = class_balanced_weights(counts, 0.9999)
    mean = sum(n * w for n, w in zip(counts, weights, strict=True)) / sum(counts)
    assert mean == pytest.approx(0.171, abs=5e-4)


# ---------------------------------------------------------------- RoBal margins


def test_robal_margins_hand_computed() -> None:
    # 0.1 + 0.3 * log([100, 10, 1]) / 10 = [0.238155, 0.169078, 0.1]
    got = robal_margins([100, 10, 1], m=0.1, tau_m=0.3, scale=10.0)
    assert close(got, [0.1 + 0.03 * math.log(100), 0.1 + 0.03 * math.log(10), 0.1])
    assert got[0] == pytest.approx(0.238155, abs=1e-6)
    assert robal_margins([100, 10, 1]) == [0.1, 0.1, 0.1]
    with pytest.raises(ValueError):
        robal_margins([10, 0])
    with pytest.raises(ValueError):
        robal_margins([10, 5], scale=0.0)


# ---------------------------------------------------------------- RobustLT budgets


def test_class_budgets_hand_computed_three_classes() -> None:
    # pi = [4/7, 2/7, 1/7]; s = sqrt(ln 2) * [0, 1, sqrt 2]; S = sqrt(ln 2) (2 + sqrt 2) / 7
    # t s_c = alpha * 7 * [0, 1, sqrt 2] / (2 + sqrt 2): with alpha = 0.5, [0, 1.02513, 1.44975]
    got = class_budgets([400, 200, 100], eps=EPS, alpha=0.5)
    expected = [0.5, 0.5 + 3.5 / (2 + math.sqrt(2)), 0.5 + 3.5 * 2**0.5 / (2 + 2**0.5)]
    assert close(got, [e * EPS for e in expected], rel=1e-9)
    assert got[2] / EPS == pytest.approx(1.949747, abs=1e-6)
    assert (4 * got[0] + 2 * got[1] + got[2]) / 7 == pytest.approx(EPS)  # the weighted mean


def test_class_budgets_two_classes() -> None:
    # pi = [3/4, 1/4]: t s_1 = alpha / (1/4), so eps_c / eps = [1 - alpha, 1 - alpha + 4 alpha]
    assert close(class_budgets([300, 100], eps=EPS, alpha=0.3), [0.7 * EPS, 1.9 * EPS], rel=1e-9)


def test_class_budgets_balanced_or_alpha_zero_give_eps() -> None:
    assert class_budgets([50, 50, 50], EPS, alpha=0.3) == [EPS] * 3
    assert class_budgets([500, 50, 5], EPS, alpha=0.0) == [EPS] * 3


def test_class_budgets_reject_bad_input() -> None:
    with pytest.raises(ValueError):
        class_budgets([10, 5], EPS, alpha=1.5)
    with pytest.raises(ValueError):
        class_budgets([10, 0], EPS, alpha=0.3)
    with pytest.raises(ValueError):
        class_budgets([], EPS, alpha=0.3)
    with pytest.raises(ValueError):
        class_budgets([10, 5], -1.0, alpha=0.3)


# ---------------------------------------------------------------- without torch


def test_resolving_every_per_class_constant_loads_no_torch(tmp_path: Path) -> None:
    """A config that needs each constant (class-balanced weights, LDAM margins, RobustLT
    budgets; RoBal's margins) resolves in a fresh process that never imports torch."""
    script = """
import json, sys
from pathlib import Path
from srat_engine.config.prepare import prepare
from srat_engine.runs.home import Home
home = Home(Path(sys.argv[1]))
out = []
for preset, extra in (("demo", ["attack.class_budget=true", "method=DRCB-LDAM"]),
                      ("demo", ["method=RoBal"])):
    prepared = prepare(preset=preset, overrides=tuple(extra), preset_dirs=home.preset_dirs,
                       data_dir=home.data_dir)
    r = prepared.resolved
    out.append([r.class_weights, r.ldam_margins, r.class_budgets, r.robal_margins])
heavy = sorted({n.split(".")[0] for n in sys.modules} & {"torch", "torchvision", "numpy"})
print(json.dumps({"heavy": heavy, "resolved": out}))
"""
    report = python_json(script, str(tmp_path))
    assert report["heavy"] == []
    (weights, margins, budgets, _), (_, _, _, robal) = report["resolved"]
    assert len(weights) == 10 and max(margins) == pytest.approx(0.5)
    assert budgets is not None and robal is not None


# ---------------------------------------------------------------- the weights' scale


def test_weights_scaled_to_the_head_hand_computed() -> None:
    # the head is the class of the largest count: class 0 here, class 1 below
    assert scaled_to_head([0.5, 1.0, 2.0], [30, 10, 5]) == [1.0, 2.0, 4.0]
    assert scaled_to_head([0.5, 1.0, 2.0], [10, 30, 5]) == [0.5, 1.0, 2.0]
    assert scaled_to_head([2.0, 4.0, 8.0], [30, 30, 5]) == [1.0, 2.0, 4.0]  # tie: the first
    for weights, counts, match in (
        ([0.0, 1.0], [30, 10], "class 0"),
        ([1.0, 2.0], [30, 10, 5], "3 class counts"),
        ([1.0, 2.0], [30, 0], "positive"),
    ):
        with pytest.raises(ValueError, match=match):
            scaled_to_head(weights, counts)


def test_class_balanced_weights_scaled_to_the_head_average_3_38_on_cifar10_exp100() -> None:
    # w_c / w_head = (1 - beta^5000) / (1 - beta^n_c): 1 for the head, 78.89 for the tail of 50
    counts = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    weights = scaled_to_head(class_balanced_weights(counts, 0.9999), counts)
    assert weights[0] == 1.0
    assert weights[-1] == pytest.approx((1 - 0.9999**5000) / (1 - 0.9999**50), rel=1e-9)
    assert weights[-1] == pytest.approx(78.89, abs=0.005)
    mean = sum(n * w for n, w in zip(counts, weights, strict=True)) / sum(counts)
    assert mean == pytest.approx(3.3786, abs=5e-4)  # against 0.171 summing to C (above)


def _resolved_weights(method: str, *assignments: str) -> tuple[list[float], list[int]]:
    raw: dict[str, object] = {"method": method}  # the defaults: digits
    for assignment in assignments:
        set_override(raw, assignment)
    resolved = resolve(validate_config(raw), Home.from_env().data_dir)
    return resolved.class_weights, resolved.class_counts


def test_a_run_scales_its_class_weights_to_the_head_on_request() -> None:
    summed, counts = _resolved_weights("SRAT-LDAM")
    headed, _ = _resolved_weights("SRAT-LDAM", "loss.class_weight_scale=head")
    head = counts.index(max(counts))
    assert sum(summed) == pytest.approx(len(counts))
    assert headed[head] == 1.0
    assert close(headed, [w / summed[head] for w in summed], rel=1e-9)  # the same ratios
    # explicit weights stand as given when the head already weighs 1
    explicit = [1.0] * 5 + [78.0] * 5
    given, _ = _resolved_weights(
        "SRAT-CE", f"loss.class_weights={explicit}", "loss.class_weight_scale=head"
    )
    assert given == explicit


@pytest.mark.parametrize(
    ("method", "assignments", "match"),
    [
        ("CE", (), "no effect with CE .no reweighting."),
        ("DRCB-LDAM", (), "normalized reduction of DRCB-LDAM"),
        ("SRAT-LDAM", ("loss.reduction=normalized",), "normalized reduction of SRAT-LDAM"),
    ],
)
def test_a_head_scale_that_cannot_act_is_refused(
    method: str, assignments: tuple[str, ...], match: str
) -> None:
    with pytest.raises(SratError, match=match):
        _resolved_weights(method, "loss.class_weight_scale=head", *assignments)
    _resolved_weights(method, *assignments)  # the default scale stands


def test_the_head_scale_acts_under_a_mean_reduction_of_drcb() -> None:
    weights, counts = _resolved_weights(
        "DRCB-LDAM", "loss.class_weight_scale=head", "loss.reduction=mean"
    )
    assert weights[counts.index(max(counts))] == 1.0 and max(weights) > 1.0
