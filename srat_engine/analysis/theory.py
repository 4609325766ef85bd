"""Section 3 of the SRAT paper: the optimal linear classifier on the Gaussian mixture of Eq. 1.

Setting (Eq. 1 and the text after it). y ∈ {+1, -1}; x | y ~ N(y·mu, sigma² I_d) with
mu = (eta, ..., eta) ∈ R^d; the training prior is Pr(y=+1) = K·Pr(y=-1) (K > 1, so "-1" is
the under-represented class) and the test prior is balanced. The classifier is
f(x) = sign(w·x - b) and the separability is S = eta / sigma². Reweighting multiplies the
loss of class "-1" by rho. Lemma 3.1 minimises the reweighted 0-1 risk (Eq. 2)

    R(w, b) = rho·Pr(f(x) != y | y=-1)·Pr(y=-1) + Pr(f(x) != y | y=+1)·Pr(y=+1).

Derivation of the optimal bias (ours). With w = 1 (all ones; Lemma 3.1's first step, and the
Bayes argument below), z = 1·x is a sum of d independent N(±eta, sigma²) coordinates, so

    z | y ~ N(y·d·eta, d·sigma²),   standard deviation s = sqrt(d)·sigma.

Up to the positive factor Pr(y=-1),

    R(b) ∝ rho·Φ(-(b + d·eta)/s) + K·Φ((b - d·eta)/s),
    R'(b) = [-rho·φ((b + d·eta)/s) + K·φ((b - d·eta)/s)] / s.

R'(b) = 0  ⇔  log rho - (b + d·eta)²/(2s²) = log K - (b - d·eta)²/(2s²)
           ⇔  log(rho/K) = 4·b·d·eta / (2s²) = 2·b·eta / sigma²
           ⇔  b* = (sigma² / (2·eta))·log(rho/K) = log(rho/K) / (2S).

The stationary point is the minimum: K·φ((b - d·eta)/s) / (rho·φ((b + d·eta)/s)) =
(K/rho)·exp(2·b·eta/sigma²) increases in b, so R' changes sign once, from - to +. b* does not
depend on d. Cross-check: the Bayes rule for the reweighted prior predicts +1 iff
K·p(x|+1) > rho·p(x|-1) ⇔ log(K/rho) + (|x+mu|² - |x-mu|²)/(2sigma²) > 0 ⇔
(2·eta/sigma²)·1·x > log(rho/K) ⇔ 1·x > b*: the same w = 1 and the same b*, optimal among
all classifiers, not only linear ones.

The paper prints b = ½·log(rho/K)·d·sigma²/eta = ½·log(rho/K)·d/S = d·b*. Its proof
(Appendix A.3.1) standardises z with d·sigma, the standard deviation of d copies of one
coordinate, instead of sqrt(d)·sigma for d independent ones; the same algebra with s = d·sigma
gives log(rho/K) = 2·b·eta/(d·sigma²), i.e. the printed formula. The two agree for d = 1; for
d > 1 the printed bias is d times too large, has a higher reweighted risk than b*, and is not
where a trained classifier ends up (`theory_table` fits one). At rho = K both give b = 0, so
Theorem 3.2's reweighted classifier is unaffected; Theorem 3.1's Z-scores (Eq. 10-11) carry
the same slip, and redone with sqrt(d)·sigma its "K large enough" condition reads
log K > 2·d·eta²/(sigma_1·sigma_2) instead of 2·eta²/(sigma_1·sigma_2).

Fitted bias. Two classifiers are trained on one sample of the imbalanced training mixture
(drawn with `srat_engine.data` 's Eq. 1 source), with weight rho on every "-1" example:
  * weighted logistic regression on all d + 1 parameters (Newton's method, no penalty),
    rescaled to w = 1: b = -c / mean(w). It is consistent for b* here because the reweighted
    posterior log-odds, log(K/rho) + (2·eta/sigma²)·1·x, is exactly linear in x (shared
    isotropic covariance), so the logistic model is well specified; not true in general.
  * direct minimisation of the weighted empirical 0-1 risk over b with w = 1 fixed (exact,
    by sorting z); it converges more slowly (n^(-1/3)) and is shown as a second check.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from srat_engine.config.seeds import check_seed
from srat_engine.errors import SratError


def std_normal_cdf(x: float) -> float:
    """Φ(x), the standard normal CDF, through erfc (accurate in both tails)."""
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def separability(eta: float, sigma: float) -> float:
    """S = eta / sigma² (the paper's definition after Eq. 1; sigma is a standard deviation)."""
    return eta / sigma**2


def sigma_for(eta: float, separability_s: float) -> float:
    """The standard deviation giving separability S at mean eta: sigma = sqrt(eta / S)."""
    return math.sqrt(eta / separability_s)


def optimal_bias(rho: float, k: float, separability_s: float) -> float:
    """b* = log(rho/K) / (2S): the bias minimising Eq. 2's reweighted risk (derivation above).

    Hand example: rho = 1, K = e², S = 2 gives b* = -2 / 4 = -0.5, for every d.
    """
    return math.log(rho / k) / (2.0 * separability_s)


def paper_bias(rho: float, k: float, separability_s: float, d: int) -> float:
    """Lemma 3.1 as printed: b = ½·log(rho/K)·d/S (SRAT paper, Section 3; = d·b*)."""
    return 0.5 * math.log(rho / k) * d / separability_s


def classwise_errors(b: float, eta: float, sigma: float, d: int) -> tuple[float, float]:
    """(Pr(f(x) != y | y=+1), Pr(f(x) != y | y=-1)) of f(x) = sign(1·x - b) under Eq. 1.

    z | y ~ N(y·d·eta, d·sigma²): error(+1) = Φ((b - d·eta)/s), error(-1) = Φ(-(b + d·eta)/s)
    with s = sqrt(d)·sigma.
    """
    s = math.sqrt(d) * sigma
    return std_normal_cdf((b - d * eta) / s), std_normal_cdf(-(b + d * eta) / s)


def weighted_risk(b: float, rho: float, k: float, eta: float, sigma: float, d: int) -> float:
    """Eq. 2 with w = 1 and the training prior Pr(-1) = 1/(K+1), Pr(+1) = K/(K+1)."""
    err_plus, err_minus = classwise_errors(b, eta, sigma, d)
    return (rho * err_minus + k * err_plus) / (k + 1.0)


def numeric_optimal_bias(rho: float, k: float, eta: float, sigma: float, d: int) -> float:
    """argmin_b of `weighted_risk`, found numerically (bounded Brent), without using b*.

    The risk is unimodal in b (see the module docstring), so a bracket wide enough to hold the
    paper's bias, the class means and several standard deviations beyond holds the minimum.
    """
    from scipy.optimize import minimize_scalar

    s = math.sqrt(d) * sigma
    half_width = abs(paper_bias(rho, k, separability(eta, sigma), d)) + d * eta + 10.0 * s
    found = minimize_scalar(
        lambda b: weighted_risk(b, rho, k, eta, sigma, d),
        bounds=(-half_width, half_width),
        method="bounded",
        options={"xatol": 1e-10 * max(1.0, half_width)},
    )
    return float(found.x)


# --------------------------------------------------------------------------- fitting


def fit_weighted_logistic(
    x: np.ndarray, positive: np.ndarray, weights: np.ndarray, *, max_iter: int = 50
) -> tuple[np.ndarray, float]:
    """Weighted logistic regression P(y=+1|x) = sigmoid(w·x + c) by Newton's method.

    Minimises Σ_i weights_i·logloss_i with no penalty (a penalty would bias c, the quantity we
    measure); Newton steps are halved until the loss decreases, which keeps nearly separable
    samples from overshooting. Returns (w, c).
    """
    n, d = x.shape
    design = np.hstack([x, np.ones((n, 1))])
    target = positive.astype(np.float64)
    theta = np.zeros(d + 1)
    total = float(weights.sum())

    def loss(params: np.ndarray) -> float:
        logits = design @ params
        # log(1 + e^-m) with m = ±logits, stable for large |logits|
        margin = np.where(target > 0, logits, -logits)
        return float(weights @ np.logaddexp(0.0, -margin)) / total

    current = loss(theta)
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(-(design @ theta)))
        grad = design.T @ (weights * (p - target)) / total
        curvature = weights * p * (1.0 - p) / total
        hessian = design.T @ (design * curvature[:, None]) + 1e-12 * np.eye(d + 1)
        step = np.linalg.solve(hessian, grad)
        scale = 1.0
        while scale > 1e-6:
            candidate = theta - scale * step
            value = loss(candidate)
            if value <= current:
                break
            scale /= 2.0
        else:
            break  # no decrease along the Newton direction: at the optimum to precision
        theta, previous, current = candidate, current, value
        if previous - current < 1e-13 and float(np.abs(scale * step).max()) < 1e-9:
            break
    return theta[:d], float(theta[d])


