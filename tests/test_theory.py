"""Section 3 of the paper: the derived optimal bias, the printed Lemma 3.1, the fitted bias."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from cli_harness import Srat, make_invoker

from srat_engine.analysis import theory
from srat_engine.analysis.theory import (
    classwise_errors,
    direct_risk_bias,
    numeric_optimal_bias,
    optimal_bias,
    paper_bias,
    theory_table,
    weighted_risk,
)


@pytest.fixture
def srat(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Srat:
    return make_invoker(capsys, monkeypatch)


def test_biases_by_hand() -> None:
    # rho = 1, K = e^2: log(rho/K) = -2; S = 2 -> b* = -2 / (2 * 2) = -0.5 whatever d is
    k = math.e**2
    assert optimal_bias(1.0, k, 2.0) == pytest.approx(-0.5)
    # the printed formula: 1/2 * (-2) * d / S = -d / 2
    assert paper_bias(1.0, k, 2.0, d=1) == pytest.approx(-0.5)
    assert paper_bias(1.0, k, 2.0, d=4) == pytest.approx(-2.0)
    # rho = K: no shift
    assert optimal_bias(10.0, 10.0, 0.3) == 0.0
    assert theory.separability(eta=2.0, sigma=0.5) == pytest.approx(8.0)
    assert theory.sigma_for(2.0, 8.0) == pytest.approx(0.5)


def test_classwise_errors_by_hand() -> None:
    # b = 0, eta = sigma = 1, d = 1: both errors are Phi(-1) = 0.158655...
    plus, minus = classwise_errors(0.0, eta=1.0, sigma=1.0, d=1)
    assert plus == pytest.approx(0.1586553, abs=1e-6)
    assert minus == pytest.approx(0.1586553, abs=1e-6)
    # d = 4, eta = 0.5, sigma = 1, b = 1: z|+1 ~ N(2, 4): Phi((1 - 2)/2) = Phi(-0.5) = 0.308538
    # z|-1 ~ N(-2, 4): Phi(-(1 + 2)/2) = Phi(-1.5) = 0.0668072
    plus, minus = classwise_errors(1.0, eta=0.5, sigma=1.0, d=4)
    assert plus == pytest.approx(0.3085375, abs=1e-6)
    assert minus == pytest.approx(0.0668072, abs=1e-6)
    # Eq. 2 with priors 1/(K+1), K/(K+1): (rho * minus + K * plus) / (K + 1)
    risk = weighted_risk(1.0, rho=3.0, k=9.0, eta=0.5, sigma=1.0, d=4)
    assert risk == pytest.approx((3 * 0.0668072 + 9 * 0.3085375) / 10, abs=1e-6)


@pytest.mark.parametrize("d", [1, 2, 7, 30])
@pytest.mark.parametrize("rho", [1.0, 3.0, 50.0])
def test_numerical_argmin_of_eq2_is_the_derived_bias(d: int, rho: float) -> None:
    eta, sigma, k = 0.8, 1.3, 20.0
    s_value = theory.separability(eta, sigma)
    found = numeric_optimal_bias(rho, k, eta, sigma, d)
    assert found == pytest.approx(optimal_bias(rho, k, s_value), abs=1e-6)
    # the printed bias is the same for d = 1 and worse (higher risk) for d > 1
    printed = paper_bias(rho, k, s_value, d)
    risk_printed = weighted_risk(printed, rho, k, eta, sigma, d)
    risk_found = weighted_risk(found, rho, k, eta, sigma, d)
    if d == 1:
        assert printed == pytest.approx(found, abs=1e-6)
    else:
        assert risk_printed > risk_found + 1e-6


def test_direct_risk_bias_by_hand() -> None:
    # sorted z = 0, 1, 2 with labels -1, +1, -1 and weights 1, 1, 3. Thresholds:
    # below 0: the two negatives are misclassified (1 + 3 = 4); in (0, 1): the last negative (3);
    # in (1, 2): the positive and the last negative (1 + 3 = 4); above 2: the positive (1).
    z = np.array([2.0, 0.0, 1.0])
    positive = np.array([False, False, True])
    weights = np.array([3.0, 1.0, 1.0])
    assert direct_risk_bias(z, positive, weights) == pytest.approx(3.0)
    # weight 0.5 on the last negative: (0, 1) costs 0.5 and wins, midpoint 0.5
    weights = np.array([0.5, 1.0, 1.0])
    assert direct_risk_bias(z, positive, weights) == pytest.approx(0.5)


@pytest.mark.parametrize("d", [1, 6])
def test_fitted_bias_is_within_5_percent_of_the_derived_optimum(d: int) -> None:
    rhos = [1.0, 100.0]  # far from rho = K, where b* = 0 and a ratio means nothing
    report = theory_table(
        ds=[d], separabilities=[0.5], rhos=rhos, k=10.0, n_train=200_000, n_test_per_class=2000
    )
    for row in report.rows:
        assert abs(row.b_fit_logistic - row.b_optimal) <= 0.05 * abs(row.b_optimal), row
        assert row.fit_cosine > 0.99  # the trained weight points along w = 1
        if d > 1:
            # the printed Lemma 3.1 is d times b*: nowhere near the trained classifier
            assert abs(row.b_fit_logistic - row.b_paper) > 0.5 * abs(row.b_paper)


def test_theory_command_json(srat: Srat) -> None:
    result = srat("theory", "--d", "1,3", "--rhos", "1,10,100", "--n-train", "20000", "--json")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    rows = doc["rows"]
    assert [(r["d"], r["rho"]) for r in rows if r["separability"] == 1.0] == [
        (d, rho) for d in (1, 3) for rho in (1.0, 10.0, 100.0)
    ]
    assert {r["separability"] for r in rows} == {1.0, 0.25}
    for r in rows:
        assert r["b_optimal"] == pytest.approx(optimal_bias(r["rho"], 10.0, r["separability"]))
        assert r["b_paper"] == pytest.approx(r["d"] * r["b_optimal"])
        assert r["fit_relative_error"] is None if r["rho"] == 10.0 else r["fit_relative_error"] >= 0
    assert doc["summary"]["d>1"]["max_rel_paper"] == pytest.approx(2.0)  # (3 b* - b*) / b*
    assert doc["summary"]["d=1"]["max_rel_paper"] == pytest.approx(0.0, abs=1e-12)
    assert "sqrt(d)*sigma" in doc["verdict"]


def test_theory_command_text(srat: Srat) -> None:
    result = srat("theory", "--d", "2", "--S", "2,0.5", "--rhos", "1,5,50", "--n-train", "5000")
    assert result.code == 0, result.err
    assert "class-wise error (%) against rho, d = 2" in result.out
    assert "S=0.5 -1" in result.out and "S=2 +1" in result.out  # the plot's legend
    assert "d times too large" in result.out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--rhos", "1,x"), "--rhos"),
        (("--d", "0"), "--d"),
        (("--S", "-1"), "--S"),
        (("--K", "1"), "--K"),
    ],
)
def test_theory_command_rejects_bad_options(
    srat: Srat, args: tuple[str, ...], message: str
) -> None:
    result = srat("theory", *args)
    assert result.code == 2
    assert message in result.err and len(result.err_lines) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--K", "nan"), "--K"),
        (("--K", "inf"), "--K"),
        (("--S", "nan"), "--S"),
        (("--S", "inf"), "--S"),
        (("--S", "1e-300"), "--S"),
        (("--rhos", "1,nan"), "--rhos"),
        (("--rhos", "inf"), "--rhos"),
        (("--eta", "nan"), "--eta"),
        (("--d", "inf"), "--d"),
        (("--d", "nan"), "--d"),
        (("--d", "100000000"), "--d must be between 1 and"),
        (("--n-train", "100000000000"), "coordinates"),
        (("--K", "1e300"), "--K"),
        (("--seed", "99999999999999999999"), "--seed"),
    ],
)
def test_theory_command_refuses_non_finite_and_out_of_range_values_in_one_line(
    srat: Srat, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...], message: str
) -> None:
    # refused before anything is drawn: a NaN passes every `<` test, a huge d or n_train
    # would ask the allocator for terabytes
    def no_draw(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("drew a sample before checking the options")

    monkeypatch.setattr(theory, "draw_mixture", no_draw)
    result = srat("theory", *args)
    assert result.code == 2, result
    assert len(result.err_lines) == 1, result.err
    assert result.err_lines[0].startswith("error: ") and message in result.err_lines[0]


def test_theory_table_checks_its_inputs_at_entry() -> None:
    from srat_engine.errors import SratError

    good = {"ds": [1], "separabilities": [1.0], "rhos": [1.0], "n_train": 100}
    for bad in (
        {"k": math.nan},
        {"eta": math.inf},
        {"rhos": [math.nan]},
        {"separabilities": [-math.inf]},
        {"ds": [theory.MAX_D + 1]},
        {"ds": [0]},
        {"n_train": theory.MAX_SAMPLE_VALUES + 1},
        {"seed": -1},
    ):
        with pytest.raises(SratError):
            theory_table(**{**good, **bad})
