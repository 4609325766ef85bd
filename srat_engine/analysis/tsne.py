"""t-SNE of penultimate features (paper Figures 3 and 4) for a run's checkpoint.

A class-balanced sample of the test set (so every class shows, tail classes included) goes
through the restored model's `features`; scikit-learn's TSNE (PCA initialisation, fixed
random_state) maps it to 2-D. The separability number of `analysis.separability` is computed on
the same features, so the picture and the number describe the same points.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from srat_engine.config.schema import validate_config
from srat_engine.config.seeds import check_seed
from srat_engine.data.sources import load_splits
from srat_engine.data.subsets import balanced_subset_indices
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
    check_seed(seed)  # scikit-learn's random_state is 32-bit
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


def figure_formats() -> dict[str, str]:
    """The file formats the t-SNE figure can be saved in here ({suffix: description}):
    matplotlib's own list for a figure's canvas, so a format matplotlib adds or drops needs no
    change here; less pgf where its TeX program is missing (savefig needs it to measure text,
    and would fail only after the t-SNE was computed)."""
    import matplotlib

    matplotlib.use("Agg")  # headless: the users are on a GPU box over SSH
    from matplotlib.figure import Figure

    formats = dict(Figure().canvas.get_supported_filetypes())
    if shutil.which(str(matplotlib.rcParams["pgf.texsystem"])) is None:
        formats.pop("pgf", None)
    return formats


def figure_path(path: Path) -> Path:
    """The file `save_figure` writes for `path`, checked before any computation (a t-SNE takes
    minutes): a supported format by its suffix (none: .png, as matplotlib would add), a
    folder that exists and is writable (never created: a typo must not build a tree of
    folders), and not a folder itself. SratError (one line) otherwise."""
    if path.is_dir() or not path.name:
        raise SratError(f"--out {path} is a folder: give a file name, e.g. {path / 'tsne.png'}")
    formats = figure_formats()
    suffix = path.suffix.lower().removeprefix(".")
    if not suffix:
        path, suffix = path.with_name(f"{path.name}.png"), "png"
        if path.is_dir():
            raise SratError(f"--out {path} is a folder: give a file name")
    if suffix not in formats:
        why = (
            "matplotlib saves .pgf only with a TeX program, not installed here"
            if suffix == "pgf"
            else f"matplotlib cannot save a figure as .{suffix}"
        )
        raise SratError(f"--out {path}: {why}; use one of {', '.join(sorted(formats))}")
    folder = path.parent
    if not folder.exists():
        raise SratError(f"--out {path}: the folder {folder} does not exist (create it first)")
    if not folder.is_dir():
        raise SratError(f"--out {path}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise SratError(f"--out {path}: the folder {folder} is not writable")
    if path.exists() and not os.access(path, os.W_OK):
        raise SratError(f"--out {path}: the file exists and is not writable")
    return path


def save_figure(result: TsneResult, path: Path, title: str) -> Path:
    """The scatter (matplotlib, no display needed), one colour per class, in the format of the
    path's suffix; returns the file written (`figure_path`: .png added to a bare name)."""
    path = figure_path(path)
    import matplotlib

    matplotlib.use("Agg")
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
        fig.savefig(path, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path
