"""Whether fp32 matmuls and convolutions may run on TF32 tensor cores: one switch, scoped.

TF32 keeps fp32's range but rounds the mantissa to 10 bits inside matmuls and convolutions
(NVIDIA Ampere and later; no effect elsewhere). PyTorch's defaults differ between the two
(cuDNN convolutions allow it, matmuls do not), so "fp32" on a GPU is not full fp32 unless it
is asked for. Evaluation always runs in `strict_fp32`; training in ``train.precision``'s
choice (`training.step.TrainStep.precision_scope`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


def tf32_flags() -> tuple[bool, bool]:
    """(cuDNN convolutions, CUDA matmuls) TF32 allowed, as PyTorch has them now."""
    return torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32


@contextmanager
def tf32_allowed(allowed: bool) -> Iterator[None]:
    """Convolutions and matmuls with TF32 ``allowed`` (both) for the duration, then the flags
    as they were: scoped, so a run's evaluation inside its training, or a test, leaves no
    setting behind."""
    convolutions, matmuls = tf32_flags()
    torch.backends.cudnn.allow_tf32 = allowed
    torch.backends.cuda.matmul.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = convolutions
        torch.backends.cuda.matmul.allow_tf32 = matmuls


@contextmanager
def strict_fp32() -> Iterator[None]:
    """Full fp32 matmuls and convolutions for the duration (TF32 off), restored afterwards.

    Every evaluation runs in it, per-epoch, final and `srat eval`: TF32's 10-bit mantissa
    weakens the attack's input gradients as fp16's does, and one precision everywhere is what
    lets `srat eval` reproduce a run's recorded robust accuracy on a GPU as on a CPU. Training
    with ``train.precision = "fp32"`` runs in it too."""
    with tf32_allowed(False):
        yield
