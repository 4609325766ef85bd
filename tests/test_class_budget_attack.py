"""Class-wise perturbation budgets (RobustLT, Zhang et al. 2026) as a switch of any method:
per-sample PGD budgets, the training step's eps[y], the resolved budgets and their warm-up."""

from __future__ import annotations

import math
from typing import Any, get_args

import pytest
import torch
import torch.nn.functional as F
from fake_runs import TINY_RUN, prepare_from_env
from test_new_methods import tiny_step
from torch import nn

from srat_engine.attacks import WARMUP_STARTS, pgd_linf
from srat_engine.config.resolve import resolve
from srat_engine.config.schema import AttackConfig, RunConfig, set_override, validate_config
from srat_engine.errors import SratError
from srat_engine.models import build_model
from srat_engine.runs.home import Home
from srat_engine.training.schedule import attack_budgets
from srat_engine.training.step import TrainStep

EPS, STEP, STEPS = 0.1, 0.025, 10
# counts [30, 10, 5], alpha 0.3, eps 0.1, by hand: s_c = sqrt(log(30 / n_c)) = 0, sqrt(log 3) =
# 1.0481471, sqrt(log 6) = 1.3385662; S = (10 s_1 + 5 s_2) / 45 = 0.3816514; t = 0.3 / S =
# 0.7860578; eps_c = 0.07 + t s_c 0.1 (frequency-weighted mean (30 .07 + 10 .152390 + 5 .175219)
# / 45 = 0.1)
COUNTS = [30, 10, 5]
BUDGETS = [0.07, 0.1523902, 0.1752187]


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 4)).eval()


def _images(n: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 4, (n,), generator=g)


def _attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, **kw: Any):
    kw.setdefault("steps", STEPS)
    return pgd_linf(model, x, y, generator=torch.Generator().manual_seed(7), **kw)


# --- pgd_linf with per-sample budgets ------------------------------------------------------


@pytest.mark.parametrize("random_start", [True, False])
def test_a_constant_tensor_budget_is_exactly_the_float_path(random_start: bool) -> None:
    model, (x, y) = _mlp(), _images()
    ours = _attack(model, x, y, eps=EPS, step_size=STEP, random_start=random_start)
    n = len(y)
    tensor = _attack(
        model,
        x,
        y,
        eps=torch.full((n,), EPS),
        step_size=torch.full((n,), STEP),
        random_start=random_start,
    )
    assert torch.equal(tensor.x_adv, ours.x_adv)
    assert torch.equal(tensor.kappa, ours.kappa)


def test_each_sample_stays_in_its_own_ball_and_a_zero_budget_leaves_it() -> None:
    model, (x, y) = _mlp(), _images()
    eps = torch.tensor([0.0, 0.02, 0.05, 0.1] * 3)
    for start_eps in (None, EPS):  # its own eps_i, or the global one (training's start)
        result = _attack(model, x, y, eps=eps, step_size=eps / 4, start_eps=start_eps)
        size = (result.x_adv - x).abs().flatten(1).amax(dim=1)
        assert bool((size <= eps + 1e-6).all())
        assert bool((size[eps > 0] > 0.5 * eps[eps > 0]).all())  # each one used its budget
        assert torch.equal(result.x_adv[eps == 0], x[eps == 0])
        assert bool((result.x_adv >= 0).all() and (result.x_adv <= 1).all())


def test_per_sample_budgets_attack_each_sample_as_if_alone() -> None:
    # sum-reduced CE: each sample's input gradient is its own, so without a random start the
    # batch attack equals one float-budget attack per sample
    model, (x, y) = _mlp(), _images(8)
    eps = torch.tensor([0.01, 0.03, 0.05, 0.08, 0.1, 0.12, 0.0, 0.2])
    step = torch.tensor([0.005, 0.01, 0.02, 0.02, 0.03, 0.01, 0.01, 0.05])
    batch = _attack(model, x, y, eps=eps, step_size=step, random_start=False)
    for i in range(len(y)):
        alone = _attack(
            model,
            x[i : i + 1],
            y[i : i + 1],
            eps=float(eps[i]),
            step_size=float(step[i]),
            random_start=False,
        )
        torch.testing.assert_close(batch.x_adv[i : i + 1], alone.x_adv, rtol=0, atol=1e-6)
        assert torch.equal(batch.kappa[i : i + 1], alone.kappa)


def test_the_start_from_start_eps_is_clipped_not_projected() -> None:
    # one step from a start wider than the ball: the gradient is taken at the unprojected start
    # (RobustLT's get_adversarial_examples), the ball is enforced after the step
    model, (x, y) = _mlp(), _images(4)
    eps, step = torch.tensor([0.02, 0.05, 0.1, 0.15]), torch.tensor([0.005, 0.01, 0.02, 0.03])
    ours = _attack(model, x, y, eps=eps, step_size=step, steps=1, start_eps=EPS)
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(7))
    start = (x + (2 * noise - 1) * EPS).clamp(0, 1).requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(start), y, reduction="sum"), [start])
    e, s = eps.view(-1, 1, 1, 1), step.view(-1, 1, 1, 1)
    lower, upper = (x - e).clamp(min=0), (x + e).clamp(max=1)
    want = torch.min(torch.max(start.detach() + s * grad.sign(), lower), upper)
    torch.testing.assert_close(ours.x_adv, want, rtol=0, atol=1e-7)


