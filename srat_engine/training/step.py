"""One mini-batch of Algorithm 1 on device-resident data: augment, attack, update.

The loss L of Eq. 5 for the run's method, the precision and memory format the step runs in,
and :class:`TrainStep`, which the epoch loop and `srat bench` both execute.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F

from srat_engine.attacks import PGDResult, attack_mode, pgd_linf
from srat_engine.config.schema import RunConfig
from srat_engine.data.augment import random_crop_flip
from srat_engine.data.autoaugment import policy_augment
from srat_engine.data.resident import to_inputs
from srat_engine.losses import focal_loss, gair_weights, ldam_loss, separation_loss, weighted_mean
from srat_engine.losses.equalisation import taet_equalisation_loss
from srat_engine.losses.logit_adjustment import class_log_prior, prior_shifted_logits
from srat_engine.losses.reat import reat_tail_classes, tail_feature_alignment
from srat_engine.losses.robal import robal_train_logits
from srat_engine.losses.trades import trades_kl, trades_loss
from srat_engine.models import RobalCosineView, RobalHead, RobalOptions, SratModel
from srat_engine.models.fold import BatchNormFoldedView
from srat_engine.tf32 import tf32_allowed
from srat_engine.training.awp import add_perturbation, ascent_perturbation


def per_sample_loss(
    config: RunConfig, margins: torch.Tensor | None, log_prior: torch.Tensor | None = None
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The prediction loss L of Eq. 5, unreduced; for a prior-shift method (AT-BSL) on the
    logits z + tau log(pi) (`log_prior`: log of the training class frequencies). RoBal's is
    CE(s (cos - m_y onehot(y)) + tau_b log(pi)) on its head's cosines, `margins` its m_c."""
    loss = config.spec.loss
    if loss == "focal":
        plain = lambda logits, y: focal_loss(logits, y, config.loss.focal_gamma)  # noqa: E731
    elif loss == "ldam":
        assert margins is not None
        plain = lambda logits, y: ldam_loss(logits, y, margins, config.loss.ldam_scale)  # noqa: E731
    elif loss == "robal":
        assert margins is not None and log_prior is not None
        scale, tau_b = config.robal.scale, config.robal.tau_b
        plain = lambda cos, y: F.cross_entropy(  # noqa: E731
            robal_train_logits(cos, y, margins, scale, log_prior, tau_b), y, reduction="none"
        )
    else:
        plain = lambda logits, y: F.cross_entropy(logits, y, reduction="none")  # noqa: E731
    if not config.spec.prior_shift:
        return plain
    assert log_prior is not None
    tau = config.loss.prior_tau
    return lambda logits, y: plain(prior_shifted_logits(logits, log_prior, tau), y)


def robal_options(config: RunConfig, class_counts: Sequence[int]) -> RobalOptions | None:
    """What `build_model` needs for RoBal's head, None for any other head: log(pi) of the
    training class counts and the run's robal.scale, gamma and tau_p (the inference logits
    s cos - tau_p log(pi) that evaluation and `srat eval` see)."""
    if config.head() != "robal":
        return None
    robal = config.robal
    log_prior = tuple(class_log_prior(class_counts).tolist())
    return RobalOptions(log_prior, scale=robal.scale, gamma=robal.gamma, tau_p=robal.tau_p)


def _augment(x: torch.Tensor, config: RunConfig, generator: torch.Generator) -> torch.Tensor:
    if x.dim() != 4:
        return x
    if config.data.policy != "none":
        # before the crop and flip, as AT-BSL's transforms
        x = policy_augment(x, config.data.policy, generator=generator)
    mode = config.data.augment
    if mode == "none":
        return x
    pad = config.data.pad if mode in {"crop", "crop_flip"} else 0
    return random_crop_flip(x, pad=pad, flip=mode in {"flip", "crop_flip"}, generator=generator)


