"""Per-sample random crop and flip."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from srat_engine.data.augment import random_crop_flip
from srat_engine.errors import SratError


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _batch(
    n: int = 16, c: int = 3, h: int = 8, w: int = 6, dtype: torch.dtype = torch.uint8
) -> torch.Tensor:
    # values start at 1 so a zero in the output can only come from the padding
    return torch.randint(1, 256, (n, c, h, w), generator=_gen(99)).to(dtype)


def _all_crops(img: torch.Tensor, pad: int) -> list[torch.Tensor]:
    _, h, w = img.shape
    padded = F.pad(img.float(), (pad, pad, pad, pad)).to(img.dtype)
    return [padded[:, i : i + h, j : j + w] for i in range(2 * pad + 1) for j in range(2 * pad + 1)]


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_shape_and_dtype_preserved(dtype: torch.dtype) -> None:
    x = _batch(dtype=dtype)
    y = random_crop_flip(x, pad=2, flip=True, generator=_gen())
    assert y.shape == x.shape
    assert y.dtype == dtype
    assert y.device == x.device


def test_identity_without_pad_or_flip() -> None:
    x = _batch()
    assert torch.equal(random_crop_flip(x, pad=0, flip=False, generator=_gen()), x)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_each_sample_is_a_crop_of_its_padded_input(dtype: torch.dtype) -> None:
    x = _batch(n=32, dtype=dtype)
    y = random_crop_flip(x, pad=3, flip=False, generator=_gen(1))
    offsets_seen = set()
    for n in range(x.shape[0]):
        crops = _all_crops(x[n], 3)
        matches = [k for k, crop in enumerate(crops) if torch.equal(y[n], crop)]
        assert matches, f"sample {n} is not a crop of its padded input"
        offsets_seen.add(matches[0])
    # 32 draws over 49 offsets: a constant offset would give one
    assert len(offsets_seen) > 5


def test_crop_and_flip_gives_a_crop_or_its_mirror() -> None:
    x = _batch(n=32)
    y = random_crop_flip(x, pad=2, flip=True, generator=_gen(2))
    mirrored = 0
    for n in range(x.shape[0]):
        crops = _all_crops(x[n], 2)
        plain = any(torch.equal(y[n], crop) for crop in crops)
        flipped = any(torch.equal(y[n], crop.flip(-1)) for crop in crops)
        assert plain or flipped
        mirrored += int(flipped and not plain)
    assert 0 < mirrored < x.shape[0]


def test_samples_are_augmented_independently() -> None:
    img = _batch(n=1)
    x = img.expand(64, -1, -1, -1).contiguous()
    y = random_crop_flip(x, pad=4, flip=True, generator=_gen(3))
    distinct = {tuple(y[n].flatten().tolist()) for n in range(64)}
    assert len(distinct) > 10


def test_flip_only_gives_image_or_mirror_and_both_occur() -> None:
    img = _batch(n=1)
    x = img.expand(64, -1, -1, -1).contiguous()
    y = random_crop_flip(x, pad=0, flip=True, generator=_gen(4))
    same = [torch.equal(y[n], img[0]) for n in range(64)]
    mirror = [torch.equal(y[n], img[0].flip(-1)) for n in range(64)]
    assert all(s or m for s, m in zip(same, mirror, strict=True))
    assert any(same) and any(mirror)


def test_deterministic_given_generator_state() -> None:
    x = _batch()
    a = random_crop_flip(x, pad=2, flip=True, generator=_gen(5))
    b = random_crop_flip(x, pad=2, flip=True, generator=_gen(5))
    c = random_crop_flip(x, pad=2, flip=True, generator=_gen(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_input_is_not_modified() -> None:
    x = _batch()
    before = x.clone()
    random_crop_flip(x, pad=2, flip=True, generator=_gen())
    assert torch.equal(x, before)


def test_bad_arguments_raise() -> None:
    with pytest.raises(SratError):
        random_crop_flip(_batch(), pad=-1, flip=False, generator=_gen())
    with pytest.raises(SratError):
        random_crop_flip(torch.zeros(3, 8, 8), pad=1, flip=False, generator=_gen())
