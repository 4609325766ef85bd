"""REAT (Li et al. 2023, GuanlinLee/REAT) as a composition of the trainer's parts: its training
step against a direct implementation that follows the reference's ``loss_functions.REAT``, the
per-epoch counts of adversarial predictions that weight the next epoch's attack, their survival
across a resume (at an epoch boundary and mid-epoch), and its presets."""

from __future__ import annotations

import copy
import threading
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from fake_runs import TINY_RUN, prepare_from_env
from test_awp_taet import LR, MOMENTUM, WEIGHT_DECAY, TwoLayer, assert_same_state
from test_new_methods import EPS, STEP, STEPS, uniform_start
from test_preemption import request_after
from torch import nn

import srat_engine.training.trainer as trainer_module
from srat_engine.config.methods import compose_method, get_method
from srat_engine.config.prepare import create_run
from srat_engine.config.schema import ReatConfig, RunConfig, validate_config
from srat_engine.errors import RunPreempted
from srat_engine.losses.logit_adjustment import class_log_prior
from srat_engine.losses.reat import TFA_MODES, reat_inner_weights
from srat_engine.runs.rundir import RunDir
from srat_engine.training.checkpoint import load_checkpoint
from srat_engine.training.step import TrainStep, per_sample_loss
from srat_engine.training.trainer import execute

__all__ = ["request_after"]  # the fixture, imported for pytest

# four classes, so that TFA has an anchor class (C - (2 (C // 3) + 1) = 1: the rarest, 3)
COUNTS = [40, 20, 10, 5]
# last epoch's adversarial predictions: class 3 was never predicted and takes most weight
PREDICTED = [50, 20, 5, 0]


def reat_config(**sections: dict[str, Any]) -> RunConfig:
    return validate_config(
        {
            "method": "REAT",
            "device": "cpu",
            "model": {"arch": "linear"},
            "attack": {"eps": EPS, "step_size": STEP, "steps": STEPS, **sections.pop("attack", {})},
            "train": {"channels_last": "off", "fold_bn": False, "precision": "fp32"},
            **sections,
        }
    )


def reat_batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    x = torch.rand(8, 4, generator=generator) * 0.8 + 0.1
    return x, torch.tensor([0, 1, 2, 3, 0, 1, 3, 2])


def reat_step(config: RunConfig, model: nn.Module, lr: float = LR) -> TrainStep:
    optimizer = torch.optim.SGD(
        model.parameters(), lr=lr, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY
    )
    return TrainStep(
        typing.cast(Any, model),
        optimizer,
        config,
        per_sample_loss(config, None, class_log_prior(COUNTS)),
        generator=torch.Generator().manual_seed(11),
        clip=(0.0, 1.0),
        device=torch.device("cpu"),
        class_counts=COUNTS,
    )


def rbl_weights_by_hand(counts: list[int], predicted: list[int]) -> torch.Tensor:
    """loss_functions.RBL's weights, as written there."""
    effective = []
    for n, m in zip(counts, predicted, strict=True):
        beta = (n - 1.0) / n
        effective.append((1.0 - beta**m) / (1.0 - beta))
    w = [1.0 / (e + 1e-5) for e in effective]
    return torch.tensor([v / sum(w) * len(counts) for v in w])


def attack_by_hand(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bn_mode: str
) -> torch.Tensor:
    """REAT's attack: signed steps on F.cross_entropy(f(x'), y, weight=w), the model in eval
    mode (the reference) or train mode (BatchNorm on the iterates' batch statistics)."""
    model.train(bn_mode == "train")
    lower, upper = (x - EPS).clamp(0, 1), (x + EPS).clamp(0, 1)
    x_adv = uniform_start(x)
    for _ in range(STEPS):
        x_adv = x_adv.clone().requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y, weight=weight)
        (grad,) = torch.autograd.grad(loss, [x_adv])
        x_adv = torch.min(torch.max(x_adv.detach() + STEP * grad.sign(), lower), upper)
    model.train()
    return x_adv


