"""Feature separability: one number for how well penultimate features separate the classes.

The paper shows separability as t-SNE pictures (Figures 3 and 4) and, for Eq. 1, as
S = eta / sigma² (between-class distance over within-class spread). This is the feature-space
analogue tracked per epoch:

    z_i   = f_i / ||f_i||                      (L2-normalised penultimate features)
    m_c   = mean of z_i over the examples of class c
    W     = mean over classes c of ( mean over i in c of ||z_i - m_c|| )   (within-class)
    B     = mean over pairs c < c' of ||m_c - m_c'||                        (between-class)
    separability = B / W

Normalising first makes it invariant to the feature scale (weight decay and LDAM's cosine head
change norms, not geometry) and matches the separation loss (Eq. 6), which also works on
normalised features. W averages per class first, so on an imbalanced sample the frequent
classes do not drown the tail. Classes absent from the sample are skipped. Larger is more
separable: 0 when all centroids coincide, unbounded as classes shrink to points.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from srat_engine.models.base import SratModel


def feature_separability(features: Tensor, labels: Tensor) -> float:
    """B / W as defined in the module docstring; needs at least two classes present.

    Hand example: class 0 at (1, 0) and (0, 1), class 1 at (-1, 0) and (0, -1). Centroids
    (±0.5, ±0.5); every point is sqrt(0.5) from its centroid, so W = sqrt(0.5); B = sqrt(2);
    separability = 2. Returns math.inf when every point sits on its class centroid.
    """
    if features.dim() != 2 or labels.dim() != 1 or len(features) != len(labels):
        raise ValueError(
            f"features [N, D] and labels [N] expected, got {tuple(features.shape)} and "
            f"{tuple(labels.shape)}"
        )
    z = torch.nn.functional.normalize(features.detach().double(), dim=1)
    present = torch.unique(labels)
    if len(present) < 2:
        raise ValueError("separability needs examples of at least two classes")
    centroids = torch.stack([z[labels == c].mean(dim=0) for c in present])
    within = torch.stack(
        [(z[labels == c] - centroids[k]).norm(dim=1).mean() for k, c in enumerate(present)]
    ).mean()
    pairs = torch.triu_indices(len(present), len(present), offset=1)
    between = (centroids[pairs[0]] - centroids[pairs[1]]).norm(dim=1).mean()
    if float(within) == 0.0:
        return math.inf
    return float(between / within)


@torch.no_grad()
def penultimate_features(model: SratModel, x: Tensor, *, batch_size: int) -> Tensor:
    """`model.features` of every input, in eval mode (BatchNorm statistics frozen), batched.

    Inputs as stored (uint8 images or float vectors) are converted like the evaluation does.
    The model's train/eval mode is restored afterwards.
    """
    from srat_engine.data.resident import to_inputs

    was_training = model.training
    model.eval()
    try:
        chunks = [
            model.features(to_inputs(x[start : start + batch_size])).float()
            for start in range(0, len(x), batch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat(chunks)