def test_per_sample_budgets_need_one_value_per_sample() -> None:
    model, (x, y) = _mlp(), _images(4)
    with pytest.raises(ValueError, match="shape"):
        _attack(model, x, y, eps=torch.full((3,), EPS), step_size=STEP)
    with pytest.raises(ValueError, match="start_eps"):
        _attack(model, x, y, eps=torch.full((4,), EPS), step_size=STEP, start_eps=-1.0)


# --- the training step ---------------------------------------------------------------------


def _budget_config(**attack: Any) -> RunConfig:
    return validate_config(
        {
            "method": "AT-BSL",
            "device": "cpu",
            "model": {"arch": "linear"},
            "attack": {"eps": EPS, "step_size": STEP, "steps": STEPS, "class_budget": True}
            | attack,
            "train": {"channels_last": "off", "fold_bn": False, "precision": "fp32"},
        }
    )


def _train_step(config: RunConfig) -> tuple[TrainStep, nn.Module]:
    torch.manual_seed(0)
    model = build_model("linear", 3, (4,))
    log_prior = torch.log(torch.tensor(COUNTS, dtype=torch.float32) / sum(COUNTS))
    return tiny_step(config, model, log_prior), model


def test_train_step_attacks_each_sample_within_its_class_budget() -> None:
    step, model = _train_step(_budget_config())
    budgets = torch.tensor(BUDGETS)
    step.set_class_budgets(budgets, budgets * (STEP / EPS))
    g = torch.Generator().manual_seed(3)
    x = torch.rand(9, 4, generator=g) * 0.4 + 0.3  # away from the clip: each ball is whole
    y = torch.tensor([0, 1, 2] * 3)
    x_adv = step.attack(x, y).x_adv
    size = (x_adv - x).abs().amax(dim=1)
    torch.testing.assert_close(size, budgets[y], rtol=0, atol=1e-6)

    # the same attack by hand: RobustLT's start U(-eps, eps) of the global eps, clipped, then
    # steps of step * eps_y / eps projected onto the ball of eps_y
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(11))
    want = (x + (2 * noise - 1) * EPS).clamp(0, 1)
    e, s = budgets[y].unsqueeze(1), (budgets[y] * STEP / EPS).unsqueeze(1)
    for _ in range(STEPS):
        want.requires_grad_(True)
        loss = F.cross_entropy(model(want), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, [want])
        want = torch.min(torch.max(want.detach() + s * grad.sign(), x - e), x + e).clamp(0, 1)
    torch.testing.assert_close(x_adv, want, rtol=0, atol=1e-6)


def test_train_step_needs_its_budgets_and_keeps_them_in_place() -> None:
    step, _ = _train_step(_budget_config())
    x, y = torch.rand(3, 4), torch.tensor([0, 1, 2])
    with pytest.raises(RuntimeError, match="set_class_budgets"):
        step.attack(x, y)
    step.set_class_budgets(torch.zeros(3), torch.zeros(3))
    held = step.class_eps
    assert torch.equal(step.attack(x, y).x_adv, x)  # the warm-up's first epoch: clean inputs
    step.set_class_budgets(torch.tensor(BUDGETS), torch.tensor(BUDGETS) / 4)
    assert step.class_eps is held  # a captured CUDA graph reads this very tensor
    assert torch.equal(held, torch.tensor(BUDGETS))


# --- resolved budgets and the warm-up ------------------------------------------------------


def _resolved_config(*assignments: str) -> RunConfig:
    raw: dict[str, Any] = {}
    for assignment in ("method=AT-BSL", "attack.class_budget=true", *assignments):
        set_override(raw, assignment)
    return validate_config(raw)


def test_resolved_budgets_from_the_training_counts() -> None:
    config = _resolved_config("train.epochs=20", "attack.budget_warmup=100")
    resolved = resolve(config, Home.from_env().data_dir)
    assert resolved.budget_warmup_epochs == 10  # 100 of 200 reference epochs, 20 epochs here
    budgets, counts = resolved.class_budgets, resolved.class_counts
    assert budgets is not None and len(budgets) == 10
    assert budgets[0] == pytest.approx(0.7 * 8 / 255)  # n_max's class: (1 - alpha) eps
    weighted = sum(b * n for b, n in zip(budgets, counts, strict=True)) / sum(counts)
    assert weighted == pytest.approx(8 / 255, rel=1e-6)
    assert budgets == sorted(budgets)  # rarer classes get more
    off = resolve(_resolved_config("attack.class_budget=false"), Home.from_env().data_dir)
    assert off.class_budgets is None and off.budget_warmup_epochs is None


def test_class_budget_needs_a_training_attack() -> None:
    for assignment in ("method=Natural", "attack.steps=0"):
        with pytest.raises(SratError, match=r"attack\.class_budget"):
            resolve(_resolved_config(assignment), Home.from_env().data_dir)


