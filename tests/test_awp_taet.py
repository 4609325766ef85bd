"""AWP and TAET as compositions of the trainer's parts: each training step is checked against a
direct implementation that follows its reference (csdongxian/AWP's proxy model, the TAET
notebook's HARL) on a tiny model, and their presets train or resolve."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from fake_runs import TINY_RUN, prepare_from_env
from test_new_methods import EPS, STEP, STEPS, kl_by_hand, tiny_batch, uniform_start
from torch import nn

from srat_engine.config.methods import compose_method, get_method
from srat_engine.config.schema import RunConfig, validate_config
from srat_engine.models import SratModel, build_model
from srat_engine.training.awp import perturbed_parameters, weight_perturbation
from srat_engine.training.schedule import awp_active, natural_stage
from srat_engine.training.step import TrainStep, per_sample_loss

LR, MOMENTUM, WEIGHT_DECAY = 0.5, 0.9, 0.1
LossOf = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class TwoLayer(SratModel):
    """Linear -> BatchNorm -> ReLU -> linear head: two perturbed weights of different norms,
    and running statistics that the AWP ascent must leave alone."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__(5, nn.Linear(5, classes))
        self.body = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.ReLU())

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def config_for(method: str, **sections: dict[str, Any]) -> RunConfig:
    return validate_config(
        {
            "method": method,
            "device": "cpu",
            "model": {"arch": "linear"},
            "attack": {"eps": EPS, "step_size": STEP, "steps": STEPS},
            "train": {"channels_last": "off", "fold_bn": False, "precision": "fp32"},
            **sections,
        }
    )


def run_step(config: RunConfig, model: SratModel, **switches: bool) -> TrainStep:
    optimizer = torch.optim.SGD(
        model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY
    )
    step = TrainStep(
        model,
        optimizer,
        config,
        per_sample_loss(config, None),
        generator=torch.Generator().manual_seed(11),
        clip=(0.0, 1.0),
        device=torch.device("cpu"),
    )
    step(*tiny_batch(), **switches)
    return step


def fresh_model(classes: int = 3) -> tuple[TwoLayer, TwoLayer]:
    torch.manual_seed(0)
    model = TwoLayer(classes)
    model.train()
    return model, copy.deepcopy(model)


def pgd_by_hand(
    model: nn.Module, x: torch.Tensor, ascend: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """The training attack in eval mode: signed steps on ``ascend(x')`` from the step's start."""
    model.eval()
    lower, upper = (x - EPS).clamp(0, 1), (x + EPS).clamp(0, 1)
    x_adv = uniform_start(x)
    for _ in range(STEPS):
        x_adv = x_adv.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(ascend(x_adv), [x_adv])
        x_adv = torch.min(torch.max(x_adv.detach() + STEP * grad.sign(), lower), upper)
    model.train()
    return x_adv


def awp_update_by_hand(
    model: nn.Module, loss_of: LossOf, x_adv: torch.Tensor, gamma: float
) -> None:
    """csdongxian/AWP's update: a proxy copy takes one SGD step (lr 0.01) on -loss, v is
    proxy - w rescaled to gamma ||w|| per weight of dim > 1 (``diff_in_weights``), then the real
    optimiser steps at w + v and v is taken off after the step."""
    x, y = tiny_batch()
    proxy = copy.deepcopy(model)
    proxy.train()
    proxy_optim = torch.optim.SGD(proxy.parameters(), lr=0.01)
    proxy_optim.zero_grad()
    (-loss_of(proxy, x_adv, x, y)).backward()
    proxy_optim.step()
    diff = {}
    for (name, old), (_, new) in zip(
        model.state_dict().items(), proxy.state_dict().items(), strict=True
    ):
        if old.dim() > 1 and "weight" in name:
            diff[name] = old.norm() / ((new - old).norm() + 1e-20) * (new - old)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, v in diff.items():
            params[name].add_(gamma * v)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY
    )
    optimizer.zero_grad()
    loss_of(model, x_adv, x, y).backward()
    optimizer.step()
    with torch.no_grad():
        for name, v in diff.items():
            params[name].sub_(gamma * v)


def assert_same_state(ours: nn.Module, theirs: nn.Module) -> None:
    reference = theirs.state_dict()
    for name, value in ours.state_dict().items():
        assert torch.allclose(value.float(), reference[name].float(), atol=1e-6), name


