"""What each dataset looks like before it is loaded: classes, input shape, per-class sizes.

`srat run --dry-run` resolves per-class counts, class weights and LDAM margins from this alone,
without reading any data file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from srat_engine.errors import SratError


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    input_shape: tuple[int, ...]
    train_class_sizes: tuple[int, ...]  # examples per class available for training
    class_names: tuple[str, ...] = ()

    def names(self) -> list[str]:
        return list(self.class_names) or [str(c) for c in range(self.num_classes)]


# SVHN train split per digit 0..9 (73,257 images; torchvision maps label 10 to digit 0).
_SVHN_TRAIN = (4948, 13861, 10585, 8497, 7458, 6882, 5727, 5595, 5045, 4659)
# sklearn digits per class (1,797 images), less the 50 per class held out as the test set.
_DIGITS_TOTAL = (178, 182, 177, 183, 181, 182, 181, 179, 174, 180)
DIGITS_TEST_PER_CLASS = 50

_CIFAR10_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
_DIGIT_NAMES = tuple(str(d) for d in range(10))

_FIXED: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo("cifar10", 10, (3, 32, 32), (5000,) * 10, _CIFAR10_NAMES),
    "cifar100": DatasetInfo("cifar100", 100, (3, 32, 32), (500,) * 100),
    "svhn": DatasetInfo("svhn", 10, (3, 32, 32), _SVHN_TRAIN, _DIGIT_NAMES),
}


def dataset_info(name: str, options: dict[str, float | int | str], root: Path) -> DatasetInfo:
    """Static facts about a dataset; `folder` counts files, nothing else reads data."""
    if name in _FIXED:
        return _FIXED[name]
    if name == "digits":
        held_out = int(options.get("test_per_class", DIGITS_TEST_PER_CLASS))
        sizes = tuple(n - held_out for n in _DIGITS_TOTAL)
        if min(sizes) < 1:
            raise SratError(f"data.options.test_per_class={held_out} leaves no digits to train on")
        return DatasetInfo("digits", 10, (1, 8, 8), sizes, _DIGIT_NAMES)
    if name == "gaussian":
        dim = int(options.get("d", 2))
        per_class = int(options.get("train_per_class", 5000))
        return DatasetInfo("gaussian", 2, (dim,), (per_class, per_class), ("+1", "-1"))
    if name == "synthetic":
        classes = int(options.get("classes", 10))
        channels, size = int(options.get("channels", 3)), int(options.get("size", 32))
        per_class = int(options.get("train_per_class", 5000))
        return DatasetInfo("synthetic", classes, (channels, size, size), (per_class,) * classes)
    if name == "folder":
        return _folder_info(root, options)
    raise SratError(f"unknown dataset {name!r}")


_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def _folder_info(root: Path, options: dict[str, float | int | str]) -> DatasetInfo:
    train = root / "train" if (root / "train").is_dir() else root
    if not train.is_dir():
        raise SratError(f"image folder not found: {root} (expected one subfolder per class)")
    classes = sorted(p for p in train.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise SratError(f"{train} needs at least two class subfolders, found {len(classes)}")
    sizes = [sum(1 for f in c.rglob("*") if f.suffix.lower() in _IMAGE_SUFFIXES) for c in classes]
    if not (root / "test").is_dir():
        held_out = int(options.get("test_per_class", max(1, min(sizes) // 5)))
        sizes = [n - held_out for n in sizes]
    size = int(options.get("image_size", 32))
    names = tuple(c.name for c in classes)
    return DatasetInfo("folder", len(classes), (3, size, size), tuple(sizes), names)
