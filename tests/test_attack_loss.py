"""`attack.loss`: the training attack ascends the reference codes' cross entropy of the logits
(the default) or, with "training", the run's own prediction loss L of Eq. 5. Each attack is
checked against PGD written out by hand on a tiny linear model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from cli_harness import Srat, make_invoker
from test_new_methods import tiny_step as plain_sgd_step

from srat_engine.config.resolve import resolve
from srat_engine.config.schema import RunConfig, set_override, validate_config
from srat_engine.errors import SratError
from srat_engine.models import build_model
from srat_engine.runs.home import Home
from srat_engine.training.step import TrainStep, robal_options

EPS, STEP, STEPS = 0.1, 0.03, 5
COUNTS = [30, 10, 5]
# LDAM margins m_c = 0.5 (n_min / n_c)^(1/4) of COUNTS: 0.5 (5/30)^.25, 0.5 (5/10)^.25, 0.5
MARGINS = torch.tensor([0.5 * (5 / 30) ** 0.25, 0.5 * (5 / 10) ** 0.25, 0.5])
SCALE = 30.0
# RoBal-N's defaults: m_c = m = 0.1 for every class (tau_m = 0), s = 10, tau_b = 1.2
ROBAL_MARGIN, ROBAL_SCALE, ROBAL_TAU_B = 0.1, 10.0, 1.2


def tiny_config(method: str, *assignments: str) -> RunConfig:
    raw: dict[str, Any] = {
        "method": method,
        "device": "cpu",
        "model": {"arch": "linear"},
        "attack": {"eps": EPS, "step_size": STEP, "steps": STEPS},
        "train": {"channels_last": "off", "fold_bn": False, "precision": "fp32"},
    }
    for assignment in assignments:
        set_override(raw, assignment)
    return validate_config(raw)


def tiny_step(config: RunConfig) -> TrainStep:
    torch.manual_seed(0)
    model = build_model(
        "linear",
        3,
        (4,),
        head=config.head(),
        cosine_scale=config.loss.ldam_scale,
        robal=robal_options(config, COUNTS),
    )
    log_prior = torch.log(torch.tensor(COUNTS, dtype=torch.float32) / sum(COUNTS))
    margins = {"ldam": MARGINS, "robal": torch.full((3,), ROBAL_MARGIN)}.get(config.spec.loss)
    # the attack's random start comes from the step's generator, seeded 11 (`pgd_by_hand`)
    return plain_sgd_step(config, model, log_prior, margins)


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    x = torch.rand(12, 4, generator=generator) * 0.8 + 0.1
    return x, torch.tensor([0, 1, 2] * 4)


def pgd_by_hand(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """PGD from the step's first draw (seed 11) ascending the summed ``loss(logits, y)``."""
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(11))
    x_adv = torch.clamp(x + (2 * noise - 1) * EPS, x - EPS, x + EPS).clamp(0, 1)
    for _ in range(STEPS):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(loss(model(x_adv), y).sum(), [x_adv])
        x_adv = torch.min(torch.max(x_adv.detach() + STEP * grad.sign(), x - EPS), x + EPS)
        x_adv = x_adv.clamp(0, 1)
    return x_adv


