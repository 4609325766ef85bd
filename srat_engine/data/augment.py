"""Batched, per-sample data augmentation that stays on the tensors' device."""

from __future__ import annotations

import torch

from srat_engine.errors import SratError


def random_crop_flip(
    x: torch.Tensor, *, pad: int, flip: bool, generator: torch.Generator
) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip, independently per sample.

    Equivalent in distribution to torchvision's ``RandomCrop(size, padding=pad, fill=0)``
    followed by ``RandomHorizontalFlip(p=0.5)`` applied to each image of ``x`` [N, C, H, W]:
    sample n is ``x_pad[n, :, i:i+H, j:j+W]`` with i, j ~ U{0..2*pad}, mirrored along W with
    probability 1/2. All randomness comes from ``generator`` on its own device, drawn in a few
    tensor ops and applied in one gather, so there is no Python loop over samples and no host
    sync. Works for any dtype (uint8 or float) since only indexing and zero-fill are used.
    """
    if x.dim() != 4:
        raise SratError(f"random_crop_flip expects a [N, C, H, W] batch, got {tuple(x.shape)}")
    if pad < 0:
        raise SratError(f"crop padding must be >= 0, got {pad}")
    if pad == 0 and not flip:
        return x

    n, c, h, w = x.shape
    dev = x.device
    gdev = generator.device
    # offsets into the padded image; pad == 0 gives all-zero offsets without consuming the RNG
    if pad > 0:
        off = torch.randint(0, 2 * pad + 1, (2, n), generator=generator, device=gdev).to(dev)
    else:
        off = torch.zeros(2, n, dtype=torch.int64, device=dev)
    rows = off[0, :, None] + torch.arange(h, device=dev)  # [N, H]
    cols_fwd = torch.arange(w, device=dev)
    if flip:
        mirrored = torch.rand(n, generator=generator, device=gdev).to(dev) < 0.5
        cols_src = torch.where(mirrored[:, None], cols_fwd.flip(0)[None, :], cols_fwd[None, :])
    else:
        cols_src = cols_fwd.expand(n, w)
    cols = off[1, :, None] + cols_src  # [N, W]

    if pad > 0:
        # zero fill matches torchvision's default fill=0 (black border)
        xp = x.new_zeros(n, c, h + 2 * pad, w + 2 * pad)
        xp[:, :, pad : pad + h, pad : pad + w] = x
    else:
        xp = x
    bi = torch.arange(n, device=dev)[:, None, None, None]
    ci = torch.arange(c, device=dev)[None, :, None, None]
    return xp[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]
