"""eval.posthoc_tau: evaluation reads z - tau log(pi) (Menon et al. 2021), training never does."""

from __future__ import annotations

import math

import pytest
import torch
from fake_runs import TINY_RUN, prepare_from_env

from srat_engine.config.prepare import create_run
from srat_engine.errors import SratError
from srat_engine.losses.logit_adjustment import class_log_prior
from srat_engine.models import build_model
from srat_engine.models.posthoc import PosthocAdjusted, posthoc_view
from srat_engine.runs.home import Home
from srat_engine.training.trainer import Trainer, execute


def test_adjusted_logits_by_hand() -> None:
    torch.manual_seed(0)
    model = build_model("linear", 2, (3,))
    log_prior = torch.log(torch.tensor([0.75, 0.25]))
    adjusted = posthoc_view(model, log_prior, tau=2.0)
    assert isinstance(adjusted, PosthocAdjusted) and posthoc_view(model, log_prior, 0.0) is model
    x = torch.tensor([[0.2, 0.5, 0.9]])
    raw = model(x).detach()
    # z_c - 2 log(pi_c): class 0 gains -2 log .75 = 0.575, class 1 gains -2 log .25 = 2.773
    expected = raw - 2.0 * torch.tensor([math.log(0.75), math.log(0.25)])
    assert torch.allclose(adjusted(x).detach(), expected)
    assert torch.equal(adjusted.features(x), model.features(x))
    gained = (adjusted(x).detach() - raw)[0]
    assert (float(gained[0]), float(gained[1])) == pytest.approx((0.5754, 2.7726), abs=1e-4)
    # the weights are shared, not copied: training the model moves the adjusted view
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    assert torch.allclose(adjusted(x).detach(), model(x).detach() - 2.0 * log_prior)


def test_training_evaluates_the_adjusted_logits_and_trains_the_raw_ones() -> None:
    prepared = prepare_from_env("digits-at-bsl", (*TINY_RUN, "train.epochs=1",
                                                  "eval.posthoc_tau=1"))  # fmt: skip
    run = create_run(prepared, Home.from_env().runs)
    trainer = Trainer(run, torch.device("cpu"))
    trainer._build()
    assert trainer.step.model is trainer.model  # the step trains the raw model
    data = trainer.data
    with torch.no_grad():
        trainer.model.eval()
        shift = class_log_prior(prepared.resolved.class_counts)
        predicted = (trainer.model(data.test_x.float() / 255) - shift).argmax(1)
    by_hand = 100 * float((predicted == data.test_y).float().mean())
    got = trainer._evaluate(data.test_x, data.test_y, robust=False)["overall"]
    assert got == pytest.approx(by_hand)
    final = execute(run, heartbeat_s=None)
    assert final["std_overall"] is not None
    # srat eval reads the checkpoint the same way
    from srat_engine.evaluation.runner import restore_model

    doc = run.config()
    model, epoch = restore_model(run, prepared.config, doc["resolved"], torch.device("cpu"))
    assert isinstance(model, PosthocAdjusted) and epoch == 1 and not model.training


def test_robal_has_its_own_posthoc_shift() -> None:
    with pytest.raises(SratError, match=r"robal\.tau_p"):
        prepare_from_env("digits-robal", ("eval.posthoc_tau=1",))
