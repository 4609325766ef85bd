"""t-SNE of penultimate features (paper Figures 3 and 4) for a run's checkpoint.

A class-balanced sample of the test set (so every class shows, tail classes included) goes
through the restored model's `features`; scikit-learn's TSNE (PCA initialisation, fixed
random_state) maps it to 2-D. The separability number of `analysis.separability` is computed on
the same features, so the picture and the number describe the same points.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from srat_engine.config.schema import validate_config
from srat_engine.data import balanced_subset_indices, load_splits
from srat_engine.errors import SratError
from srat_engine.evaluation.separability import feature_separability, penultimate_features
from srat_engine.runs.rundir import RunDir
from srat_engine.text import escape_controls

# the sample is drawn with the seed of training's per-epoch robust subset: with n_per_class equal
# to eval.robust_per_class the picture shows exactly the examples training tracked
SAMPLE_SEED = 0


@dataclass(frozen=True)
class TsneResult:
    points: np.ndarray  # [N, 2] t-SNE coordinates
    labels: np.ndarray  # [N] class indices
    class_names: list[str]
    separability: float  # of the penultimate features (not of the 2-D points)
    epoch: int | None  # the checkpoint's epoch
    n_per_class: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "points": self.points.round(4).tolist(),
            "labels": self.labels.tolist(),
            "class_names": self.class_names,
            "separability": self.separability,
            "epoch": self.epoch,
            "n_per_class": self.n_per_class,
        }


def tsne_embedding(features: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """2-D t-SNE of [N, D] features; perplexity 30, lowered for tiny samples (it must be < N)."""
    from sklearn.manifold import TSNE

    n = len(features)
    if n < 3:
        raise SratError(f"t-SNE needs at least 3 examples, got {n}")
    perplexity = min(30.0, (n - 1) / 3.0)
    embedding = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    return np.asarray(embedding.fit_transform(features.astype(np.float32)), dtype=np.float64)


def run_tsne(
    run: RunDir, *, n_per_class: int = 100, device: str = "cpu", seed: int = 0
) -> TsneResult:
    """Restore the run's last checkpoint, embed a balanced test sample of n_per_class a class."""
    # the evaluation package restores checkpoints for attacks; the same model, restored once
    from srat_engine.evaluation.runner import restore_model
    from srat_engine.training.device import pick_device

    if n_per_class < 1:
        raise SratError(f"--n-per-class must be at least 1, got {n_per_class}")
    if not run.checkpoint_path.is_file():
        raise SratError(f"run {run.id} has no checkpoint yet ({run.checkpoint_path})")
    doc = run.config()
    config = validate_config(doc["config"])
    resolved = doc["resolved"]
    torch_device = pick_device(device)  # an absent GPU is one line, not torch's traceback
    model, epoch = restore_model(run, config, resolved, torch_device)
    splits = load_splits(
        config.data.dataset,
        Path(resolved["data_root"]),
        download=False,
        **config.data.options,
    )
    chosen = balanced_subset_indices(splits.test_y, n_per_class, seed=SAMPLE_SEED)
    x, y = splits.test_x[chosen].to(torch_device), splits.test_y[chosen]
    features = penultimate_features(model, x, batch_size=config.eval.batch_size).cpu()
    return TsneResult(
        points=tsne_embedding(features.numpy(), seed=seed),
        labels=y.numpy(),
        class_names=[str(name) for name in resolved["class_names"]],
        separability=feature_separability(features, y),
        epoch=epoch,
        n_per_class=n_per_class,
    )


def save_png(result: TsneResult, path: Path, title: str) -> Path:
    """The scatter as a PNG (matplotlib, no display needed), one colour per class."""
    import matplotlib

    matplotlib.use("Agg")  # headless: the users are on a GPU box over SSH
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab10" if len(result.class_names) <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(7, 6), dpi=120)
    try:
        for cls, name in enumerate(result.class_names):
            mask = result.labels == cls
            if mask.any():
                ax.scatter(
                    *result.points[mask].T, s=8, color=cmap(cls % cmap.N),
                    label=escape_controls(name),
                )  # fmt: skip
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(
            loc="best", fontsize=7, markerscale=2, ncol=2 if len(result.class_names) > 10 else 1
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path
