"""l_inf PGD (Madry et al. 2018) that also counts GAIRAT's kappa (Zhang et al. 2021, GA_PGD)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BN_MODES: tuple[str, ...] = ("eval", "train")


@dataclass
class PGDResult:
    """The attack's output.

    x_adv: detached, same shape and dtype as x.
    kappa: int64 [N], the number of PGD steps at whose start the iterate was classified
        correctly (GAIRAT's kappa, 0..steps).
    """

    x_adv: Tensor
    kappa: Tensor


def _sum_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    # "sum", not "mean": each sample's input gradient is then independent of the batch size.
    return F.cross_entropy(logits, target, reduction="sum")


def _per_sample(value: float | Tensor, x: Tensor) -> float | Tensor:
    """A float as it is; a Tensor [N] as [N, 1, ...] in x's dtype and device, to broadcast
    over each sample's coordinates."""
    if not isinstance(value, Tensor):
        return value
    if value.shape != (x.shape[0],):
        raise ValueError(
            f"per-sample PGD budgets need shape ({x.shape[0]},), got {tuple(value.shape)}"
        )
    return value.to(device=x.device, dtype=x.dtype).reshape(-1, *([1] * (x.dim() - 1)))


def start_noise(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """U(0, 1) draws of x's shape for PGD's random start, on x's device. Drawn on the
    generator's device, so a seeded CPU generator also drives a CUDA attack."""
    noise_device = generator.device if generator is not None else x.device
    noise = torch.rand(x.shape, generator=generator, device=noise_device, dtype=x.dtype)
    return noise.to(x.device)


def pgd_linf(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float | Tensor,
    step_size: float | Tensor,
    steps: int,
    random_start: bool = True,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    generator: torch.Generator | None = None,
    clip: tuple[float, float] | None = (0.0, 1.0),
    logit_scale: float = 1.0,
    start_eps: float | None = None,
    noise: Tensor | None = None,
) -> PGDResult:
    """Projected gradient ascent on ``loss_fn(a * model(x'), y)`` inside the l_inf ball of radius
    eps, with ``a = logit_scale``:

        x_0     = clip(x + U(-eps, eps))                       (x_0 = x without random_start)
        x_{t+1} = Π_{[x - eps, x + eps] ∩ clip}(x_t + step_size * sign(∇_x loss(a * model(x_t), y)))

    kappa_i counts the t in 0..steps-1 with argmax model(x_t)_i == y_i, read off the same forward
    passes that give the gradients. Only input gradients are computed (``autograd.grad``), so
    parameters' ``.grad`` stay untouched; the model's train/eval mode is the caller's choice
    (see ``attack_mode``). ``clip=None`` disables range clipping. x should lie inside ``clip``.

    ``logit_scale`` != 1 is the logit-scaled attack of the gradient-masking check
    (`srat_engine.evaluation.masking.LOGIT_SCALES`): a positive factor changes no prediction
    (kappa counts the unscaled logits) but changes where cross-entropy saturates.

    Per-sample budgets (RobustLT's class-wise budget, `srat_engine.attacks.class_budget`):
    ``eps`` and ``step_size`` may each be a Tensor [N] of values >= 0 (not checked: that would
    read the device), and sample i then ascends with step_i inside its own ball
    [x_i - eps_i, x_i + eps_i] ∩ clip; eps_i = 0 leaves x_i unchanged (steps >= 1). The random
    start is x + U(-s, s) with s = ``start_eps`` when given, else each sample's eps_i. The
    training attack passes start_eps = the global eps, the reference's choice (RobustLT,
    zhang-lilin/RobustLT ``core/methods/utils.py`` get_adversarial_examples: the start draws
    U(-eps, eps) with the global eps for every class); as there, a start from ``start_eps`` is
    only clipped to the range, and the first step's projection takes it into each ball. Floats
    (and start_eps=None) run exactly the code of a single global budget.

    Stacked runs (`srat_engine.models.stacked`): ``x`` may be [N, K, ...] with ``y`` [N, K] and
    ``model`` giving [N, K, C] (classes last; kappa is then [N, K]), with ``loss_fn`` summing
    over both; ``noise`` then holds each run's own `start_noise`, drawn from its own generator,
    so every run starts where it would alone.
    """
    if isinstance(eps, Tensor) or isinstance(step_size, Tensor):
        per_sample = True
        if steps < 0:
            raise ValueError(f"PGD needs steps >= 0; got {steps}")
    else:
        per_sample = False
        if eps < 0 or step_size < 0 or steps < 0:
            raise ValueError(
                f"PGD needs eps, step_size, steps >= 0; got {eps}, {step_size}, {steps}"
            )
    if not (math.isfinite(logit_scale) and logit_scale > 0):
        raise ValueError(f"PGD's logit_scale must be a finite number > 0, got {logit_scale}")
    if start_eps is not None and not (math.isfinite(start_eps) and start_eps >= 0):
        raise ValueError(f"PGD's start_eps must be a finite number >= 0, got {start_eps}")
    loss_fn = _sum_cross_entropy if loss_fn is None else loss_fn
    x = x.detach()
    kappa = torch.zeros(y.shape, dtype=torch.int64, device=x.device)
    if steps == 0:
        return PGDResult(x_adv=x.clone(), kappa=kappa)
    if not per_sample and eps == 0:
        # Every iterate is x itself, so kappa is `steps` where x is classified correctly.
        with torch.no_grad():
            correct = model(x).argmax(dim=-1) == y
        return PGDResult(x_adv=x.clone(), kappa=kappa + steps * correct)
    # a Tensor budget is [N, 1, ...] from here on; a float stays the float it was
    eps, step_size = _per_sample(eps, x), _per_sample(step_size, x)

    lower, upper = x - eps, x + eps
    if clip is not None:
        lower, upper = lower.clamp(min=clip[0]), upper.clamp(max=clip[1])

    if random_start:
        if noise is None:
            noise = start_noise(x, generator)
        elif noise.shape != x.shape:
            raise ValueError(f"PGD's start noise is {tuple(noise.shape)}, x {tuple(x.shape)}")
        if start_eps is None:
            x_adv = torch.clamp(x + (2 * noise - 1) * eps, lower, upper)
        else:
            x_adv = x + (2 * noise - 1) * start_eps
            if clip is not None:
                x_adv = x_adv.clamp(clip[0], clip[1])
    else:
        x_adv = x.clone()

    # enable_grad: evaluation code often calls the attack from inside torch.no_grad().
    with torch.enable_grad():
        for _ in range(steps):
            x_adv.requires_grad_(True)
            logits = model(x_adv)
            kappa += logits.detach().argmax(dim=-1) == y
            # no multiplication at 1: training's attack stays the very same graph
            loss = loss_fn(logits if logit_scale == 1.0 else logit_scale * logits, y)
            (grad,) = torch.autograd.grad(loss, [x_adv])
            x_adv = torch.clamp(x_adv.detach() + step_size * grad.sign(), lower, upper)
    return PGDResult(x_adv=x_adv.detach(), kappa=kappa)


@contextmanager
def attack_mode(model: nn.Module, bn_mode: str) -> Iterator[nn.Module]:
    """Put ``model`` in eval (``"eval"``) or train (``"train"``) mode and freeze its parameters
    for the duration of an attack, then restore every module's mode and every flag.

    Freezing (``requires_grad_(False)``) means no backward pass, compiled or not, computes
    weight gradients during the attack. ``"train"`` lets BatchNorm see (and update its running
    statistics with) the adversarial iterates.
    """
    if bn_mode not in BN_MODES:
        raise ValueError(f"unknown attack bn_mode {bn_mode!r}; expected one of {BN_MODES}")
    modes = [(module, module.training) for module in model.modules()]
    flags = [(param, param.requires_grad) for param in model.parameters()]
    model.train(bn_mode == "train")
    for param, _ in flags:
        param.requires_grad_(False)
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training
        for param, requires_grad in flags:
            param.requires_grad_(requires_grad)
