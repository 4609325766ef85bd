"""Dataset sources: every dataset comes back as whole-split tensors in one ``Splits``.

Images are uint8 NCHW (scaled to [0, 1] later, hence ``clip=(0.0, 1.0)``); the Gaussian
mixture of the SRAT paper is float32 [N, d] with no clipping. Every failure a user can
cause (missing or corrupt files, no network, bad options) surfaces as a one-line
``SratError``.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import pickle
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from srat_engine.data.catalog import (
    CIFAR10_FILES,
    CIFAR100_FILES,
    IMAGE_CLIP,
    SVHN_FILES,
    DatasetFiles,
    folder_held_out,
    missing_files,
    not_found,
)
from srat_engine.data.options import dataset_options
from srat_engine.data.subsets import balanced_subset_indices
from srat_engine.errors import SratError

# the held-out splits of ``digits`` and ``folder`` must not move between runs or seeds
_SPLIT_SEED = 0


@dataclass(frozen=True)
class Splits:
    """Train and test tensors of one dataset."""

    train_x: torch.Tensor  # uint8 [N, C, H, W] images, or float32 [N, d] for "gaussian"
    train_y: torch.Tensor  # int64 [N]
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    clip: tuple[float, float] | None  # (0.0, 1.0) for images (after /255), None for gaussian

    @property
    def num_classes(self) -> int:
        return len(self.classes)


# --------------------------------------------------------------------------- torchvision sets


def _first_bad_file(spec: DatasetFiles, root: pathlib.Path) -> pathlib.Path | None:
    """The first file torchvision would reject: missing, md5 mismatch, or unreadable."""
    import torchvision.datasets.utils as tvu

    md5s = _torchvision_md5s(spec)  # read from the classes now: tests substitute their own
    for rel in spec.files:
        path = root / rel
        if not path.is_file():
            return path
        # the same md5 test torchvision applies, so the file named is the one it rejected
        if not tvu.check_integrity(str(path), md5s.get(rel)):
            return path
        if not _readable(path):
            return path
    return None


def _torchvision_md5s(spec: DatasetFiles) -> dict[str, str]:
    from torchvision.datasets import CIFAR10, CIFAR100, SVHN

    if spec is SVHN_FILES:
        return {v[1]: v[2] for v in SVHN.split_list.values()}
    cls = CIFAR10 if spec is CIFAR10_FILES else CIFAR100
    folder = cls.base_folder
    out = {f"{folder}/{f}": m for f, m in cls.train_list + cls.test_list}
    out[f"{folder}/{cls.meta['filename']}"] = cls.meta["md5"]
    return out


def _readable(path: pathlib.Path) -> bool:
    try:
        if path.suffix == ".mat":
            import scipy.io

            scipy.io.loadmat(str(path))
        else:
            with open(path, "rb") as f:
                pickle.load(f, encoding="latin1")
    except Exception:
        return False
    return True


def _load_torchvision(
    spec: DatasetFiles,
    root: pathlib.Path,
    download: bool,
    build: Callable[[bool], tuple[Any, Any]],
) -> tuple[Any, Any]:
    """Run ``build(download)`` (which constructs the train and test datasets) and turn every
    failure into one line: not found, download failed, or which file is corrupt."""
    if not download and missing_files(spec, root):
        archive = root / spec.archive if spec.archive else None
        if archive is None or not archive.is_file():  # `missing_dataset`'s case
            raise not_found(spec, root)
        # torchvision only extracts right after downloading; honour a hand-placed archive
        _extract(spec, archive, root)
        if missing_files(spec, root):
            raise SratError(
                f"{archive} does not contain the expected {spec.folder}/ files: "
                f"replace it with the original {spec.archive}"
            )
    try:
        return build(download)
    except SratError:
        raise
    except Exception as exc:
        bad = _first_bad_file(spec, root)
        if download and (_is_network_error(exc) or (bad is not None and not bad.is_file())):
            source = spec.archive or " and ".join(spec.files)
            raise SratError(
                f"could not download {spec.title} into {root} ({_reason(exc)}): "
                f"place {source} there by hand and set data.download=false"
            ) from exc
        if bad is None:
            raise SratError(f"could not read {spec.title} from {root}: {_reason(exc)}") from exc
        if not bad.is_file():
            raise not_found(spec, root) from exc
        if spec.archive is not None:
            fix = f"re-extract it from {spec.archive}, or delete it and set data.download=true"
        else:
            fix = "replace it with a fresh copy, or delete it and set data.download=true"
        raise SratError(f"{spec.title} file {bad} is corrupt or incomplete: {fix}") from exc


def _extract(spec: DatasetFiles, archive: pathlib.Path, root: pathlib.Path) -> None:
    from torchvision.datasets.utils import extract_archive

    try:
        extract_archive(str(archive), str(root))
    except Exception as exc:
        raise SratError(
            f"could not extract {archive} ({_reason(exc)}): replace it with the original "
            f"{spec.archive}"
        ) from exc


def _is_network_error(exc: BaseException) -> bool:
    # URLError (and HTTPError) subclass OSError; socket timeouts and resets are OSErrors too
    return isinstance(exc, (urllib.error.URLError, ConnectionError, TimeoutError))


def _reason(exc: BaseException) -> str:
    text = str(getattr(exc, "reason", None) or exc or type(exc).__name__)
    return " ".join(text.split()) or type(exc).__name__


def _cifar(spec: DatasetFiles, root: pathlib.Path, download: bool) -> Splits:
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if spec is CIFAR10_FILES else CIFAR100

    def build(dl: bool) -> tuple[Any, Any]:
        # the second constructor finds the files the first one fetched
        return cls(str(root), train=True, download=dl), cls(str(root), train=False, download=False)

    train, test = _load_torchvision(spec, root, download, build)

    def to_nchw(data: np.ndarray) -> torch.Tensor:
        # torchvision keeps CIFAR as NHWC uint8; one permute + copy, no per-image loop
        return torch.from_numpy(np.ascontiguousarray(data)).permute(0, 3, 1, 2).contiguous()

    return Splits(
        train_x=to_nchw(train.data),
        train_y=torch.as_tensor(train.targets, dtype=torch.int64),
        test_x=to_nchw(test.data),
        test_y=torch.as_tensor(test.targets, dtype=torch.int64),
        classes=[str(c) for c in train.classes],
        clip=IMAGE_CLIP,
    )


def _svhn(root: pathlib.Path, download: bool) -> Splits:
    from torchvision.datasets import SVHN

    def build(dl: bool) -> tuple[Any, Any]:
        return SVHN(str(root), split="train", download=dl), SVHN(
            str(root), split="test", download=dl
        )

    train, test = _load_torchvision(SVHN_FILES, root, download, build)

    def to_nchw(data: np.ndarray) -> torch.Tensor:
        # torchvision already transposed SVHN to NCHW, but as a non-contiguous view
        return torch.from_numpy(np.ascontiguousarray(data, dtype=np.uint8))

    return Splits(
        train_x=to_nchw(train.data),
        train_y=torch.as_tensor(np.asarray(train.labels), dtype=torch.int64).reshape(-1),
        test_x=to_nchw(test.data),
        test_y=torch.as_tensor(np.asarray(test.labels), dtype=torch.int64).reshape(-1),
        classes=[str(i) for i in range(10)],
        clip=IMAGE_CLIP,
    )


# --------------------------------------------------------------------------- built-in sets


def _split_held_out(
    y: torch.Tensor, test_per_class: int, what: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Balanced held-out test indices (fixed seed) and the complementary train indices."""
    test_idx = balanced_subset_indices(y, test_per_class, seed=_SPLIT_SEED)
    is_test = torch.zeros(y.numel(), dtype=torch.bool)
    is_test[test_idx] = True
    train_idx = torch.nonzero(~is_test, as_tuple=False).flatten()
    left = torch.bincount(y[train_idx], minlength=int(y.max()) + 1)
    present = torch.bincount(y, minlength=left.numel()) > 0
    empty = torch.nonzero(present & (left == 0), as_tuple=False).flatten().tolist()
    if empty:
        raise SratError(
            f"{what}: test_per_class={test_per_class} leaves no training samples for class(es) "
            f"{', '.join(map(str, empty))}: lower test_per_class"
        )
    return train_idx, test_idx


