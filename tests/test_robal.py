"""RoBal (Wu et al. 2021) as a composition of the trainer's parts: its head, its loss, its
attack on the scale-1 cosines and its TRADES term, checked step by step against a direct
implementation that follows the reference (wutong16/Adversarial_Long-Tail ``add_reg_train``,
``MultiMarginLoss``, ``CosPlus_Classifier``, ``PostProc_Classifier``) on a tiny model; the
inference logits evaluation sees; the presets."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from fake_runs import TINY_RUN, prepare_from_env
from test_new_methods import EPS, STEP, STEPS, kl_by_hand, tiny_batch, uniform_start
from torch import nn

from srat_engine.config.methods import canonical_method, compose_method, get_method
from srat_engine.config.schema import RobalConfig, RunConfig, validate_config
from srat_engine.errors import SratError
from srat_engine.evaluation.classwise import classwise_correct
from srat_engine.losses import class_log_prior
from srat_engine.models import RobalHead, SratModel, build_model
from srat_engine.models.robal import robal_cosine, robal_eval_logits
from srat_engine.per_class import robal_margins
from srat_engine.training.graphs import GraphedTrainStep
from srat_engine.training.step import TrainStep, per_sample_loss, robal_options

COUNTS = [30, 10, 5]
S, GAMMA, M, TAU_M, TAU_B, TAU_P, BETA = 10.0, 0.25, 0.1, 0.3, 1.2, 0.5, 6.0
LR = 0.5


def robal_config(**robal: float) -> RunConfig:
    return validate_config(
        {
            "method": "RoBal",
            "device": "cpu",
            "model": {"arch": "linear"},
            "attack": {"eps": EPS, "step_size": STEP, "steps": STEPS},
            "loss": {"trades_beta": BETA},
            "robal": {
                "scale": S,
                "gamma": GAMMA,
                "margin": M,
                "tau_m": TAU_M,
                "tau_b": TAU_B,
                "tau_p": TAU_P,
                **robal,
            },
            "train": {"channels_last": "off", "fold_bn": False, "precision": "fp32"},
        }
    )


class TwoLayer(SratModel):
    """Linear -> BatchNorm -> tanh -> RoBal's head: BN makes the attack's eval mode and the
    update's train mode differ, as in the reference's WRN."""

    def __init__(self, config: RunConfig) -> None:
        options = robal_options(config, COUNTS)
        assert options is not None
        head = RobalHead(
            5, 3, log_prior=options.log_prior, scale=S, gamma=GAMMA, tau_p=options.tau_p
        )
        super().__init__(5, head)
        self.body = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Tanh())

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def make_step(config: RunConfig, model: SratModel, device: str = "cpu") -> TrainStep:
    margins = torch.tensor(robal_margins(COUNTS, M, TAU_M, S), device=device)
    log_prior = class_log_prior(COUNTS).to(device)
    return TrainStep(
        model,
        torch.optim.SGD(model.parameters(), lr=LR),
        config,
        per_sample_loss(config, margins, log_prior),
        generator=torch.Generator(device=device).manual_seed(11),
        clip=(0.0, 1.0),
        device=torch.device(device),
    )


def cosines_by_hand(model: TwoLayer, x: torch.Tensor) -> torch.Tensor:
    """<z / ||z||, w_c / (||w_c|| + gamma)>, CosPlus_Classifier with scale 1."""
    z = model.body(x)
    z = z / z.norm(dim=1, keepdim=True)
    w = model.head.weight
    return z @ (w / (w.norm(dim=1, keepdim=True) + GAMMA)).T


def pgd_by_hand(
    loss_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """l_inf PGD ascending loss_of(x', y) from the step's first random draw."""
    lower, upper = (x - EPS).clamp(0, 1), (x + EPS).clamp(0, 1)
    x_adv = uniform_start(x)
    for _ in range(STEPS):
        x_adv = x_adv.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_of(x_adv, y), [x_adv])
        x_adv = torch.min(torch.max(x_adv.detach() + STEP * grad.sign(), lower), upper)
    return x_adv


def test_robal_step_matches_a_direct_implementation() -> None:
    config = robal_config()
    torch.manual_seed(0)
    model = TwoLayer(config)
    model.train()
    reference = copy.deepcopy(model)
    make_step(config, model)(*tiny_batch())

    x, y = tiny_batch()
    log_pi = torch.log(torch.tensor(COUNTS, dtype=torch.float32) / sum(COUNTS))
    margins = [M + TAU_M * torch.log(torch.tensor(n / min(COUNTS))) / S for n in COUNTS]
    # the attack: CE summed over the batch on the scale-1 cosines, BN in eval mode
    reference.eval()
    x_adv = pgd_by_hand(
        lambda xa, ya: F.cross_entropy(cosines_by_hand(reference, xa), ya, reduction="sum"), x, y
    )
    # ... not the post-hoc logits the head gives in eval mode: a different attack
    posthoc_adv = pgd_by_hand(
        lambda xa, ya: F.cross_entropy(reference(xa), ya, reduction="sum"), x, y
    )
    assert not torch.allclose(x_adv, posthoc_adv)
    # the update in train mode (x' first, then x, as the BN statistics see them):
    # MultiMargin on the cosines of x' + beta KL(softmax(cos x) || softmax(cos x'))
    reference.train()
    cos_adv = cosines_by_hand(reference, x_adv)
    cos_nat = cosines_by_hand(reference, x)
    rows = []
    for i in range(len(y)):
        target = int(y[i])
        row = [S * (cos_adv[i, c] - (margins[c] if c == target else 0)) for c in range(3)]
        rows.append(torch.stack(row) + TAU_B * log_pi)
    loss = F.cross_entropy(torch.stack(rows), y) + BETA * kl_by_hand(cos_nat, cos_adv).mean()
    loss.backward()
    with torch.no_grad():
        for param in reference.parameters():
            param -= LR * param.grad
    theirs = reference.state_dict()
    for name, value in model.state_dict().items():  # weights and BN running statistics
        assert torch.allclose(value.float(), theirs[name].float(), atol=1e-6), name


def test_the_head_gives_cosines_in_training_and_posthoc_logits_in_eval() -> None:
    config = robal_config(tau_p=5.0)  # strong enough to move predictions to the tail
    options = robal_options(config, COUNTS)
    assert options is not None and options.tau_p == 5.0 and options.gamma == GAMMA
    assert robal_options(validate_config({"method": "CE"}), COUNTS) is None
    torch.manual_seed(0)
    model = build_model("linear", 3, (4,), head="robal", robal=options)
    head = model.head
    assert isinstance(head, RobalHead)
    x = torch.rand(64, 4) * 2 - 1
    y = torch.arange(64) % 3
    with torch.no_grad():
        cos = robal_cosine(model.features(x), head.weight, GAMMA)
        eval_logits = robal_eval_logits(cos, S, class_log_prior(COUNTS), 5.0)
        model.train()
        torch.testing.assert_close(model(x), cos)
        model.eval()
        torch.testing.assert_close(model(x), eval_logits)
    # evaluation counts the post-hoc predictions, not the cosines' (which differ here)
    correct = classwise_correct(model, x, y, 3, batch_size=16, clip=None).tolist()
    hits = eval_logits.argmax(1) == y
    assert correct == [int(hits[y == c].sum()) for c in range(3)]
    assert not torch.equal(eval_logits.argmax(1), cos.argmax(1))
    # the prior is not part of a checkpoint: the run's config and counts give it
    assert set(model.state_dict()) == {"head.weight"}
    with pytest.raises(SratError, match="RobalOptions"):
        build_model("linear", 3, (4,), head="robal")


def test_the_folded_attack_view_attacks_the_same_cosines() -> None:
    """small_cnn's BNs folded into the attack's convolutions: the same step as unfolded."""
    steps = []
    for fold in (True, False):
        raw = robal_config().model_dump()
        raw["train"]["fold_bn"] = fold
        config = validate_config(raw)
        torch.manual_seed(0)
        options = robal_options(config, COUNTS)
        model = build_model("small_cnn", 3, (1, 8, 8), head="robal", robal=options)
        step = make_step(config, model)
        assert (step.folded is not None) == fold
        x = torch.randint(0, 256, (6, 1, 8, 8), generator=torch.Generator().manual_seed(5))
        step(x.to(torch.uint8), torch.tensor([0, 1, 2, 0, 1, 2]))
        steps.append(step)
    folded, plain = (s.model.state_dict() for s in steps)
    for name, value in plain.items():
        assert torch.allclose(folded[name].float(), value.float(), atol=1e-5), name


def test_names_defaults_and_head_checks() -> None:
    assert canonical_method("robal") == "RoBal" and compose_method("robal", "robal") == "RoBal"
    spec = get_method("RoBal")
    assert (spec.loss, spec.objective, spec.reweight) == ("robal", "pgd-kl", "none")
    assert validate_config({"method": "RoBal"}).head() == "robal"
    # the reference's RoBal-N on CIFAR-10-LT (cifar10_LT0.02_pgdat_robal_N_{train,eval}.yaml)
    d = RobalConfig()
    assert (d.scale, d.gamma, d.margin, d.tau_m, d.tau_b, d.tau_p) == (10, 1 / 32, 0.1, 0, 1.2, 0.1)
    with pytest.raises(SratError, match="does not fit RoBal"):
        prepare_from_env("digits-robal", ("model.head=linear",))
    with pytest.raises(SratError, match="does not fit CE"):
        prepare_from_env("digits-ce", ("model.head=robal",))


def test_digits_robal_trains_and_srat_eval_sees_its_inference_logits() -> None:
    from srat_engine.config.prepare import create_run
    from srat_engine.evaluation.runner import restore_model
    from srat_engine.runs.home import Home
    from srat_engine.training.trainer import execute

    prepared = prepare_from_env("digits-robal", (*TINY_RUN, "train.epochs=2"))
    assert prepared.resolved.robal_margins == pytest.approx([0.1] * 10)
    run = create_run(prepared, Home.from_env().runs)
    final = execute(run, heartbeat_s=None)
    assert run.exit_record()["status"] == "finished"
    assert 0 <= final["std_overall"] <= 100 and final["rob_overall"] is not None
    document = run.config()
    model, epoch = restore_model(
        run, prepared.config, document["resolved"], torch.device("cpu")
    )  # weights_only=True
    assert epoch == 2 and not model.training
    head = model.head
    assert isinstance(head, RobalHead) and head.tau_p == 0.1 and head.scale == 10.0
    log_pi = class_log_prior(prepared.resolved.class_counts)
    torch.testing.assert_close(head.log_prior, log_pi)
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        cos = robal_cosine(model.features(x), head.weight, 0.03125)
        torch.testing.assert_close(model(x), robal_eval_logits(cos, 10.0, log_pi, 0.1))


@pytest.mark.parametrize(
    ("preset", "dataset", "expected"),
    [
        ("robal-cifar10-ir50", "cifar10", (0.1, 0.0, 1.2, 0.1, 6.0)),
        ("lt2026-cifar10-ir50-robal", "cifar10", (0.1, 0.0, 1.2, 0.1, 6.0)),
        # the reference's CIFAR-100-LT RoBal-N: m 0.2, tau_b 0, beta_reg 3, tau_p 1.5
        ("lt2026-cifar100-ir50-robal", "cifar100", (0.2, 0.0, 0.0, 1.5, 3.0)),
    ],
)
def test_cifar_presets_resolve(preset: str, dataset: str, expected: tuple[float, ...]) -> None:
    from srat_engine.config.presets import load_preset
    from srat_engine.runs.home import Home

    config = prepare_from_env(preset, ("data.dataset=synthetic",)).config
    assert load_preset(preset, Home.from_env().preset_dirs)["data"]["dataset"] == dataset
    assert config.method == "RoBal" and config.head() == "robal"
    assert (config.data.imbalance, config.data.ratio) == ("exp", 50)
    robal = config.robal
    got = (robal.margin, robal.tau_m, robal.tau_b, robal.tau_p, config.loss.trades_beta)
    assert got == expected
    if preset == "robal-cifar10-ir50":  # the reference's own protocol
        train = config.train
        assert (config.model.arch, train.epochs, train.batch_size) == ("wrn34_10", 80, 64)
        assert (train.lr_milestones, train.lr_gamma, train.weight_decay) == ([59, 74], 0.1, 2e-4)
        assert (config.attack.steps, config.eval.steps) == (5, 20)


@pytest.mark.cuda
def test_cuda_graph_replays_robal_like_the_eager_step() -> None:
    config = validate_config({**robal_config().model_dump(), "device": "cuda"})
    options = robal_options(config, COUNTS)
    torch.manual_seed(0)
    model = build_model("small_cnn", 3, (1, 8, 8), head="robal", robal=options).cuda()
    other = copy.deepcopy(model)
    torch.backends.cudnn.deterministic = True
    try:
        eager = make_step(config, model, "cuda")
        graphed = GraphedTrainStep(make_step(config, other, "cuda"))
        g = torch.Generator(device="cuda").manual_seed(4)
        for _ in range(6):  # 3 warm-up steps, the capture, 2 replays
            x = torch.randint(0, 256, (8, 1, 8, 8), generator=g, device="cuda")
            y = torch.randint(0, 3, (8,), generator=g, device="cuda")
            eager(x.to(torch.uint8), y)
            graphed(x.to(torch.uint8), y)
        torch.cuda.synchronize()
    finally:
        torch.backends.cudnn.deterministic = False
    assert graphed.graphs.failed is None and graphed.graphs.captured == 1
    theirs = eager.model.state_dict()
    for name, value in graphed.step.model.state_dict().items():
        assert torch.allclose(value.float(), theirs[name].float(), rtol=1e-5, atol=1e-6), name
