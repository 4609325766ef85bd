"""The reference step `srat bench` times the engine against: Madry-style PGD-AT as common public
code writes it (Rice et al. 2020 ``attack_pgd``, GAIRAT's ``GA_PGD``, kuangliu/pytorch-cifar's
data pipeline): a ``DataLoader`` over PIL images with torchvision's ``RandomCrop(32, padding=4)``
+ ``RandomHorizontalFlip()`` + ``ToTensor()`` on the CPU, ``loss.backward()`` through the whole
model in every attack step (weight gradients computed and thrown away), fp32, eager.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

EPS, STEP_SIZE = 8 / 255, 2 / 255  # the paper's CIFAR training attack
PAD = 4  # RandomCrop's padding


def reference_attack(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    step_size: float,
    steps: int,
    start: Tensor,
) -> Tensor:
    """PGD-K the way public adversarial-training code writes it (Rice et al. ``attack_pgd``,
    GAIRAT ``GA_PGD``): BN in eval mode, mean cross entropy, ``loss.backward()`` through every
    parameter, then

        x_{t+1} = clip_[0,1](min(max(x_t + step_size * sign(x_t.grad), x - eps), x + eps))

    from ``x_0 = clip_[0,1](x + start)`` with ``start ~ U(-eps, eps)``. The model's train mode is
    restored afterwards, its ``.grad`` fields are left holding the last step's weight gradients.
    """
    was_training = model.training
    model.eval()
    x_adv = torch.clamp(x.detach() + start, 0.0, 1.0)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y)
        model.zero_grad()
        loss.backward()
        assert x_adv.grad is not None
        x_adv = x_adv.detach() + step_size * x_adv.grad.sign()
        x_adv = torch.clamp(torch.min(torch.max(x_adv, x - eps), x + eps), 0.0, 1.0)
    model.train(was_training)
    return x_adv.detach()


def reference_update(
    model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor
) -> None:
    """The update step of public PGD-AT code: train mode, mean CE, backward, SGD step."""
    model.train()
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()


def reference_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    *,
    steps: int,
    start: Tensor | None = None,
) -> None:
    """Attack + update on one augmented float batch; ``start`` defaults to fresh U(-eps, eps)
    noise from the global RNG, as in public code."""
    if start is None:
        start = torch.empty_like(x).uniform_(-EPS, EPS)
    x_adv = reference_attack(model, x, y, eps=EPS, step_size=STEP_SIZE, steps=steps, start=start)
    reference_update(model, optimizer, x_adv, y)


class _PILImages(torch.utils.data.Dataset[tuple[Tensor, int]]):
    """torchvision.datasets.CIFAR10's ``__getitem__``: an HWC uint8 array -> PIL -> transform."""

    def __init__(self, images: Any, labels: list[int], transform: Callable[[Any], Tensor]) -> None:
        self.images = images
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.images[index])), self.labels[index]


def reference_loader(
    x: Tensor, y: Tensor, *, batch: int, workers: int, pin_memory: bool, seed: int
) -> torch.utils.data.DataLoader[tuple[Tensor, int]]:
    """The public-code input pipeline over uint8 images ``x`` [N, C, H, W] on the CPU."""
    from torchvision import transforms

    height = x.shape[2]
    transform = transforms.Compose(
        [
            transforms.RandomCrop(height, padding=PAD),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
        ]
    )
    hwc = x.permute(0, 2, 3, 1).squeeze(-1).contiguous().numpy()  # PIL wants HWC (or HW)
    return torch.utils.data.DataLoader(
        _PILImages(hwc, y.tolist(), transform),
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        pin_memory=pin_memory,
        drop_last=True,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=workers > 0,
    )