def test_warmup_at_epoch_zero_and_from_its_end() -> None:
    config = _resolved_config("train.epochs=20", "attack.budget_warmup=100")
    resolved = resolve(config, Home.from_env().data_dir)
    full = torch.tensor(resolved.class_budgets)
    step_scale = (2 / 255) / (8 / 255)
    got = attack_budgets(0, config, resolved)
    assert got is not None
    assert torch.equal(got[0], torch.zeros(10)) and torch.equal(got[1], torch.zeros(10))
    got = attack_budgets(5, config, resolved)  # halfway through the 10 warm-up epochs
    assert got is not None
    torch.testing.assert_close(got[0], 0.5 * full)
    for epoch in (10, 11, 19):
        got = attack_budgets(epoch, config, resolved)
        assert got is not None
        torch.testing.assert_close(got[0], full)
        torch.testing.assert_close(got[1], full * step_scale)
    # from the global eps instead (the wording): eps at epoch 0, eps_c from its end
    config = _resolved_config("train.epochs=20", "attack.budget_warmup=100")
    config.attack.budget_warmup_start = "eps"
    got = attack_budgets(0, config, resolved)
    assert got is not None
    torch.testing.assert_close(got[0], torch.full((10,), 8 / 255))
    torch.testing.assert_close(got[1], torch.full((10,), 2 / 255))
    got = attack_budgets(10, config, resolved)
    assert got is not None
    torch.testing.assert_close(got[0], full)
    # no warm-up: eps_c from the first epoch
    plain = _resolved_config("train.epochs=20")
    resolved = resolve(plain, Home.from_env().data_dir)
    got = attack_budgets(0, plain, resolved)
    assert got is not None
    torch.testing.assert_close(got[0], full)
    off = _resolved_config("attack.class_budget=false")
    assert attack_budgets(0, off, resolve(off, Home.from_env().data_dir)) is None


def test_the_config_offers_the_warmup_starts_of_the_maths() -> None:
    annotation = AttackConfig.model_fields["budget_warmup_start"].annotation
    assert get_args(annotation) == WARMUP_STARTS
    assert AttackConfig().budget_alpha == 0.3 and not AttackConfig().class_budget
    with pytest.raises(SratError, match="budget_alpha"):
        _resolved_config("attack.budget_alpha=1.5")


# --- presets, the trainer, the dry-run table -----------------------------------------------


def test_digits_class_budget_preset_trains_with_warmed_up_budgets() -> None:
    from srat_engine.config.prepare import create_run
    from srat_engine.training.trainer import Trainer, execute

    prepared = prepare_from_env("digits-at-bsl-cbudget", (*TINY_RUN, "train.epochs=2"))
    resolved = prepared.resolved
    assert prepared.config.attack.class_budget and prepared.config.method == "AT-BSL"
    assert resolved.budget_warmup_epochs == 2  # 160 of 200 reference epochs, 2 here: round(1.6)
    run = create_run(prepared, Home.from_env().runs)
    final = execute(run, heartbeat_s=None)
    assert run.exit_record()["status"] == "finished"
    assert 0 <= final["std_overall"] <= 100 and final["rob_overall"] is not None

    # what the epoch loop hands the step: 0 in the first epoch, half of eps_c in the second
    trainer = Trainer(run, torch.device("cpu"))
    trainer._build()
    full = torch.tensor(resolved.class_budgets)
    for epoch, share in ((0, 0.0), (1, 0.5)):
        trainer._train_epoch(epoch)
        assert trainer.train_step.class_eps is not None
        torch.testing.assert_close(trainer.train_step.class_eps, share * full)


def test_cifar_class_budget_preset_follows_robustlt() -> None:
    prepared = prepare_from_env("at-bsl-cbudget-cifar10-ir50")
    config, resolved = prepared.config, prepared.resolved
    assert config.method == "AT-BSL" and config.model.arch == "wrn28_10"
    assert (config.data.imbalance, config.data.ratio) == ("exp", 50)
    assert config.train.epochs == 100 and config.train.weight_decay == 5e-4
    assert resolved.lr_milestones == [75, 90] and config.train.lr_gamma == 0.1
    assert config.attack.budget_alpha == 0.3 and resolved.budget_warmup_epochs == 80
    assert resolved.class_budgets is not None and len(resolved.class_budgets) == 10
    assert config.eval.eps == config.attack.eps == 8 / 255  # evaluation: the global eps


def test_dry_run_shows_the_class_budgets() -> None:
    from srat_tui.render.run import resolved_table, schedule_lines

    prepared = prepare_from_env("at-bsl-cbudget-cifar10-ir50")
    table = resolved_table(prepared)
    (column,) = [column for column in table.columns if column.header == "attack eps"]
    budgets = prepared.resolved.class_budgets
    assert budgets is not None
    assert list(column.cells) == [f"{b * 255:.3f}/255" for b in budgets]
    lines = "\n".join(schedule_lines(prepared))
    assert "class-wise eps_c (alpha 0.3)" in lines and "epochs 1-80" in lines
    assert math.isclose(budgets[0] * 255, 0.7 * 8, rel_tol=1e-6)