def digits_table() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as (images float [1797, 8, 8] of 0..16, labels int [1797]).

    Read from the CSV scikit-learn ships (``sklearn/datasets/data/digits.csv.gz``: 64 pixels
    and the label per row, what ``load_digits`` parses) without importing scikit-learn, whose
    import costs about a second of every digits run's start; ``load_digits`` itself where
    that file is not found (a different layout of the package).
    """
    spec = importlib.util.find_spec("sklearn")
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    for root in roots:
        table = pathlib.Path(root) / "datasets" / "data" / "digits.csv.gz"
        if table.is_file():
            data = np.loadtxt(table, delimiter=",")
            return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images, bunch.target


def _digits(options: dict[str, Any]) -> Splits:
    per_class = dataset_options("digits", options)["test_per_class"]
    images, labels = digits_table()
    # sklearn's 8x8 images hold integer intensities 0..16; map them onto 0..255
    x = torch.from_numpy(np.rint(images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)
    y = torch.as_tensor(labels, dtype=torch.int64)
    train_idx, test_idx = _split_held_out(y, per_class, "digits")
    return Splits(
        train_x=x[train_idx].contiguous(),
        train_y=y[train_idx],
        test_x=x[test_idx].contiguous(),
        test_y=y[test_idx],
        classes=[str(i) for i in range(10)],
        clip=IMAGE_CLIP,
    )


def _gaussian(options: dict[str, Any]) -> Splits:
    """The SRAT paper's Eq. 1 binary mixture: y ∈ {+1, -1} with equal prior, x | y ~ N(y·mu,
    sigma² I), mu = (eta, ..., eta) ∈ R^d. Class 0 is y = +1, class 1 is y = -1."""
    opts = dataset_options("gaussian", options)
    d, eta, sigma, seed = opts["d"], opts["eta"], opts["sigma"], opts["seed"]
    n_train, n_test = opts["train_per_class"], opts["test_per_class"]

    gen = torch.Generator().manual_seed(seed)
    mu = torch.full((d,), eta, dtype=torch.float32)

    def draw(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        noise = torch.randn(2 * per_class, d, generator=gen) * sigma
        sign = torch.cat([torch.ones(per_class), -torch.ones(per_class)])[:, None]
        y = torch.cat([torch.zeros(per_class), torch.ones(per_class)]).to(torch.int64)
        return (sign * mu + noise).to(torch.float32), y

    train_x, train_y = draw(n_train)
    test_x, test_y = draw(n_test)
    return Splits(train_x, train_y, test_x, test_y, classes=["+1", "-1"], clip=None)


def _synthetic(options: dict[str, Any]) -> Splits:
    """Uniformly random uint8 images with balanced labels, shaped like CIFAR-10 by default.

    Nothing in it can be learnt; it exists so a CIFAR preset's exact shapes and class counts
    (and so its cost per epoch) can be run and timed where the real data is not at hand:
    ``srat run --preset cifar10-exp100-ce --set data.dataset=synthetic``.
    """
    opts = dataset_options("synthetic", options)
    classes, channels, size = opts["classes"], opts["channels"], opts["size"]
    n_train, n_test, seed = opts["train_per_class"], opts["test_per_class"], opts["seed"]
    gen = torch.Generator().manual_seed(seed)

    def draw(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randint(
            0, 256, (classes * per_class, channels, size, size), generator=gen, dtype=torch.uint8
        )
        return x, torch.arange(classes).repeat_interleave(per_class)

    train_x, train_y = draw(n_train)
    test_x, test_y = draw(n_test)
    names = [str(c) for c in range(classes)]
    return Splits(train_x, train_y, test_x, test_y, classes=names, clip=IMAGE_CLIP)


# --------------------------------------------------------------------------- image folder


def _read_folder(path: pathlib.Path, size: int) -> tuple[Any, torch.Tensor, torch.Tensor]:
    from PIL import Image
    from torchvision.datasets import ImageFolder

    try:
        ds = ImageFolder(str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise SratError(f"image folder {path}: {_reason(exc)}") from exc
    n = len(ds.samples)
    xs = np.empty((n, size, size, 3), dtype=np.uint8)
    for i, (file, _) in enumerate(ds.samples):
        # images differ in size and mode, so each is decoded and resized on its own
        try:
            with Image.open(file) as img:
                rgb = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
                xs[i] = np.asarray(rgb, dtype=np.uint8)
        except Exception as exc:
            raise SratError(f"cannot read image {file}: {_reason(exc)}") from exc
    x = torch.from_numpy(xs).permute(0, 3, 1, 2).contiguous()
    y = torch.as_tensor(ds.targets, dtype=torch.int64)
    return ds, x, y


def _folder(root: pathlib.Path, options: dict[str, Any]) -> Splits:
    opts = dataset_options("folder", options)
    size = opts["image_size"]
    if not root.is_dir():
        raise SratError(
            f"image folder {root} does not exist: expected one subfolder of images per class, "
            "or train/ and test/ each holding them"
        )
    train_dir, test_dir = root / "train", root / "test"
    if train_dir.is_dir() and test_dir.is_dir():
        if opts["test_per_class"] is not None:
            raise SratError(
                f"image folder {root} has its own test/ split: drop option test_per_class"
            )
        train_ds, train_x, train_y = _read_folder(train_dir, size)
        test_ds, test_x, test_y = _read_folder(test_dir, size)
        if test_ds.classes != train_ds.classes:
            raise SratError(
                f"image folder {root}: train/ and test/ must hold the same class folders "
                f"(train: {', '.join(train_ds.classes)}; test: {', '.join(test_ds.classes)})"
            )
        classes = list(train_ds.classes)
    else:
        # a lone train/ is the whole pool; a folder named train/ is never meant as a class
        pool = train_dir if train_dir.is_dir() else root
        ds, x, y = _read_folder(pool, size)
        counts = torch.bincount(y, minlength=len(ds.classes))
        if opts["test_per_class"] is None:
            per_class = folder_held_out(int(counts.min()))
        else:
            per_class = opts["test_per_class"]
        train_idx, test_idx = _split_held_out(y, per_class, f"image folder {pool}")
        train_x, train_y = x[train_idx].contiguous(), y[train_idx]
        test_x, test_y = x[test_idx].contiguous(), y[test_idx]
        classes = list(ds.classes)
    return Splits(train_x, train_y, test_x, test_y, classes=classes, clip=IMAGE_CLIP)


# --------------------------------------------------------------------------- entry point

DATASETS: tuple[str, ...] = (
    "cifar10", "cifar100", "svhn", "digits", "gaussian", "synthetic", "folder",
)  # fmt: skip


def load_splits(name: str, root: pathlib.Path, *, download: bool = False, **options: Any) -> Splits:
    """Load dataset ``name`` as whole-split tensors.

    ``root`` is the data directory for cifar10/cifar100/svhn (torchvision's layout), the
    user's image folder for ``folder``, and unused by ``digits``, ``gaussian`` and ``synthetic``.
    """
    root = pathlib.Path(os.path.expanduser(str(root)))
    if name in ("cifar10", "cifar100", "svhn"):
        dataset_options(name, options)
        if name == "svhn":
            return _svhn(root, download)
        return _cifar(CIFAR10_FILES if name == "cifar10" else CIFAR100_FILES, root, download)
    if name == "digits":
        return _digits(options)
    if name == "gaussian":
        return _gaussian(options)
    if name == "synthetic":
        return _synthetic(options)
    if name == "folder":
        return _folder(root, options)
    raise SratError(f"unknown dataset {name!r}: known datasets are {', '.join(DATASETS)}")
