"""The field's newer baselines as compositions of the trainer's parts: TRADES's attack and
update, AT-BSL's balanced softmax, PGD-AT as another name of CE. Each training step is checked
against a direct (slow, obvious) implementation on a tiny linear model."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from fake_runs import TINY_RUN, prepare_from_env

from srat_engine.config.methods import canonical_method, compose_method, get_method
from srat_engine.config.schema import RunConfig, validate_config
from srat_engine.models import build_model
from srat_engine.training.step import TrainStep, per_sample_loss

EPS, STEP, STEPS = 0.1, 0.03, 3


def tiny_config(method: str, **loss: float) -> RunConfig:
    return validate_config(
        {
            "method": method,
            "device": "cpu",
            "model": {"arch": "linear"},
            "attack": {"eps": EPS, "step_size": STEP, "steps": STEPS},
            "loss": loss,
            "train": {"channels_last": "off", "fold_bn": False, "precision": "fp32"},
        }
    )


def tiny_batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    x = torch.rand(6, 4, generator=generator) * 0.8 + 0.1
    return x, torch.tensor([0, 1, 2, 0, 1, 2])


def tiny_step(
    config: RunConfig,
    model: torch.nn.Module,
    log_prior: torch.Tensor | None = None,
    margins: torch.Tensor | None = None,
) -> TrainStep:
    """A TrainStep on `model` with plain SGD (lr 0.5), its generator seeded 11, inputs in
    [0, 1] on the CPU: what the direct implementations in these tests replay."""
    return TrainStep(
        model,
        torch.optim.SGD(model.parameters(), lr=0.5),
        config,
        per_sample_loss(config, margins, log_prior),
        generator=torch.Generator().manual_seed(11),
        clip=(0.0, 1.0),
        device=torch.device("cpu"),
    )


def one_step(
    config: RunConfig, model: torch.nn.Module, log_prior: torch.Tensor | None = None
) -> torch.nn.Module:
    x, y = tiny_batch()
    tiny_step(config, model, log_prior)(x, y)
    return model


def kl_by_hand(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax(p) || softmax(q)) for each row, summed over classes one at a time."""
    rows = []
    for p_row, q_row in zip(p_logits, q_logits, strict=True):
        p, q = torch.softmax(p_row, 0), torch.softmax(q_row, 0)
        rows.append(sum(p[k] * (torch.log(p[k]) - torch.log(q[k])) for k in range(len(p))))
    return torch.stack(rows)


def uniform_start(x: torch.Tensor) -> torch.Tensor:
    """The attack's first draw from the step's generator (seed 11), as pgd_linf makes it."""
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(11))
    return torch.clamp(x + (2 * noise - 1) * EPS, x - EPS, x + EPS).clamp(0, 1)


def test_trades_step_matches_a_direct_implementation() -> None:
    config = tiny_config("TRADES", trades_beta=6.0)
    torch.manual_seed(0)
    model = build_model("linear", 3, (4,))
    reference = copy.deepcopy(model)
    before = [p.detach().clone() for p in model.parameters()]
    one_step(config, model)
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), before, strict=True))

    x, y = tiny_batch()
    lower, upper = (x - EPS).clamp(0, 1), (x + EPS).clamp(0, 1)
    with torch.no_grad():
        natural = reference(x)
    x_adv = uniform_start(x)
    for _ in range(STEPS):  # ascend the summed KL from the clean prediction
        x_adv = x_adv.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(kl_by_hand(natural, reference(x_adv)).sum(), [x_adv])
        x_adv = torch.min(torch.max(x_adv.detach() + STEP * grad.sign(), lower), upper)
    logits = reference(x)
    loss = F.cross_entropy(logits, y) + 6.0 * kl_by_hand(logits, reference(x_adv)).mean()
    loss.backward()
    with torch.no_grad():
        for param in reference.parameters():
            param -= 0.5 * param.grad
    for ours, theirs in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.allclose(ours, theirs, atol=1e-6)


def test_trades_with_beta_zero_is_natural_training_on_clean_inputs() -> None:
    torch.manual_seed(0)
    model = build_model("linear", 3, (4,))
    reference = copy.deepcopy(model)
    one_step(tiny_config("TRADES", trades_beta=0.0), model)
    x, y = tiny_batch()
    F.cross_entropy(reference(x), y).backward()
    with torch.no_grad():
        for param in reference.parameters():
            param -= 0.5 * param.grad
    for ours, theirs in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.allclose(ours, theirs, atol=1e-6)