def ce_of(model: nn.Module, x_adv: torch.Tensor, _x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(x_adv), y)


def trades_of(
    model: nn.Module, x_adv: torch.Tensor, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    adv = model(x_adv)  # adversarial first, as the step, so BatchNorm sees the same order
    logits = model(x)
    return F.cross_entropy(logits, y) + 6.0 * kl_by_hand(logits, adv).mean()


# --- AWP -------------------------------------------------------------------------------------


def test_weight_perturbation_by_hand() -> None:
    # ||w|| = 5 (3-4-0), g = (0, 2, 0) has norm 2: v = 0.1 * 5 * (0, 1, 0)
    w, g = torch.tensor([[3.0, 4.0, 0.0]]), torch.tensor([[0.0, 2.0, 0.0]])
    (v,) = weight_perturbation([w], [g], gamma=0.1)
    assert torch.allclose(v, torch.tensor([[0.0, 0.5, 0.0]]))
    (zero,) = weight_perturbation([w], [torch.zeros_like(g)], gamma=0.1)
    assert torch.equal(zero, torch.zeros_like(g))  # no gradient, no perturbation (no nan)
    model = TwoLayer()
    assert perturbed_parameters(model) == [model.head.weight, model.body[0].weight]


@pytest.mark.parametrize(
    "method, loss_of", [("AWP", ce_of), ("TRADES-AWP", trades_of)], ids=["AWP", "TRADES-AWP"]
)
def test_awp_step_matches_the_reference_update(method: str, loss_of: LossOf) -> None:
    gamma = 0.05
    model, reference = fresh_model()
    run_step(config_for(method, awp={"gamma": gamma}), model, awp=True)

    x, y = tiny_batch()
    if method == "AWP":
        x_adv = pgd_by_hand(
            reference, x, lambda xa: F.cross_entropy(reference(xa), y, reduction="sum")
        )
    else:
        reference.eval()
        with torch.no_grad():
            natural = reference(x)
        x_adv = pgd_by_hand(reference, x, lambda xa: kl_by_hand(natural, reference(xa)).sum())
    awp_update_by_hand(reference, loss_of, x_adv, gamma)
    assert_same_state(model, reference)  # weights, and running statistics updated once


@pytest.mark.parametrize("method", ["AWP", "TRADES-AWP"])
def test_awp_with_gamma_zero_is_the_plain_update_and_gamma_moves_it(method: str) -> None:
    plain, zero = fresh_model()
    moved = copy.deepcopy(plain)
    run_step(config_for(method, awp={"gamma": 0.0}), zero, awp=True)
    run_step(config_for(method), plain, awp=False)
    run_step(config_for(method, awp={"gamma": 0.05}), moved, awp=True)
    assert_same_state(zero, plain)
    assert not torch.allclose(moved.head.weight, plain.head.weight, atol=1e-4)


# --- TAET ------------------------------------------------------------------------------------


def test_taet_stage_one_is_clean_cross_entropy_without_an_attack() -> None:
    torch.manual_seed(0)
    model = build_model("linear", 3, (4,))
    reference = copy.deepcopy(model)
    step = run_step(config_for("TAET"), model, natural_stage=True)
    # the generator draws only the attack's start here: untouched means no attack ran
    assert torch.equal(step.generator.get_state(), torch.Generator().manual_seed(11).get_state())
    x, y = tiny_batch()
    optimizer = torch.optim.SGD(
        reference.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY
    )
    F.cross_entropy(reference(x), y).backward()
    optimizer.step()
    assert_same_state(model, reference)


def harl_by_hand(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The TAET notebook's HARL after its attack, written as there (0.1 / 0.1 / 0.1)."""
    per_sample = F.cross_entropy(logits, y, reduction="none")
    num_classes = logits.shape[1]
    class_losses = torch.zeros(num_classes)
    for cls in range(num_classes):
        mask = (y == cls).float()
        class_losses[cls] = (per_sample * mask).sum() / (mask.sum() + 1e-10)
    avg = class_losses.mean()
    normalized = class_losses / (class_losses.sum() + 1e-10)
    return 0.1 * avg + 0.1 * ((class_losses - avg) ** 2).mean() + 0.1 * (normalized**2).sum()


def test_taet_stage_two_updates_on_the_equalisation_loss_of_pgd_examples() -> None:
    # four classes, one absent from the batch: it enters the mean and the deviation as 0
    model, reference = fresh_model(classes=4)
    run_step(config_for("TAET"), model)
    x, y = tiny_batch()
    x_adv = pgd_by_hand(reference, x, lambda xa: F.cross_entropy(reference(xa), y, reduction="sum"))
    optimizer = torch.optim.SGD(
        reference.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY
    )
    harl_by_hand(reference(x_adv), y).backward()
    optimizer.step()
    assert_same_state(model, reference)


# --- names, schedule, presets ----------------------------------------------------------------


def test_names_and_schemes() -> None:
    assert get_method("awp").awp and get_method("TRADES-AWP").objective == "trades"
    assert get_method("TAET").objective == "taet" and not get_method("TAET").awp
    assert (
        compose_method("awp", "ce") == "AWP" and compose_method("trades-awp", "ce") == "TRADES-AWP"
    )
    assert compose_method("taet", "ce") == "TAET"
    assert compose_method("none", "ce") == "CE" and compose_method("trades", "ce") == "TRADES"


def test_stage_and_warmup_scale_with_the_run_length() -> None:
    # 20 epochs of the 200-epoch reference scale: stage 2 from round(80 * 20/200) = 8 and AWP
    # from round(30 * 20/200) = 3 (0-based)
    taet = prepare_from_env("digits-taet", ("train.epochs=20",)).resolved
    assert [natural_stage(e, taet) for e in (0, 7, 8, 19)] == [True, True, False, False]
    assert not awp_active(0, taet)
    awp = prepare_from_env("digits-awp", ("train.epochs=20", "awp.warmup=30")).resolved
    assert [awp_active(e, awp) for e in (0, 2, 3)] == [False, False, True]
    assert not natural_stage(0, awp)
    # gamma 0 switches AWP off altogether, as the reference's `awp_warmup = inf`
    off = prepare_from_env("digits-awp", ("awp.gamma=0",)).resolved
    assert off.awp_begin_epoch is None


@pytest.mark.parametrize(
    "preset, awp, natural",
    [
        ("digits-awp", [True, True], [False, False]),
        # warm-up 9 of 200 scaled to 2 epochs: round(0.09) = 0
        ("digits-trades-awp", [True, True], [False, False]),
        # stage 1 for round(80 * 2/200) = 1 epoch
        ("digits-taet", [False, False], [True, False]),
    ],
)
def test_digits_presets_train(preset: str, awp: list[bool], natural: list[bool]) -> None:
    from srat_engine.config.prepare import create_run
    from srat_engine.runs.home import Home
    from srat_engine.training.trainer import execute

    prepared = prepare_from_env(preset, (*TINY_RUN, "train.epochs=2"))
    run = create_run(prepared, Home.from_env().runs)
    final = execute(run, heartbeat_s=None)
    assert run.exit_record()["status"] == "finished"
    assert 0 <= final["std_overall"] <= 100 and final["rob_overall"] is not None
    epochs = [r for r in run.metrics() if r["event"] == "epoch"]
    assert [r["awp"] for r in epochs] == awp
    assert [r["natural_stage"] for r in epochs] == natural


@pytest.mark.parametrize(
    "preset, method, epochs, milestones",
    [
        ("awp-cifar10-ir50", "AWP", 200, [100, 150]),
        ("trades-awp-cifar10-ir50", "TRADES-AWP", 200, [99, 149]),
        ("taet-cifar10-ir50", "TAET", 100, [75, 90]),
    ],
)
def test_cifar_presets_resolve(
    preset: str, method: str, epochs: int, milestones: list[int]
) -> None:
    prepared = prepare_from_env(preset, ("data.dataset=synthetic",))
    config, resolved = prepared.config, prepared.resolved
    assert config.data.ratio == 50 and config.data.imbalance == "exp"
    assert config.method == method and config.train.epochs == epochs
    assert resolved.lr_milestones == milestones and config.train.weight_decay == 5e-4
    if method == "TAET":
        assert resolved.taet_stage2_epoch == 40 and resolved.awp_begin_epoch is None
    else:
        assert config.awp.gamma == (1e-2 if method == "AWP" else 5e-3)
        assert resolved.awp_begin_epoch == (0 if method == "AWP" else 9)