def logistic_bias(w: np.ndarray, c: float) -> float:
    """The bias of sign(w·x + c) on the w = 1 scale: sign(mean(w)·(1·x) + c) -> b = -c/mean(w)."""
    return -c / float(np.mean(w))


def direct_risk_bias(z: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> float:
    """argmin_b Σ_i weights_i·[sign(z_i - b) != y_i], exactly, by sorting z (w = 1 fixed).

    With the threshold just above the j-th smallest z, the misclassified are the positives at or
    below it and the negatives above it; every gap between sorted values is tried and the
    midpoint of the best gap returned.
    """
    order = np.argsort(z, kind="stable")
    zs, pos, wt = z[order], positive[order], weights[order]
    pos_below = np.concatenate([[0.0], np.cumsum(np.where(pos, wt, 0.0))])
    neg_weight = np.where(pos, 0.0, wt)
    neg_above = float(neg_weight.sum()) - np.concatenate([[0.0], np.cumsum(neg_weight)])
    risk = pos_below + neg_above  # risk[j]: threshold between zs[j-1] and zs[j]
    best = int(np.argmin(risk))
    if best == 0:
        return float(zs[0]) - 1.0
    if best == len(zs):
        return float(zs[-1]) + 1.0
    return 0.5 * float(zs[best - 1] + zs[best])


# --------------------------------------------------------------------------- simulation


@dataclass(frozen=True)
class TheoryRow:
    """One (d, S, rho) cell: the biases and the class-wise errors on a balanced test set."""

    d: int
    separability: float
    sigma: float
    rho: float
    b_paper: float
    b_optimal: float
    b_numeric: float
    b_fit_logistic: float
    b_fit_direct: float
    fit_cosine: float  # cosine between the fitted w and the all-ones direction
    risk_paper: float  # Eq. 2 at the paper's bias (w = 1)
    risk_optimal: float  # Eq. 2 at b*
    err_plus: float  # analytic class-wise test errors of sign(1·x - b*)
    err_minus: float
    fit_err_plus: float  # the logistic fit's errors on a fresh balanced test sample
    fit_err_minus: float

    @property
    def fit_relative_error(self) -> float | None:
        """|b_fit - b*| / |b*|; None where b* = 0 (rho = K), where a ratio means nothing."""
        if abs(self.b_optimal) < 1e-12:
            return None
        return abs(self.b_fit_logistic - self.b_optimal) / abs(self.b_optimal)


@dataclass(frozen=True)
class TheoryReport:
    k: float
    eta: float
    n_train: int
    n_test_per_class: int
    seed: int
    rows: list[TheoryRow] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        for row, out in zip(self.rows, doc["rows"], strict=True):
            out["fit_relative_error"] = row.fit_relative_error
        return doc


def draw_mixture(
    d: int, eta: float, sigma: float, n_plus: int, n_minus: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """n_plus examples of "+1" and n_minus of "-1" from Eq. 1, via the engine's gaussian source.

    Returns (x [n, d] float64, positive [n] bool). The source draws equal class sizes, so it
    is asked for max(n_plus, n_minus) per class and each class is cut to its count (the draws
    are i.i.d., so a prefix is a sample).
    """
    from srat_engine.data.sources import load_splits

    per_class = max(n_plus, n_minus)
    splits = load_splits(
        "gaussian",
        Path("."),
        d=d,
        eta=eta,
        sigma=sigma,
        train_per_class=per_class,
        test_per_class=1,
        seed=seed,
    )
    x = splits.train_x.double().numpy()
    label = splits.train_y.numpy()  # class 0 is y = +1, class 1 is y = -1
    plus = np.flatnonzero(label == 0)[:n_plus]
    minus = np.flatnonzero(label == 1)[:n_minus]
    chosen = np.concatenate([plus, minus])
    return x[chosen], label[chosen] == 0


# What `theory_table` accepts. The sample holds n_train·d coordinates several times over (the
# float32 draw, its float64 copy, the fits' design matrix and its weighted copy: ~40 bytes a
# coordinate, measured), and the logistic fit solves a (d+1)² Newton system, n·d² work a step:
# d = 400 at the default n_train takes two minutes and 1.7 GB. Beyond these caps a typo (an
# extra zero or three) would ask for terabytes and die in the allocator.
MAX_D = 1000
MAX_SAMPLE_VALUES = 10**8  # n_train·d coordinates, about 4 GB in all
# Scales the simulation resolves: the coordinates are float32 (the engine's gaussian source),
# so S and eta far from 1 overflow sigma = sqrt(eta/S) or bury the class means in rounding,
# and class weights rho far from 1 leave the other class below the fits' float64 precision.
SCALE_RANGE = (1e-3, 1e3)  # S and eta
RHO_RANGE = (1e-6, 1e6)


def _check_range(name: str, values: list[float], low: float, high: float, why: str) -> None:
    """Each value finite and in [low, high]; one SratError line naming the option otherwise."""
    for value in values:
        if not math.isfinite(value) or not low <= value <= high:
            raise SratError(f"{name} must be between {low:g} and {high:g} (got {value:g}): {why}")


def check_theory_inputs(
    *,
    ds: list[int],
    separabilities: list[float],
    rhos: list[float],
    k: float,
    eta: float,
    n_train: int,
    n_test_per_class: int,
    seed: int,
) -> None:
    """Refuse (one SratError line) what `theory_table` cannot simulate, before it draws
    anything: NaN and infinite values (they pass every `<` test and fail deep inside the
    fits), scales outside the ranges above, and samples too large to hold (MAX_D,
    MAX_SAMPLE_VALUES)."""
    if not ds or not separabilities or not rhos:
        raise SratError("--d, --S and --rhos each need at least one value")
    for d in ds:
        if not 1 <= d <= MAX_D:
            raise SratError(
                f"--d must be between 1 and {MAX_D} (got {d}): the logistic fit solves a "
                "(d+1)x(d+1) system over n_train·d coordinates at every step"
            )
    if n_train < 2 or n_test_per_class < 1:
        raise SratError("--n-train must be >= 2 and the test sample >= 1 per class")
    if n_train * max(ds) > MAX_SAMPLE_VALUES:
        raise SratError(
            f"--n-train {n_train} with --d {max(ds)} is {n_train * max(ds):,} coordinates; "
            f"at most {MAX_SAMPLE_VALUES:,} fit in memory (about 40 bytes each): lower one"
        )
    floats = "the simulated coordinates are float32"
    _check_range("--S", separabilities, *SCALE_RANGE, floats)
    _check_range("--eta", [eta], *SCALE_RANGE, floats)
    _check_range("--rhos", rhos, *RHO_RANGE, "the fits weigh the classes in float64")
    if not math.isfinite(k) or k <= 0:
        raise SratError(f"--K must be a finite number > 0 (got {k:g})")
    if n_train / (k + 1.0) < 1.0 or n_train * k / (k + 1.0) < 1.0:
        raise SratError(
            f"--K {k:g} leaves no example of one class in --n-train {n_train}: raise --n-train"
        )
    check_seed(seed)


def theory_table(
    *,
    ds: list[int],
    separabilities: list[float],
    rhos: list[float],
    k: float = 10.0,
    eta: float = 1.0,
    n_train: int = 100_000,
    n_test_per_class: int = 20_000,
    seed: int = 0,
) -> TheoryReport:
    """Every (d, S, rho): the paper's bias, b*, the numeric argmin, both fits, and errors.

    One training sample per (d, S) with Pr(+1) = K·Pr(-1) (n_train examples in all), refitted
    for each rho with weight rho on the "-1" examples; one balanced test sample per (d, S).
    """
    check_theory_inputs(
        ds=ds, separabilities=separabilities, rhos=rhos, k=k, eta=eta, n_train=n_train,
        n_test_per_class=n_test_per_class, seed=seed,
    )  # fmt: skip
    n_minus = max(1, round(n_train / (k + 1.0)))
    n_plus = max(1, n_train - n_minus)
    rows: list[TheoryRow] = []
    for d in ds:
        for s_value in separabilities:
            sigma = sigma_for(eta, s_value)
            cell_seed = seed + 1000 * d + round(1000 * s_value)
            x, positive = draw_mixture(d, eta, sigma, n_plus, n_minus, cell_seed)
            x_test, pos_test = draw_mixture(
                d, eta, sigma, n_test_per_class, n_test_per_class, cell_seed + 1
            )
            z = x.sum(axis=1)
            for rho in rhos:
                weights = np.where(positive, 1.0, float(rho))
                w, c = fit_weighted_logistic(x, positive, weights)
                predicted = x_test @ w + c > 0
                b_star = optimal_bias(rho, k, s_value)
                err_plus, err_minus = classwise_errors(b_star, eta, sigma, d)
                rows.append(
                    TheoryRow(
                        d=d,
                        separability=s_value,
                        sigma=sigma,
                        rho=float(rho),
                        b_paper=paper_bias(rho, k, s_value, d),
                        b_optimal=b_star,
                        b_numeric=numeric_optimal_bias(rho, k, eta, sigma, d),
                        b_fit_logistic=logistic_bias(w, c),
                        b_fit_direct=direct_risk_bias(z, positive, weights),
                        fit_cosine=float(w.sum() / (np.linalg.norm(w) * math.sqrt(d))),
                        risk_paper=weighted_risk(
                            paper_bias(rho, k, s_value, d), rho, k, eta, sigma, d
                        ),
                        risk_optimal=weighted_risk(b_star, rho, k, eta, sigma, d),
                        err_plus=err_plus,
                        err_minus=err_minus,
                        fit_err_plus=float(np.mean(~predicted[pos_test])),
                        fit_err_minus=float(np.mean(predicted[~pos_test])),
                    )
                )
    return TheoryReport(k, eta, n_plus + n_minus, n_test_per_class, seed, rows)
