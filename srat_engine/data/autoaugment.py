"""AutoAugment and RandAugment drawn per sample on the device, from the step's generator.

AT-BSL's reference (NISPLab/AT-BSL ``train_at_bsl_cifar10.py``) puts torchvision's
``v2.AutoAugment(AutoAugmentPolicy.CIFAR10)`` or ``v2.RandAugment(2, 8)`` before its crop and
flip, one image at a time in its data loader, drawing from torch's global RNG. Here every sample
of a uint8 batch [N, C, H, W] draws its ops from the training step's ``torch.Generator`` in a
few tensor ops; each op then runs on the whole batch with per-sample parameters and is kept
where a sample drew it. No Python loop over samples and no host sync, so the step stays one
CUDA graph, and the generator (checkpointed) makes runs reproducible and resumable.

Each op gives exactly torchvision's functional op on that sample's uint8 tensor, as its
AutoAugment/RandAugment call it (tests/test_policy_augment.py):

- geometric ops (ShearX/Y, TranslateX/Y, Rotate; nearest, fill 0) are index maps, made once per
  image size by torchvision's own ``affine``/``rotate`` of an image of pixel indices, and one
  gather;
- pointwise ops (Brightness, Posterize, Solarize, Invert) are 256-entry lookup tables made by
  torchvision's ops on every uint8 value;
- Equalize is torchvision's (batched) kernel; AutoContrast, Contrast, Color and Sharpness follow
  its tensor kernels step by step with per-sample factors. torchvision's ``add_(b, alpha=a)``
  is a fused multiply-add in float32, so the blends round a * b + c once, computed exactly in
  float64 (mps has no float64: there it is float32, and a rounding tie may differ by one level).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import torch

from srat_engine.errors import SratError

PolicyName = Literal["autoaugment", "randaugment"]
Stage = tuple[str, float, int | None]

# torchvision's AutoAugmentPolicy.CIFAR10 (Cubuk et al. 2019): 25 sub-policies of two stages,
# each (op, probability, magnitude bin of 10 or None)
AUTOAUGMENT_CIFAR10: tuple[tuple[Stage, Stage], ...] = (
    (("Invert", 0.1, None), ("Contrast", 0.2, 6)),
    (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
    (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, None), ("Equalize", 0.9, None)),
    (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
    (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
    (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
    (("Equalize", 0.6, None), ("Equalize", 0.5, None)),
    (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
    (("Equalize", 0.3, None), ("AutoContrast", 0.4, None)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
    (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, None)),
    (("Equalize", 0.2, None), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.2, None), ("Equalize", 0.6, None)),
    (("Color", 0.9, 9), ("Equalize", 0.6, None)),
    (("AutoContrast", 0.8, None), ("Solarize", 0.2, 8)),
    (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, None)),
    (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, None), ("Solarize", 0.8, 3)),
    (("Equalize", 0.8, None), ("Invert", 0.1, None)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None)),
)
AUTOAUGMENT_BINS = 10

# RandAugment's ops in torchvision's order; AT-BSL's RandAugment(2, 8): two ops per image, each
# uniform over these, at magnitude bin 8 of torchvision's 31
RANDAUGMENT_OPS: tuple[str, ...] = (
    "Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
    "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize",
)  # fmt: skip
RANDAUGMENT_NUM_OPS = 2
RANDAUGMENT_MAGNITUDE = 8
RANDAUGMENT_BINS = 31

# ops whose magnitude takes a random sign (probability 1/2), as torchvision's
SIGNED = frozenset(
    {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"}
    | {"Brightness", "Color", "Contrast", "Sharpness"}
)
_GEOMETRIC = frozenset({"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"})
_POINTWISE = frozenset({"Brightness", "Posterize", "Solarize", "Invert"})
# how a variant is applied: 0 = through the index map and lookup table (Identity, geometric
# and pointwise ops), else the op's own batched kernel
_KERNELS = ("AutoContrast", "Equalize", "Contrast", "Color", "Sharpness")
_KIND = {name: code for code, name in enumerate(_KERNELS, start=1)}


def magnitude(op: str, index: int | None, bins: int, height: int, width: int) -> float:
    """torchvision's unsigned magnitude of ``op`` at bin ``index`` of ``bins`` for an image of
    ``height`` x ``width`` (its AutoAugment/RandAugment ``_AUGMENTATION_SPACE``); 0 for the ops
    without one."""
    if index is None or op in ("Identity", "AutoContrast", "Equalize", "Invert"):
        return 0.0
    if op == "Posterize":
        return float((8 - (torch.arange(bins) / ((bins - 1) / 4))).round().int()[index])
    if op == "Solarize":
        return float(torch.linspace(1.0, 0.0, bins, dtype=torch.float32)[index])
    top = {
        "ShearX": 0.3,
        "ShearY": 0.3,
        "TranslateX": 150.0 / 331.0 * width,
        "TranslateY": 150.0 / 331.0 * height,
        "Rotate": 30.0,
    }.get(op, 0.9)  # Brightness, Color, Contrast, Sharpness
    return float(torch.linspace(0.0, top, bins, dtype=torch.float32)[index])


def _functional() -> Any:
    # torchvision's transforms load in ~1 s: only runs that use a policy pay for them
    import torchvision.transforms.v2.functional as tvf

    return tvf


def _mapped_op(image: torch.Tensor, op: str, mag: float) -> torch.Tensor:
    """A geometric or pointwise op as torchvision's AutoAugment calls it (its
    ``_apply_image_or_video_transform``; nearest interpolation, fill None = 0)."""
    tvf = _functional()
    nearest = tvf.InterpolationMode.NEAREST
    if op in ("ShearX", "ShearY"):
        # shear about the top-left corner, angle atan(magnitude), as torchvision
        shear = math.degrees(math.atan(mag))
        return tvf.affine(
            image,
            angle=0.0,
            translate=[0, 0],
            scale=1.0,
            shear=[shear, 0.0] if op == "ShearX" else [0.0, shear],
            interpolation=nearest,
            fill=None,
            center=[0, 0],
        )
    if op in ("TranslateX", "TranslateY"):
        shift = [int(mag), 0] if op == "TranslateX" else [0, int(mag)]
        return tvf.affine(
            image,
            angle=0.0,
            translate=shift,
            scale=1.0,
            interpolation=nearest,
            shear=[0.0, 0.0],
            fill=None,
        )
    if op == "Rotate":
        return tvf.rotate(image, angle=mag, interpolation=nearest, fill=None)
    if op == "Brightness":
        return tvf.adjust_brightness(image, brightness_factor=1.0 + mag)
    if op == "Posterize":
        return tvf.posterize(image, bits=int(mag))
    if op == "Solarize":
        return tvf.solarize(image, threshold=255.0 * mag)
    if op == "Invert":
        return tvf.invert(image)
    if op == "Identity":
        return image
    raise ValueError(f"not a geometric or pointwise op: {op}")


@dataclass(frozen=True)
class PolicyTables:
    """A policy's ops as device tables, for images of one size.

    ``variants[v]``: (op, signed magnitude) of variant v; variant 0 is Identity. ``choice``:
    the variant a draw names, AutoAugment [sub-policy, stage, negative sign], RandAugment
    [op, negative sign]; ``prob`` [sub-policy, stage]: AutoAugment's probabilities.
    """

    policy: PolicyName
    variants: tuple[tuple[str, float], ...]
    kind: torch.Tensor  # [V] int64: 0 = index map + lookup table, else _KIND
    index_map: torch.Tensor  # [V, H*W] int64: source pixel + 1; 0 = fill (0)
    lut: torch.Tensor  # [V, 256] uint8
    ratio: torch.Tensor  # [V] float32: factor of Contrast / Color / Sharpness
    alpha: torch.Tensor  # [V] float32: 1 - factor, rounded from float64 as torchvision
    choice: torch.Tensor
    prob: torch.Tensor | None


@lru_cache(maxsize=16)
def policy_tables(
    policy: PolicyName, height: int, width: int, device: torch.device
) -> PolicyTables:
    """The tables of ``policy`` for H x W images on ``device``, made once (on the host, with
    torchvision's own ops) and cached: a captured CUDA graph replays with these tensors."""
    variants: dict[tuple[str, float], int] = {("Identity", 0.0): 0}

    def variant(op: str, index: int | None, bins: int, negative: bool) -> int:
        mag = magnitude(op, index, bins, height, width)
        key = (op, -mag if negative and op in SIGNED and mag else mag)
        return variants.setdefault(key, len(variants))

    prob: torch.Tensor | None = None
    if policy == "autoaugment":
        choice = torch.tensor(
            [
                [
                    [variant(op, i, AUTOAUGMENT_BINS, neg) for neg in (False, True)]
                    for op, _, i in sub
                ]
                for sub in AUTOAUGMENT_CIFAR10
            ]
        )
        prob = torch.tensor([[p for _, p, _ in sub] for sub in AUTOAUGMENT_CIFAR10])
    elif policy == "randaugment":
        choice = torch.tensor(
            [
                [variant(op, RANDAUGMENT_MAGNITUDE, RANDAUGMENT_BINS, neg) for neg in (False, True)]
                for op in RANDAUGMENT_OPS
            ]
        )
    else:
        raise SratError(f"unknown augmentation policy {policy!r}")

    ordered = tuple(sorted(variants, key=variants.__getitem__))
    n = height * width
    pixels = torch.arange(1, n + 1, dtype=torch.float32).view(1, 1, height, width)
    values = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    maps, luts, kinds, ratios, alphas = [], [], [], [], []
    for op, mag in ordered:
        mapped = op == "Identity" or op in _GEOMETRIC or op in _POINTWISE
        kinds.append(0 if mapped else _KIND[op])
        # nearest sampling moves pixels (or fills 0): on an image of indices it reads the map
        geo = _mapped_op(pixels, op, mag) if op in _GEOMETRIC else pixels
        maps.append(geo.reshape(n).long())
        lut = _mapped_op(values, op, mag) if op in _POINTWISE else values
        luts.append(lut.reshape(256))
        factor = 1.0 + mag if op in ("Contrast", "Color", "Sharpness") else 1.0
        ratios.append(factor)
        alphas.append(1.0 - factor)  # in float64, then float32: torchvision's alpha=(1 - r)
    return PolicyTables(
        policy=policy,
        variants=ordered,
        kind=torch.tensor(kinds, device=device),
        index_map=torch.stack(maps).to(device),
        lut=torch.stack(luts).to(device),
        ratio=torch.tensor(ratios, dtype=torch.float32, device=device),
        alpha=torch.tensor(alphas, dtype=torch.float32, device=device),
        choice=choice.to(device),
        prob=prob.to(device) if prob is not None else None,
    )


def draw_variants(tables: PolicyTables, n: int, generator: torch.Generator) -> torch.Tensor:
    """Each of ``n`` samples' variants for its two stages [2, N], from ``generator``.

    AutoAugment: a sub-policy s ~ U{0..24} per sample; stage k applies with probability p_sk
    (u <= p, u ~ U[0, 1), as torchvision's ``rand() <= p``), else Identity. RandAugment: each
    stage's op ~ U over its 14. A signed op's sign is negative with probability 1/2. Every
    sample draws all of these whether they are used or not (torchvision draws the sign only
    for an applied signed op): the same distribution from a fixed number of draws.
    """
    dev, gdev = tables.choice.device, generator.device
    negative = (torch.rand(2, n, generator=generator, device=gdev) <= 0.5).long().to(dev)
    if tables.prob is None:
        ops = torch.randint(0, len(RANDAUGMENT_OPS), (2, n), generator=generator, device=gdev)
        return tables.choice[ops.to(dev), negative]
    sub = torch.randint(0, len(AUTOAUGMENT_CIFAR10), (n,), generator=generator, device=gdev)
    u = torch.rand(2, n, generator=generator, device=gdev).to(dev)
    sub = sub.to(dev)
    stage = torch.arange(2, device=dev)[:, None]
    chosen = tables.choice[sub[None, :], stage, negative]
    applied = u <= tables.prob[sub].T
    return torch.where(applied, chosen, torch.zeros_like(chosen))


# float32 constants of torchvision's rgb_to_grayscale, as its kernel rounds them
_GRAY = tuple(float(torch.tensor(c, dtype=torch.float32)) for c in (0.2989, 0.587, 0.114))


def _fma(a: torch.Tensor, b: torch.Tensor | float, c: torch.Tensor) -> torch.Tensor:
    """float32 a * b + c rounded once, as a fused multiply-add. Computed in float64, where the
    product and sum are exact for these operands (a an integer pixel value, or an image's mean
    over 2^k pixels; float32 b and c below 512 in magnitude), then rounded once to float32."""
    if a.device.type == "mps":  # no float64 there
        return a * b + c
    b64 = b.double() if isinstance(b, torch.Tensor) else b
    return (a.double() * b64 + c.double()).float()


def _gray(f: torch.Tensor) -> torch.Tensor:
    """torchvision's uint8 grayscale as float: floor(0.2989 r + 0.587 g + 0.114 b)."""
    r, g, b = f.unbind(dim=-3)
    gray = _fma(b, _GRAY[2], _fma(g, _GRAY[1], r * _GRAY[0]))
    return gray.unsqueeze(-3).floor_()


def _blend(
    f: torch.Tensor, other: torch.Tensor, ratio: torch.Tensor, alpha: torch.Tensor
) -> torch.Tensor:
    """torchvision's ``_blend`` of the image ``f`` (as float): f * r + (1 - r) * other,
    clamped, truncated to uint8."""
    return _fma(other, alpha, f * ratio).clamp_(0, 255).to(torch.uint8)


def _autocontrast(f: torch.Tensor) -> torch.Tensor:
    """torchvision's autocontrast, per image and channel, with ``where`` for its boolean
    indexing (which would read the mask on the host)."""
    low = f.amin(dim=(-2, -1), keepdim=True)
    high = f.amax(dim=(-2, -1), keepdim=True)
    flat = high == low
    inv_scale = torch.where(flat, 1.0, (high - low) * (1.0 / 255))
    low = torch.where(flat, 0.0, low)
    return (f - low).div_(inv_scale).clamp_(0, 255).to(torch.uint8)


def _sharpness(x: torch.Tensor, f: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """torchvision's adjust_sharpness: the interior blends with the [[1,1,1],[1,5,1],[1,1,1]]/13
    blur, rounded; borders stay. The 3x3 sums are exact integers here, and S/13 is never within
    1/26 of a rounding tie, so rounding S / 13 equals rounding torchvision's float convolution."""
    _, _, h, w = x.shape
    if h <= 2 or w <= 2:
        return x
    centre = f[..., 1:-1, 1:-1]
    total = 4 * centre
    for i in range(3):
        for j in range(3):
            total = total + f[..., i : i + h - 2, j : j + w - 2]
    blurred = (total / 13).round_()
    out = f.clone()
    out[..., 1:-1, 1:-1] = _fma(blurred - centre, alpha, centre)
    return out.clamp_(0, 255).to(torch.uint8)


def apply_variants(x: torch.Tensor, variant: torch.Tensor, tables: PolicyTables) -> torch.Tensor:
    """Sample n of uint8 ``x`` [N, C, H, W] through variant ``variant[n]`` of ``tables``.

    Every op runs on the whole batch with per-sample parameters and ``where`` keeps each
    sample's own: a fixed sequence of kernels, whatever was drawn."""
    n, c, h, w = x.shape
    flat = x.reshape(n, c, h * w)
    padded = torch.cat([flat.new_zeros(n, c, 1), flat], dim=2)
    moved = padded.gather(2, tables.index_map[variant][:, None, :].expand(n, c, h * w))
    out = tables.lut[variant].gather(1, moved.reshape(n, c * h * w).long()).view(n, c, h, w)
    kind = tables.kind[variant].view(n, 1, 1, 1)
    ratio = tables.ratio[variant].view(n, 1, 1, 1)
    alpha = tables.alpha[variant].view(n, 1, 1, 1)
    f = x.float()
    # Contrast blends with the mean of the grayscale (of the image itself if it has one
    # channel); Color (saturation) with the grayscale, and leaves one channel alone (as
    # torchvision and PIL)
    gray = _gray(f) if c == 3 else f
    candidates = {
        "AutoContrast": _autocontrast(f),
        "Equalize": _functional().equalize(x),
        "Contrast": _blend(f, gray.mean(dim=(-3, -2, -1), keepdim=True), ratio, alpha),
        "Color": _blend(f, gray, ratio, alpha) if c == 3 else x,
        "Sharpness": _sharpness(x, f, alpha),
    }
    for op, result in candidates.items():
        out = torch.where(kind == _KIND[op], result, out)
    return out


def policy_augment(
    x: torch.Tensor, policy: PolicyName, *, generator: torch.Generator
) -> torch.Tensor:
    """AutoAugment (torchvision's CIFAR-10 policy) or RandAugment(2, 8), drawn per sample of
    the uint8 image batch ``x`` [N, C, H, W] (C = 1 or 3) from ``generator``: two stages, each
    a variant per sample (:func:`draw_variants`) applied by :func:`apply_variants`."""
    if x.dim() != 4 or x.dtype != torch.uint8:
        raise SratError(
            f"data.policy augments uint8 image batches [N, C, H, W], got {x.dtype} {tuple(x.shape)}"
        )
    n, c, h, w = x.shape
    if c not in (1, 3):
        raise SratError(f"data.policy needs images with 1 or 3 channels (torchvision's), got {c}")
    tables = policy_tables(policy, h, w, x.device)
    variants = draw_variants(tables, n, generator)
    for stage_variants in variants:  # two stages: AutoAugment's sub-policies, RandAugment's N
        x = apply_variants(x, stage_variants, tables)
    return x