def resolve_precision(requested: str, device: torch.device) -> str:
    """The autocast dtype name actually used: ``auto`` is bf16 on CUDA GPUs with bf16 support.

    bf16 keeps fp32's exponent range, so the attack's input gradients do not underflow to zero
    the way fp16's can (sign(0) = 0 would weaken the attack); see README "Performance" for the
    recorded bf16-vs-fp32 robust accuracy check. Evaluation never autocasts.
    """
    if requested != "auto":
        return requested
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def resolve_channels_last(requested: str, device: torch.device, model: torch.nn.Module) -> bool:
    """NHWC for 2-d conv nets: cuDNN's tensor-core kernels want it on CUDA, and oneDNN on CPU
    ran the ResNet-18 and small-CNN PGD-AT steps faster with it (README "Performance");
    ``auto`` leaves other devices (mps) and models without Conv2d alone."""
    convolutional = any(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    if requested == "off" or not convolutional:
        return False
    return requested == "on" or device.type in {"cuda", "cpu"}


class TrainStep:
    """One mini-batch of Algorithm 1 on device-resident data: augment, attack, update.

    Built once per run; the epoch loop passes the epoch's class weights, GAIR switch and
    separation weight lambda, and sets its class-wise attack budgets and REAT's per-epoch
    state. Every quantity is accumulated into a device tensor, so a step never waits for the
    device (no ``.item()``, no data-dependent Python branch). The fast-path choices here change
    speed, not the maths: the attack takes input-only gradients with frozen parameters
    (``pgd_linf`` + ``attack_mode``), bf16 autocast when configured, channels_last memory
    format, and optional ``torch.compile`` of the two forward passes.
    """

    def __init__(
        self,
        model: SratModel,
        optimizer: torch.optim.Optimizer,
        config: RunConfig,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        *,
        generator: torch.Generator,
        clip: tuple[float, float] | None,
        device: torch.device,
        class_counts: Sequence[int] | None = None,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.config = config
        self.loss_fn = loss_fn
        self.generator = generator
        self.clip = clip
        self.device = device
        self.adversarial = config.spec.adversarial and config.attack.steps > 0
        self.trades = self.adversarial and config.spec.objective == "trades"
        self.taet = self.adversarial and config.spec.objective == "taet"
        self.pgd_kl = self.adversarial and config.spec.objective == "pgd-kl"
        # RobustLT's class-wise budgets eps_c and steps [C] (attack.class_budget), on the device;
        # the epoch loop sets them (set_class_budgets), the attack indexes them by label
        self.class_eps: torch.Tensor | None = None
        self.class_step: torch.Tensor | None = None
        # REAT: the attack's RBL class weights [C] and the counts [C] of this epoch's
        # adversarial predictions, which the epoch loop sets (set_reat_state) and the steps add
        # to; its TFA term's class counts and tail classes (`class_counts`), on the device once
        self.reat = self.adversarial and config.spec.objective == "reat"
        self.reat_inner_w: torch.Tensor | None = None
        self.reat_pred_counts: torch.Tensor | None = None
        if self.reat:
            if class_counts is None:
                raise ValueError("REAT's training step needs the training class counts")
            self.reat_counts = torch.tensor(list(class_counts), device=device)
            self.reat_tails = torch.tensor(
                reat_tail_classes(class_counts), dtype=torch.int64, device=device
            )
            self.reat_classes = torch.arange(len(class_counts), device=device)
        self.precision = resolve_precision(config.train.precision, device)
        self.channels_last = resolve_channels_last(config.train.channels_last, device, model)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        if device.type == "cuda":
            # input shapes are fixed within a run: let cuDNN pick its fastest kernels once
            torch.backends.cudnn.benchmark = True
        # RoBal's head gives its post-hoc inference logits in eval mode; its training attack
        # ascends CE on the scale-1 cosines instead, as the reference's does
        attacked: torch.nn.Module = model
        if isinstance(model.head, RobalHead):
            attacked = RobalCosineView(model)
        self.folded: BatchNormFoldedView | None = None
        if self.adversarial and config.train.fold_bn and config.attack.bn_mode == "eval":
            view = BatchNormFoldedView(attacked)
            self.folded = view if view.folded else None
        self.attack_forward: torch.nn.Module = self.folded or attacked
        self.update_forward: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
        self.update_forward = self._features_and_logits
        mode = config.train.compile
        if mode != "off":
            # the model itself stays uncompiled, so checkpoints keep their plain keys; the
            # attack's graphs see frozen parameters and need no weight gradients. A run has two
            # batch shapes at most (full, last partial): static kernels for each, never
            # dynamic-shape ones
            inductor_mode = None if mode == "default" else mode
            self.attack_forward = torch.compile(
                self.attack_forward, mode=inductor_mode, dynamic=False
            )
            self.update_forward = torch.compile(
                self._features_and_logits, mode=inductor_mode, dynamic=False
            )

    def _features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.model.features(x)
        return features, self.model.head(features)

    def precision_scope(self) -> Any:
        """The TF32 switch a whole step (attack, backward, update) runs under: off for fp32,
        on for tf32, PyTorch's own flags under bf16 (autocast casts the convolutions and
        matmuls TF32 would touch). A CUDA graph captured inside it keeps its kernels."""
        if self.precision in {"fp32", "tf32"}:
            return tf32_allowed(self.precision == "tf32")
        return nullcontext()

    def autocast(self) -> Any:
        if self.precision == "bf16":
            # no cast cache: a CUDA graph capture cannot hold one (the casts are re-done per
            # forward, a few MB each, against a step of hundreds of MB)
            return torch.autocast(self.device.type, dtype=torch.bfloat16, cache_enabled=False)
        return nullcontext()

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Raw (uint8) batch -> augmented float inputs in the step's memory format."""
        xb = to_inputs(_augment(x, self.config, self.generator))
        if self.channels_last and xb.dim() == 4:
            xb = xb.contiguous(memory_format=torch.channels_last)
        return xb

    def set_class_budgets(self, eps: torch.Tensor, step_size: torch.Tensor) -> None:
        """The class-wise budgets eps_c and step sizes [C] of the attacks from now on (the epoch
        loop sets each epoch's warmed-up ones). After the first call they are copied in place:
        a captured CUDA graph reads these very tensors, so its replays attack with the new ones."""
        if self.class_eps is None or self.class_step is None:
            self.class_eps = eps.to(self.device, torch.float32, copy=True)
            self.class_step = step_size.to(self.device, torch.float32, copy=True)
            return
        self.class_eps.copy_(eps)
        self.class_step.copy_(step_size)

    def set_reat_state(
        self, inner_w: torch.Tensor, pred_counts: torch.Tensor | None = None
    ) -> None:
        """REAT's per-epoch state: the RBL class weights [C] of this epoch's attacks
        (`losses.reat.reat_inner_weights` of the previous epoch's counts), and the per-class
        counts of adversarial predictions this epoch's steps add to, from 0, or from
        `pred_counts` (a checkpointed epoch's done batches). Copied in place after the first
        call, as set_class_budgets: a captured CUDA graph reads and adds to these very tensors."""
        if not self.reat:
            raise RuntimeError("set_reat_state: this step does not train REAT adversarially")
        counts = torch.zeros_like(self.reat_classes) if pred_counts is None else pred_counts
        if self.reat_inner_w is None or self.reat_pred_counts is None:
            self.reat_inner_w = inner_w.to(self.device, torch.float32, copy=True)
            self.reat_pred_counts = counts.to(self.device, torch.int64, copy=True)
            return
        self.reat_inner_w.copy_(inner_w)
        self.reat_pred_counts.copy_(counts)

    def attack_training_loss(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
        """With attack.loss = "training", what PGD ascends instead of the reference's loss:

            sum_i L(f(x'_i), y_i)

        the run's prediction loss L of Eq. 5 (Wang et al. 2022) read literally, summed over
        the batch (and over a stack's runs: logits [N, K, C]) and unweighted: a class or GAIR
        weight w_i > 0 only rescales sample i's input gradient (BatchNorm in eval mode), so it
        cannot move a sign step. None (the reference's attack) otherwise; `config.resolve`
        refuses it for TRADES and REAT, whose attacks are their own."""
        if self.config.attack.loss != "training":
            return None
        loss_fn = self.loss_fn

        def summed_training_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return loss_fn(logits.flatten(0, -2).float(), target.flatten()).sum()

        return summed_training_loss

    def attack(self, xb: torch.Tensor, y: torch.Tensor) -> PGDResult:
        """The training attack (Algorithm 1, line 5) on augmented float inputs ``xb``: PGD on
        the batch's summed cross entropy of the model's logits whatever the training loss L
        (PGD-AT practice; for LDAM the logits are s cos, without the margins), REAT's on its
        class-weighted CE, TRADES' on the sum of KL(f(x) || f(x')), with f(x) taken in the
        attack's BatchNorm mode (the reference computes it under model.eval()); with
        attack.loss = "training", on the summed L itself (`attack_training_loss`).
        With attack.class_budget, sample i is attacked within eps_{y_i} with step step_{y_i}
        (`set_class_budgets`), from RobustLT's start U(-eps, eps) of the global eps."""
        config = self.config
        eps: float | torch.Tensor = config.attack.eps
        step_size: float | torch.Tensor = config.attack.step_size
        start_eps = None
        if config.attack.class_budget:
            if self.class_eps is None or self.class_step is None:
                raise RuntimeError("attack.class_budget is on: call set_class_budgets first")
            eps, step_size = self.class_eps[y], self.class_step[y]
            start_eps = config.attack.eps
        inner_w = self.reat_inner_w
        if self.reat and inner_w is None:
            raise RuntimeError("REAT weights its attack's loss: call set_reat_state first")
        if self.folded is not None:
            self.folded.refresh()  # the last update moved weights and BN statistics
        with attack_mode(self.model, config.attack.bn_mode), self.autocast():
            loss_fn = self.attack_training_loss()
            if self.trades:
                with torch.no_grad():
                    natural = self.attack_forward(xb).float()
                loss_fn = lambda logits, _y: trades_kl(natural, logits.float()).sum()  # noqa: E731
            elif self.reat and inner_w is not None:
                # RBL, the reference's F.cross_entropy(weight=w): sum_i w_yi CE_i / sum_i w_yi
                loss_fn = lambda logits, target: weighted_mean(  # noqa: E731
                    F.cross_entropy(logits.float(), target, reduction="none"),
                    inner_w[target],
                    "normalized",
                )
            return pgd_linf(
                self.attack_forward,
                xb,
                y,
                eps=eps,
                step_size=step_size,
                steps=config.attack.steps,
                random_start=config.attack.random_start,
                loss_fn=loss_fn,
                generator=self.generator,
                clip=self.clip,
                start_eps=start_eps,
            )

    def update_loss(
        self,
        xb: torch.Tensor,
        natural: torch.Tensor,
        y: torch.Tensor,
        *,
        adversarial: bool,
        kappa: torch.Tensor | None,
        class_w: torch.Tensor | None,
        use_gair: bool,
        lam: float,
        forward: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """The method's update loss at the current weights on the step's inputs ``xb`` (the
        attack's examples when ``adversarial``; ``natural`` the clean ones): (total, separation
        loss or None, logits of ``xb``). TRADES adds CE(f(x), y) + beta KL; TAET reduces L over
        the batch with its equalisation loss instead of the weighted mean; REAT adds
        reat.tfa_weight times its TFA term on the penultimate features; pgd-kl (RoBal) adds
        beta KL(f(x) || f(x')) to L(f(x'), y). ``forward``: (features, logits) of a batch, by
        default this step's model (stacked runs pass each run's functional forward)."""
        config = self.config
        update_forward = forward or self.update_forward
        with self.autocast():
            features, logits = update_forward(xb)
            if self.trades and adversarial:
                # two forward passes in train mode, as the reference: CE on f(x) + beta KL
                _, natural_logits = update_forward(natural)
                per_sample = trades_loss(
                    natural_logits.float(), logits.float(), y, config.loss.trades_beta
                )
            elif self.pgd_kl and adversarial:
                # RoBal's add_reg: L(f(x'), y) + beta KL(f(x) || f(x')), f the train-mode
                # (scale-1) head output; its beta_nat = 0 CE term on f(x) adds no gradient
                _, natural_logits = update_forward(natural)
                kl = trades_kl(natural_logits.float(), logits.float())
                per_sample = self.loss_fn(logits.float(), y) + config.loss.trades_beta * kl
            else:
                per_sample = self.loss_fn(logits.float(), y)
            weights = class_w[y] if class_w is not None else None
            if use_gair and kappa is not None:
                geometry = gair_weights(
                    kappa, config.attack.steps, config.gair.lam, config.gair.func
                )
                weights = geometry if weights is None else weights * geometry
            if self.taet and adversarial:
                # the reference's HARL: unweighted per-sample CE, its default 0.1/0.1/0.1
                loss = taet_equalisation_loss(per_sample, y, logits.shape[1])
            else:
                loss = weighted_mean(per_sample, weights, config.reduction())
            if self.reat and adversarial and config.reat.tfa_weight:
                # REAT's TFA on the adversarial penultimate features (the reference: weight 1)
                tfa = tail_feature_alignment(
                    features.float(), y, self.reat_counts, self.reat_tails, config.reat.tfa_mode
                )
                loss = loss + config.reat.tfa_weight * tfa
            sep = separation_loss(features.float(), y, config.loss.sep_tau) if lam else None
            total = loss + lam * sep if sep is not None else loss
        return total, sep, logits

    def __call__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        class_w: torch.Tensor | None = None,
        use_gair: bool = False,
        lam: float = 0.0,
        awp: bool = False,
        natural_stage: bool = False,
        sums: torch.Tensor | None = None,
    ) -> None:
        """Train on raw batch ``x`` (uint8 images or float vectors) with labels ``y``.

        ``awp``: take the update's gradient at adversarially perturbed weights (Wu et al. 2020,
        `training/awp.py`), stepping there and taking the perturbation off after the step, as
        the reference does. ``natural_stage``: no attack, the plain loss on clean inputs
        (TAET's stage 1). ``sums`` (4 floats on the device), when given, accumulates the
        batch's total loss x N, separation loss x N, adversarial hits and a non-finite-loss
        flag.
        """
        with self.precision_scope():
            xb = self.inputs(x)
            natural = xb
            kappa = None
            adversarial = self.adversarial and not natural_stage
            if adversarial:
                result = self.attack(xb, y)
                xb, kappa = result.x_adv, result.kappa

            def current_loss() -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
                return self.update_loss(
                    xb,
                    natural,
                    y,
                    adversarial=adversarial,
                    kappa=kappa,
                    class_w=class_w,
                    use_gair=use_gair,
                    lam=lam,
                )

            perturbed: tuple[list[torch.nn.Parameter], list[torch.Tensor]] | None = None
            if awp:
                # g: the gradient of the method's own update loss on the same examples
                perturbed = ascent_perturbation(
                    self.model, lambda: current_loss()[0], self.config.awp.gamma
                )
                add_perturbation(*perturbed, sign=1.0)
            total, sep, logits = current_loss()
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            self.optimizer.step()
            if perturbed is not None:
                add_perturbation(*perturbed, sign=-1.0)
            if self.reat and adversarial and self.reat_pred_counts is not None:
                with torch.no_grad():
                    # m_c += the batch's x' predicted as c, by the update's forward before the
                    # optimiser step (the reference's `logits_adv`); no host read
                    predicted = logits.argmax(1).unsqueeze(1)
                    self.reat_pred_counts += (predicted == self.reat_classes).sum(0)
            if sums is not None:
                with torch.no_grad():
                    sums[0] += total.detach() * len(y)
                    if sep is not None:
                        sums[1] += sep.detach() * len(y)
                    sums[2] += (logits.argmax(1) == y).sum()
                    sums[3] += (~torch.isfinite(total.detach())).float()