def ldam_by_hand(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # CE(s cos - s m_y onehot(y)): the logits are already s cos
    shifted = logits.clone()
    for i, label in enumerate(y.tolist()):
        shifted[i, label] = shifted[i, label] - SCALE * MARGINS[label]
    return F.cross_entropy(shifted, y, reduction="none")


def balanced_softmax_by_hand(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    prior = torch.tensor(COUNTS, dtype=torch.float32) / sum(COUNTS)
    return F.cross_entropy(logits + torch.log(prior), y, reduction="none")


def robal_by_hand(cosines: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # CE(s (cos - m onehot(y)) + tau_b log(pi)) on the head's scale-1 cosines
    prior = torch.tensor(COUNTS, dtype=torch.float32) / sum(COUNTS)
    onehot = F.one_hot(y, 3).float()
    logits = ROBAL_SCALE * (cosines - ROBAL_MARGIN * onehot) + ROBAL_TAU_B * torch.log(prior)
    return F.cross_entropy(logits, y, reduction="none")


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="none")


@pytest.mark.parametrize(
    ("method", "training_loss"),
    [
        ("LDAM", ldam_by_hand),
        ("DRCB-LDAM", ldam_by_hand),
        ("AT-BSL", balanced_softmax_by_hand),
        ("RoBal", robal_by_hand),
    ],
)
def test_the_training_attack_ascends_the_runs_own_loss(
    method: str, training_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
) -> None:
    x, y = batch()
    reference_step = tiny_step(tiny_config(method))
    training_step = tiny_step(tiny_config(method, "attack.loss=training"))
    # what the attack sees: the logits, RoBal's scale-1 cosines
    model = training_step.attack_forward.eval()
    reference = reference_step.attack(x, y).x_adv
    training = training_step.attack(x, y).x_adv
    torch.testing.assert_close(reference, pgd_by_hand(model, x, y, cross_entropy))
    torch.testing.assert_close(training, pgd_by_hand(model, x, y, training_loss))
    # the two attacks part: log(pi) shifts every logit and so turns the logits' gradient (some
    # signs of the input gradient follow); the margins move it only where CE saturates (below)
    assert not torch.allclose(reference, training)


@pytest.mark.parametrize("scale", [1.0, 5.0])
def test_ldams_margin_moves_no_sign_step_while_cross_entropy_is_not_saturated(
    scale: float,
) -> None:
    # CE's logit gradient is (1 - p_y) (q - onehot(y)), q the softmax over the wrong classes
    # (0 at y). The margin lowers the true logit alone: p_y changes, q does not, so each
    # sample's input gradient is rescaled by a positive factor and sign-PGD steps alike
    x, y = batch()
    set_scale = f"loss.ldam_scale={scale}"
    reference = tiny_step(tiny_config("LDAM", set_scale)).attack(x, y).x_adv
    training = tiny_step(tiny_config("LDAM", set_scale, "attack.loss=training")).attack(x, y)
    torch.testing.assert_close(training.x_adv, reference)


def test_ldams_margin_moves_the_attack_where_cross_entropy_saturates() -> None:
    # at s = 30 some samples sit at p_y = 1 in float32: CE's input gradient underflows and
    # sign-PGD stalls there, while LDAM's lowered true logit keeps a gradient to ascend
    x, y = batch()
    step = tiny_step(tiny_config("LDAM"))
    reference = step.attack(x, y).x_adv
    training = tiny_step(tiny_config("LDAM", "attack.loss=training")).attack(x, y).x_adv
    parted = (reference != training).any(dim=1)
    assert parted.any()
    with torch.no_grad():
        p_y = torch.softmax(step.model.eval()(x), dim=1).gather(1, y.unsqueeze(1)).squeeze(1)
    assert bool((p_y[parted] == 1.0).all())


def test_for_a_cross_entropy_method_both_attacks_are_one() -> None:
    x, y = batch()
    reference = tiny_step(tiny_config("SRAT-CE")).attack(x, y)
    training = tiny_step(tiny_config("SRAT-CE", "attack.loss=training")).attack(x, y)
    assert torch.equal(reference.x_adv, training.x_adv)
    assert torch.equal(reference.kappa, training.kappa)


def test_the_focal_training_attack_is_the_cross_entropy_attack() -> None:
    # with p = softmax(z)_y: d FL / d z = ((1-p)^gamma - gamma p (1-p)^(gamma-1) log p) d CE / d z,
    # a factor >= 0 for every sample, so sign-PGD takes the very same steps on either loss
    x, y = batch()
    step = tiny_step(tiny_config("Focal", "attack.loss=training", "loss.focal_gamma=2"))

    def focal_by_hand(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p = torch.log_softmax(logits, dim=1).gather(1, target.unsqueeze(1)).squeeze(1)
        return -((1 - log_p.exp()) ** 2) * log_p

    training = step.attack(x, y).x_adv
    torch.testing.assert_close(training, pgd_by_hand(step.model.eval(), x, y, focal_by_hand))
    torch.testing.assert_close(training, tiny_step(tiny_config("Focal")).attack(x, y).x_adv)


def _resolve(method: str, *assignments: str) -> None:
    raw: dict[str, Any] = {"method": method}  # the defaults: digits, a small CNN
    for assignment in assignments:
        set_override(raw, assignment)
    resolve(validate_config(raw), Home.from_env().data_dir)


@pytest.mark.parametrize(
    ("method", "assignments", "match"),
    [
        ("TRADES", (), "TRADES' attack ascends its own KL"),
        ("TRADES-AWP", (), "TRADES' attack ascends its own KL"),
        ("REAT", (), "REAT's attack ascends its own RBL-weighted CE"),
        ("Natural", (), r"no effect without a training attack \(Natural trains on clean inputs\)"),
        ("SRAT-LDAM", ("attack.steps=0",), r"without a training attack \(attack\.steps=0\)"),
    ],
)
def test_a_training_attack_loss_that_cannot_apply_is_refused(
    method: str, assignments: tuple[str, ...], match: str
) -> None:
    with pytest.raises(SratError, match=match):
        _resolve(method, "attack.loss=training", *assignments)
    _resolve(method, *assignments)  # the reference attack stands


def test_an_unknown_attack_loss_is_refused_with_the_choices() -> None:
    with pytest.raises(SratError, match=r"attack\.loss.*'reference'.*'training'"):
        tiny_config("LDAM", "attack.loss=margin")


@pytest.fixture
def srat(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Srat:
    return make_invoker(capsys, monkeypatch)


def test_the_dry_run_says_which_loss_the_attack_ascends(
    srat: Srat, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("SRAT_HOME", str(home))
    monkeypatch.setenv("COLUMNS", "200")
    args = ("run", "--preset", "digits-srat-ldam", "--dry-run")
    training = srat(*args, "--set", "attack.loss=training")
    assert training.code == 0, training
    assert "ascends the training loss L" in training.out
    reference = srat(*args)
    assert reference.code == 0 and "ascends" not in reference.out
    refused = srat(*args, "--set", "method=TRADES", "--set", "attack.loss=training")
    assert refused.code == 2, refused
    assert len(refused.err_lines) == 1 and "does not fit TRADES" in refused.err
    assert not (home / "runs").exists() or not any((home / "runs").iterdir())