def tail_by_hand(features: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """loss_functions.REAT's TAIL loop: KLDivLoss(size_average='none') is reduction "mean"."""
    spc = torch.tensor(COUNTS, dtype=torch.float32)
    weights = torch.sqrt(1.0 / (spc / spc.sum()))
    tail_class = list(range(len(COUNTS) // 3 * 2 + 1, len(COUNTS)))
    kl = nn.KLDivLoss(reduction="mean")
    n = y.shape[0]
    total: Any = 0.0
    counter = 0
    for bi in range(n):
        if y[bi].item() in tail_class:
            idt = torch.tensor([-1.0 if y[bi] == y[bj] else 1.0 for bj in range(n)])
            w = torch.tensor([(weights[y[bi]] + weights[y[bj]]).item() for bj in range(n)])
            anchor = F.softmax(features[bi].detach().view(1, -1).tile(n).view(n, -1), 1)
            total = total + kl(F.log_softmax(features, 1), anchor) * idt * w
            counter += 1
    return total.mean() / counter


# the reference's KLDivLoss reduction "mean", which torch warns about
@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides the total loss")
@pytest.mark.parametrize(
    "bn_mode, tfa_weight", [("eval", 1.0), ("train", 1.0), ("train", 0.0), ("eval", 2.5)]
)
def test_reat_step_matches_the_reference_update(bn_mode: str, tfa_weight: float) -> None:
    torch.manual_seed(0)
    model = TwoLayer(classes=4)
    model.train()
    reference = copy.deepcopy(model)
    step = reat_step(
        reat_config(attack={"bn_mode": bn_mode}, reat={"tfa_weight": tfa_weight}), model
    )
    step.set_reat_state(reat_inner_weights(COUNTS, PREDICTED))
    x, y = reat_batch()
    step(x, y)

    weight = rbl_weights_by_hand(COUNTS, PREDICTED)
    x_adv = attack_by_hand(reference, x, y, weight, bn_mode)
    if bn_mode == "train":  # where samples interact, the class weights move the attack
        plain = attack_by_hand(copy.deepcopy(reference), x, y, torch.ones(4), bn_mode)
        assert not torch.allclose(plain, x_adv)
    optimizer = torch.optim.SGD(
        reference.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY
    )
    features = reference.features(x_adv)
    logits = reference.head(features)
    balanced = F.cross_entropy(logits + torch.tensor(COUNTS, dtype=torch.float32).log(), y)
    (balanced + tfa_weight * tail_by_hand(features, y)).backward()
    optimizer.step()
    assert_same_state(model, reference)
    # m counts the x' by the update's forward before the optimiser step, as `logits_adv`
    expected = torch.bincount(logits.argmax(1), minlength=4)
    assert step.reat_pred_counts is not None
    assert torch.equal(step.reat_pred_counts, expected)


def test_the_counts_accumulate_over_an_epoch_and_restart_in_place() -> None:
    # a model that predicts class 1 whatever the input: every x' counts for class 1
    model = TwoLayer(classes=4)
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
        model.head.bias.copy_(torch.tensor([0.0, 100.0, 0.0, 0.0]))
    step = reat_step(reat_config(), model, lr=1e-6)
    with pytest.raises(RuntimeError, match="set_reat_state"):
        step(*reat_batch())
    step.set_reat_state(reat_inner_weights(COUNTS, COUNTS))
    counts, weights = step.reat_pred_counts, step.reat_inner_w
    assert counts is not None and weights is not None
    for _ in range(3):
        step(*reat_batch())
    assert counts.tolist() == [0, 24, 0, 0]
    # the next epoch: RBL weights of those counts, the counts from 0, in the same tensors (a
    # captured CUDA graph reads and adds to them)
    step.set_reat_state(reat_inner_weights(COUNTS, counts.tolist()))
    assert step.reat_pred_counts is counts and step.reat_inner_w is weights
    assert counts.tolist() == [0, 0, 0, 0]
    torch.testing.assert_close(weights, rbl_weights_by_hand(COUNTS, [0, 24, 0, 0]))
    # a checkpointed epoch continues from its done batches' counts
    step.set_reat_state(weights.clone(), torch.tensor([1, 2, 3, 4]))
    step(*reat_batch())
    assert counts.tolist() == [1, 10, 3, 4]


def test_each_epoch_attacks_with_the_weights_of_the_last_epochs_predictions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # what the trainer passes its step each epoch, and every adversarial prediction it makes
    weights: list[torch.Tensor] = []
    predictions: list[list[torch.Tensor]] = []
    real_set, real_update = TrainStep.set_reat_state, TrainStep.update_loss

    def set_state(self: TrainStep, inner_w: torch.Tensor, pred_counts: Any = None) -> None:
        weights.append(inner_w.clone())
        predictions.append([])
        real_set(self, inner_w, pred_counts)

    def update(self: TrainStep, *args: Any, **kwargs: Any) -> Any:
        total, sep, logits = real_update(self, *args, **kwargs)
        predictions[-1].append(logits.detach().argmax(1))
        return total, sep, logits

    monkeypatch.setattr(TrainStep, "set_reat_state", set_state)
    monkeypatch.setattr(TrainStep, "update_loss", update)
    run = create_run(
        prepare_from_env("digits-reat", (*TINY_RUN, "train.epochs=3")), root=tmp_path / "runs"
    )
    execute(run, heartbeat_s=None)
    counts = run.config()["resolved"]["class_counts"]
    assert len(weights) == 3
    torch.testing.assert_close(weights[0], rbl_weights_by_hand(counts, counts))  # m = n first
    per_epoch = [torch.bincount(torch.cat(p), minlength=10).tolist() for p in predictions]
    assert all(sum(m) == sum(counts) for m in per_epoch)
    for epoch in (1, 2):
        expected = rbl_weights_by_hand(counts, per_epoch[epoch - 1])
        torch.testing.assert_close(weights[epoch], expected)
    state = load_checkpoint(run.checkpoint_path)  # weights_only=True
    assert state["reat_m"].tolist() == per_epoch[2] and "reat_pred_counts" not in state


def test_digits_reat_trains() -> None:
    from srat_engine.runs.home import Home

    prepared = prepare_from_env("digits-reat", (*TINY_RUN, "train.epochs=2"))
    assert prepared.config.method == "REAT"
    run = create_run(prepared, Home.from_env().runs)
    final = execute(run, heartbeat_s=None)
    assert run.exit_record()["status"] == "finished"
    assert 0 <= final["std_overall"] <= 100 and final["rob_overall"] is not None
    epochs = [r for r in run.metrics() if r["event"] == "epoch"]
    assert len(epochs) == 2 and all(r["loss"] > 0 for r in epochs)


# --- resume ----------------------------------------------------------------------------------

# 3 epochs of 4 batches (159 digits); BatchNorm on batch statistics in the attack, where the
# RBL weights change x' (in eval mode they cannot), so lost counts would change the results
BATCHES = 4
RESUMED = (*TINY_RUN, "train.epochs=3", "train.batch_size=40", "attack.bn_mode=train")
_TIMING = ("time", "train_seconds", "eval_seconds")


def _create(root: Path) -> RunDir:
    return create_run(prepare_from_env("digits-reat", RESUMED), root=root / "runs")


def _results(run: RunDir) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in r.items() if k not in _TIMING}
        for r in run.metrics()
        if r["event"] in ("epoch", "final")
    ]


def _record_weights(monkeypatch: pytest.MonkeyPatch) -> list[torch.Tensor]:
    """The RBL weights the trainer sets on its step, one per epoch started, from now on."""
    weights: list[torch.Tensor] = []
    real = TrainStep.set_reat_state

    def recording(self: TrainStep, inner_w: torch.Tensor, pred_counts: Any = None) -> None:
        weights.append(inner_w.clone())
        real(self, inner_w, pred_counts)

    monkeypatch.setattr(TrainStep, "set_reat_state", recording)
    return weights


Straight = tuple[list[dict[str, Any]], list[torch.Tensor]]


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Straight:
    """The uninterrupted run's results and the weights each of its epochs attacked with."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SRAT_HOME", str(tmp_path_factory.mktemp("srat-home")))
        env.delenv("SRAT_PRESETS", raising=False)
        env.delenv("SRAT_DATA", raising=False)
        weights = _record_weights(env)
        run = _create(tmp_path_factory.mktemp("straight"))
        execute(run, heartbeat_s=None)
    assert len(weights) == 3
    return _results(run), weights


def _same_weights(resumed: list[torch.Tensor], straight: list[torch.Tensor]) -> bool:
    return len(resumed) == len(straight) and all(map(torch.equal, resumed, straight))


@pytest.mark.parametrize(
    "k, epoch, batch",
    [(2, 0, 2), (BATCHES, 0, BATCHES), (BATCHES + 3, 1, 3)],
    ids=["mid-epoch-1", "after-epoch-1-batches", "mid-epoch-2"],
)
def test_a_run_stopped_mid_epoch_resumes_to_the_uninterrupted_results(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    straight: Straight,
    request_after: Callable[[int], threading.Event],
    k: int,
    epoch: int,
    batch: int,
) -> None:
    run = _create(tmp_path)
    with pytest.raises(RunPreempted) as stop:
        execute(run, checkpoint_request=request_after(k), heartbeat_s=None)
    assert (stop.value.epoch, stop.value.batch) == (epoch, batch)
    state = load_checkpoint(run.checkpoint_path)
    assert state["reat_m"].shape == state["reat_pred_counts"].shape == (10,)
    # one count per x' of the done batches (40 each, the last one 39)
    n = sum(run.config()["resolved"]["class_counts"])
    assert int(state["reat_pred_counts"].sum()) == min(40 * batch, n)
    weights = _record_weights(monkeypatch)
    execute(run, resume=True, heartbeat_s=None)
    # the resumed epochs attack with the uninterrupted run's weights: the next epoch's come
    # from the restored counts of the stopped one's done batches and the rest it trains
    assert _same_weights(weights, straight[1][epoch:])
    assert _results(run) == straight[0]


def test_a_run_stopped_at_an_epoch_boundary_resumes_to_the_uninterrupted_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, straight: Straight
) -> None:
    run = _create(tmp_path)
    event = threading.Event()

    def after_epoch_1(record: dict[str, Any]) -> None:
        if record["event"] == "epoch" and record["epoch"] == 1:
            event.set()

    with pytest.raises(RunPreempted):
        execute(run, checkpoint_request=event, on_event=after_epoch_1, heartbeat_s=None)
    state = load_checkpoint(run.checkpoint_path)
    n = sum(run.config()["resolved"]["class_counts"])
    # epoch 1's counts, which weight epoch 2's attacks; no position, no running counts
    assert int(state["reat_m"].sum()) == n and "reat_pred_counts" not in state
    weights = _record_weights(monkeypatch)
    execute(run, resume=True, heartbeat_s=None)
    assert _same_weights(weights, straight[1][1:])
    assert _results(run) == straight[0]


def test_a_resume_that_lost_the_counts_would_not_match(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    straight: Straight,
    request_after: Callable[[int], threading.Event],
) -> None:
    # the check above can fail: without the restored counts (epoch 2's last batch attacks with
    # the weights of m = n, not of epoch 1's predictions) the results differ
    run = _create(tmp_path)
    with pytest.raises(RunPreempted):
        execute(run, checkpoint_request=request_after(7), heartbeat_s=None)
    monkeypatch.setattr(trainer_module.Trainer, "_restore_reat", lambda self, state: None)
    execute(run, resume=True, heartbeat_s=None)
    assert _results(run) != straight[0]


def test_a_checkpoint_with_wrong_counts_refuses_to_resume(
    tmp_path: Path, request_after: Callable[[int], threading.Event]
) -> None:
    from srat_engine.errors import SratError

    run = _create(tmp_path)
    with pytest.raises(RunPreempted):
        execute(run, checkpoint_request=request_after(1), heartbeat_s=None)
    state = load_checkpoint(run.checkpoint_path)
    torch.save({**state, "reat_m": torch.tensor([1.5] * 10)}, run.checkpoint_path)
    with pytest.raises(SratError, match="does not fit: its reat_m are not 10 counts"):
        execute(run, resume=True, heartbeat_s=None)


# --- names, config, presets ------------------------------------------------------------------


def test_names_schemes_and_config() -> None:
    spec = get_method("reat")
    assert spec.name == "REAT" and spec.objective == "reat" and spec.prior_shift
    assert spec.reweight == "none" and not spec.awp
    assert compose_method("reat", "ce") == "REAT" and compose_method("bsl", "ce") == "AT-BSL"
    defaults = ReatConfig()
    assert (defaults.tfa_weight, defaults.tfa_mode) == (1.0, "reference")
    assert typing.get_args(ReatConfig.model_fields["tfa_mode"].annotation) == TFA_MODES


def test_reat_cifar_preset_is_the_references_protocol() -> None:
    prepared = prepare_from_env("reat-cifar10-ir50", ("data.dataset=synthetic",))
    config, resolved = prepared.config, prepared.resolved
    assert config.method == "REAT" and config.model.arch == "resnet18"
    assert (config.data.imbalance, config.data.ratio) == ("exp", 50)
    assert config.train.epochs == 80 and resolved.lr_milestones == [60, 75]
    assert (config.train.lr, config.train.lr_gamma, config.train.weight_decay) == (0.1, 0.1, 5e-4)
    assert (config.attack.steps, config.attack.bn_mode, config.train.batch_size) == (
        10,
        "eval",
        128,
    )
    assert config.attack.eps == pytest.approx(8 / 255)
    assert config.attack.step_size == pytest.approx(2 / 255)
    assert (config.reat.tfa_weight, config.reat.tfa_mode) == (1.0, "reference")
    for dataset in ("cifar10", "cifar100"):
        common = prepare_from_env(f"lt2026-{dataset}-ir50-reat", ("data.dataset=synthetic",))
        assert common.config.method == "REAT" and common.config.model.arch == "wrn28_10"


# --- CUDA graphs -----------------------------------------------------------------------------


@pytest.mark.cuda
def test_cuda_graph_replays_reat_steps_like_the_eager_step() -> None:
    from srat_engine.bench.benchmark import bench_config, build_pair
    from srat_engine.training.graphs import GraphedTrainStep

    device = torch.device("cuda")
    counts = [500, 300, 200, 120, 80, 50, 30, 20, 12, 8]
    config = bench_config("small_cnn", 8, 3, ("train.precision=fp32",))
    config = config.model_copy(update={"method": "REAT"})
    torch.backends.cudnn.deterministic = True
    try:
        steps = []
        for _ in range(2):
            model, _, sgd = build_pair("small_cnn", device, seed=0)
            steps.append(
                TrainStep(
                    model,
                    sgd(model),
                    config,
                    per_sample_loss(config, None, class_log_prior(counts).to(device)),
                    generator=torch.Generator(device=device).manual_seed(3),
                    clip=(0.0, 1.0),
                    device=device,
                    class_counts=counts,
                )
            )
        eager, inner = steps
        graphed = GraphedTrainStep(inner)
        g = torch.Generator(device=device).manual_seed(4)
        seen = []
        for epoch in range(2):  # the second epoch's weights reach the captured graph
            m = counts if epoch == 0 else eager.reat_pred_counts.tolist()  # type: ignore[union-attr]
            for step in (eager, inner):
                step.set_reat_state(reat_inner_weights(counts, m))
            for _ in range(6):
                x = torch.randint(0, 256, (8, 3, 32, 32), generator=g, device=device)
                y = torch.randint(0, 10, (8,), generator=g, device=device)
                eager(x.to(torch.uint8), y)
                graphed(x.to(torch.uint8), y)
            seen.append((eager.reat_pred_counts.clone(), inner.reat_pred_counts.clone()))  # type: ignore[union-attr]
        torch.cuda.synchronize()
    finally:
        torch.backends.cudnn.deterministic = False
    assert graphed.graphs.failed is None and graphed.graphs.captured >= 1
    for ours, theirs in seen:
        assert torch.equal(ours, theirs) and int(ours.sum()) == 48
    reference = eager.model.state_dict()
    for name, value in inner.model.state_dict().items():
        assert torch.allclose(value.float(), reference[name].float(), rtol=1e-5, atol=1e-6), name
