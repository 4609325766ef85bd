"""One mini-batch of Algorithm 1 on device-resident data: augment, attack, update.

The loss L of Eq. 5 for the run's method, the precision and memory format the step runs in,
and :class:`TrainStep`, which the epoch loop and `srat bench` both execute.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F

from srat_engine.attacks import PGDResult, attack_mode, pgd_linf
from srat_engine.config.schema import RunConfig
from srat_engine.data.augment import random_crop_flip
from srat_engine.data.resident import to_inputs
from srat_engine.losses import focal_loss, gair_weights, ldam_loss, separation_loss, weighted_mean
from srat_engine.losses.logit_adjustment import prior_shifted_logits
from srat_engine.losses.trades import trades_kl, trades_loss
from srat_engine.models import SratModel
from srat_engine.models.fold import BatchNormFoldedView


def per_sample_loss(
    config: RunConfig, margins: torch.Tensor | None, log_prior: torch.Tensor | None = None
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The prediction loss L of Eq. 5, unreduced; for a prior-shift method (AT-BSL) on the
    logits z + tau log(pi) (`log_prior`: log of the training class frequencies)."""
    loss = config.spec.loss
    if loss == "focal":
        plain = lambda logits, y: focal_loss(logits, y, config.loss.focal_gamma)  # noqa: E731
    elif loss == "ldam":
        assert margins is not None
        plain = lambda logits, y: ldam_loss(logits, y, margins, config.loss.ldam_scale)  # noqa: E731
    else:
        plain = lambda logits, y: F.cross_entropy(logits, y, reduction="none")  # noqa: E731
    if not config.spec.prior_shift:
        return plain
    assert log_prior is not None
    tau = config.loss.prior_tau
    return lambda logits, y: plain(prior_shifted_logits(logits, log_prior, tau), y)


def _augment(x: torch.Tensor, config: RunConfig, generator: torch.Generator) -> torch.Tensor:
    mode = config.data.augment
    if mode == "none" or x.dim() != 4:
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
    separation weight lambda. Every quantity is accumulated into a device tensor, so a step
    never waits for the device (no ``.item()``, no data-dependent Python branch). The fast-path
    choices here change speed, not the maths: the attack takes input-only gradients with
    frozen parameters (``pgd_linf`` + ``attack_mode``), bf16 autocast when configured,
    channels_last memory format, and optional ``torch.compile`` of the two forward passes.
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
        self.precision = resolve_precision(config.train.precision, device)
        self.channels_last = resolve_channels_last(config.train.channels_last, device, model)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        if device.type == "cuda":
            # input shapes are fixed within a run: let cuDNN pick its fastest kernels once
            torch.backends.cudnn.benchmark = True
        self.folded: BatchNormFoldedView | None = None
        if self.adversarial and config.train.fold_bn and config.attack.bn_mode == "eval":
            view = BatchNormFoldedView(model)
            self.folded = view if view.folded else None
        self.attack_forward: torch.nn.Module = self.folded or model
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

    def attack(self, xb: torch.Tensor, y: torch.Tensor) -> PGDResult:
        """The training attack (Algorithm 1, line 5) on augmented float inputs ``xb``: PGD on
        the sum of L over the batch, or for TRADES on the sum of KL(f(x) || f(x')), with f(x)
        taken in the attack's BatchNorm mode (the reference computes it under model.eval())."""
        config = self.config
        if self.folded is not None:
            self.folded.refresh()  # the last update moved weights and BN statistics
        with attack_mode(self.model, config.attack.bn_mode), self.autocast():
            loss_fn = None
            if self.trades:
                with torch.no_grad():
                    natural = self.attack_forward(xb).float()
                loss_fn = lambda logits, _y: trades_kl(natural, logits.float()).sum()  # noqa: E731
            return pgd_linf(
                self.attack_forward,
                xb,
                y,
                eps=config.attack.eps,
                step_size=config.attack.step_size,
                steps=config.attack.steps,
                random_start=config.attack.random_start,
                loss_fn=loss_fn,
                generator=self.generator,
                clip=self.clip,
            )

    def __call__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        class_w: torch.Tensor | None = None,
        use_gair: bool = False,
        lam: float = 0.0,
        sums: torch.Tensor | None = None,
    ) -> None:
        """Train on raw batch ``x`` (uint8 images or float vectors) with labels ``y``.

        ``sums`` (4 floats on the device), when given, accumulates the batch's total loss x N,
        separation loss x N, adversarial hits and a non-finite-loss flag.
        """
        config = self.config
        xb = self.inputs(x)
        natural = xb
        kappa = None
        if self.adversarial:
            result = self.attack(xb, y)
            xb, kappa = result.x_adv, result.kappa
        with self.autocast():
            features, logits = self.update_forward(xb)
            if self.trades:
                # two forward passes in train mode, as the reference: CE on f(x) + beta KL
                _, natural_logits = self.update_forward(natural)
                per_sample = trades_loss(
                    natural_logits.float(), logits.float(), y, config.loss.trades_beta
                )
            else:
                per_sample = self.loss_fn(logits.float(), y)
            weights = class_w[y] if class_w is not None else None
            if use_gair and kappa is not None:
                geometry = gair_weights(
                    kappa, config.attack.steps, config.gair.lam, config.gair.func
                )
                weights = geometry if weights is None else weights * geometry
            loss = weighted_mean(per_sample, weights, config.reduction())
            sep = separation_loss(features.float(), y, config.loss.sep_tau) if lam else None
            total = loss + lam * sep if sep is not None else loss
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        if sums is not None:
            with torch.no_grad():
                sums[0] += total.detach() * len(y)
                if sep is not None:
                    sums[1] += sep.detach() * len(y)
                sums[2] += (logits.argmax(1) == y).sum()
                sums[3] += (~torch.isfinite(total.detach())).float()