def test_at_bsl_trains_on_balanced_softmax_of_pgd_examples() -> None:
    counts = [30, 10, 5]
    log_prior = torch.log(torch.tensor(counts, dtype=torch.float32) / 45)
    config = tiny_config("AT-BSL")
    torch.manual_seed(0)
    model = build_model("linear", 3, (4,))
    reference = copy.deepcopy(model)
    one_step(config, model, log_prior)

    x, y = tiny_batch()
    lower, upper = (x - EPS).clamp(0, 1), (x + EPS).clamp(0, 1)
    x_adv = uniform_start(x)
    for _ in range(STEPS):  # the attack sees the plain logits (AT-BSL's pgd_loss)
        x_adv = x_adv.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(reference(x_adv), y, reduction="sum"),
                                      [x_adv])  # fmt: skip
        x_adv = torch.min(torch.max(x_adv.detach() + STEP * grad.sign(), lower), upper)
    F.cross_entropy(reference(x_adv) + torch.log(torch.tensor(counts) / 45.0), y).backward()
    with torch.no_grad():
        for param in reference.parameters():
            param -= 0.5 * param.grad
    for ours, theirs in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.allclose(ours, theirs, atol=1e-6)


def test_balanced_softmax_loss_by_hand() -> None:
    # logits (1, 0), counts (3, 1): shifted logits 1 + log .75 and log .25; for label 1 the loss
    # is -log(e^{log .25} / (e^{1 + log .75} + e^{log .25})) = -log(.25 / (.75 e + .25))
    config = tiny_config("AT-BSL")
    log_prior = torch.log(torch.tensor([0.75, 0.25]))
    loss = per_sample_loss(config, None, log_prior)(torch.tensor([[1.0, 0.0]]), torch.tensor([1]))
    assert loss.item() == pytest.approx(-math.log(0.25 / (0.75 * math.e + 0.25)), rel=1e-6)
    # tau = 0 is plain cross entropy: -log(1 / (e + 1))
    plain = per_sample_loss(tiny_config("AT-BSL", prior_tau=0.0), None, log_prior)
    value = plain(torch.tensor([[1.0, 0.0]]), torch.tensor([1])).item()
    assert value == pytest.approx(math.log(math.e + 1), rel=1e-6)


def test_names_compose_and_alias() -> None:
    assert canonical_method("pgd-at") == "CE" and canonical_method("PGD-AT") == "CE"
    assert compose_method("trades", "ce") == "TRADES" and compose_method("bsl", "ce") == "AT-BSL"
    assert compose_method("none", "ce") == "CE"  # the new schemes take nothing from the old
    assert get_method("TRADES").objective == "trades" and not get_method("CE").prior_shift


@pytest.mark.parametrize("preset", ["digits-trades", "digits-at-bsl", "digits-pgd-at"])
def test_digits_presets_train(preset: str) -> None:
    from srat_engine.config.prepare import create_run
    from srat_engine.runs.home import Home
    from srat_engine.training.trainer import execute

    prepared = prepare_from_env(preset, (*TINY_RUN, "train.epochs=2"))
    run = create_run(prepared, Home.from_env().runs)
    final = execute(run, heartbeat_s=None)
    assert run.exit_record()["status"] == "finished"
    assert 0 <= final["std_overall"] <= 100 and final["rob_overall"] is not None


@pytest.mark.parametrize("preset", ["at-bsl-cifar10-ir50", "trades-cifar10-ir50"])
def test_cifar_presets_resolve(preset: str) -> None:
    prepared = prepare_from_env(preset, ("data.dataset=synthetic",))
    assert prepared.config.data.ratio == 50 and prepared.config.data.imbalance == "exp"
    assert get_method(prepared.config.method).name in ("AT-BSL", "TRADES")


def test_each_method_reduces_as_its_reference_code() -> None:
    def reduction(method: str, **loss: str) -> str:
        return validate_config({"method": method, "loss": loss}).reduction()

    assert reduction("SRAT-LDAM") == reduction("GAIRAT") == reduction("DRCB-Focal") == "mean"
    assert (
        reduction("DRCB-LDAM") == reduction("CB-Reweight") == reduction("DRCB-CE") == "normalized"
    )
    assert reduction("DRCB-LDAM", reduction="mean") == "mean"  # loss.reduction still decides
    # why it matters: tests/test_per_class.py, the 0.171 mean weight of Exp-100 under "mean"


def test_the_common_protocol_presets_share_one_protocol() -> None:
    from srat_engine.config.presets import list_presets, load_preset
    from srat_engine.runs.home import Home

    dirs = Home.from_env().preset_dirs
    names = [n for n in list_presets(dirs) if n.startswith("lt2026-")]
    assert len(names) >= 10
    protocols = set()
    for name in names:
        config = prepare_from_env(name, ("data.dataset=synthetic",)).config
        dataset, ratio, method = name.removeprefix("lt2026-").split("-", 2)
        assert (config.data.ratio, f"ir{config.data.ratio:g}") == (50, ratio)
        assert canonical_method(config.method) == canonical_method(method)
        assert load_preset(name, dirs)["data"]["dataset"] == dataset
        protocols.add(
            (config.model.arch, config.train.epochs, tuple(config.train.lr_milestones),
             config.train.weight_decay, config.attack.steps, config.train.reweight_epoch)
        )  # fmt: skip
    assert protocols == {("wrn28_10", 100, (75, 90), 5e-4, 10, 75)}
