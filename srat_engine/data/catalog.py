"""What each dataset looks like before it is loaded: classes, input shape, per-class sizes,
and the files a downloaded one needs (`missing_dataset`, a launch's check).

`srat run --dry-run` resolves per-class counts, class weights, LDAM margins and what a run's
evaluation costs (`config.workload`) from this alone, without reading any data file; the
datasets' options (and so the generated sets' sizes) are checked here, from `data/options.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from srat_engine.data.options import dataset_options
from srat_engine.errors import SratError

# images, whatever their file format, are scaled to [0, 1] when loaded
IMAGE_CLIP = (0.0, 1.0)


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    input_shape: tuple[int, ...]
    train_class_sizes: tuple[int, ...]  # examples per class available for training
    class_names: tuple[str, ...] = ()
    test_class_sizes: tuple[int, ...] = ()  # the test split's examples per class

    def names(self) -> list[str]:
        return list(self.class_names) or [str(c) for c in range(self.num_classes)]

    @property
    def clip(self) -> tuple[float, float] | None:
        """The loaded inputs' range (the Splits' clip): [0, 1] for images (C, H, W); None for
        the Gaussian mixture's unbounded features."""
        return IMAGE_CLIP if len(self.input_shape) == 3 else None


# SVHN train and test splits per digit 0..9 (73,257 and 26,032 images; torchvision maps label
# 10 to digit 0).
_SVHN_TRAIN = (4948, 13861, 10585, 8497, 7458, 6882, 5727, 5595, 5045, 4659)
_SVHN_TEST = (1744, 5099, 4149, 2882, 2523, 2384, 1977, 2019, 1660, 1595)
# sklearn digits per class (1,797 images), of which data.options.test_per_class are held out
_DIGITS_TOTAL = (178, 182, 177, 183, 181, 182, 181, 179, 174, 180)


def folder_held_out(smallest_class: int) -> int:
    """Test examples per class held out of an image folder without a test/ split, unless
    data.options.test_per_class says: 20% of the smallest class, at least 1."""
    return max(1, smallest_class // 5)


_CIFAR10_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
_DIGIT_NAMES = tuple(str(d) for d in range(10))

_FIXED: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo("cifar10", 10, (3, 32, 32), (5000,) * 10, _CIFAR10_NAMES, (1000,) * 10),
    "cifar100": DatasetInfo("cifar100", 100, (3, 32, 32), (500,) * 100, (), (100,) * 100),
    "svhn": DatasetInfo("svhn", 10, (3, 32, 32), _SVHN_TRAIN, _DIGIT_NAMES, _SVHN_TEST),
}


def dataset_info(name: str, options: dict[str, float | int | str], root: Path) -> DatasetInfo:
    """Static facts about a dataset; `folder` counts files, nothing else reads data."""
    opts = dataset_options(name, options)
    if name in _FIXED:
        return _FIXED[name]
    if name == "digits":
        held_out = opts["test_per_class"]
        sizes = tuple(n - held_out for n in _DIGITS_TOTAL)
        if min(sizes) < 1:
            raise SratError(f"data.options.test_per_class={held_out} leaves no digits to train on")
        return DatasetInfo("digits", 10, (1, 8, 8), sizes, _DIGIT_NAMES, (held_out,) * 10)
    train, test = opts.get("train_per_class"), opts.get("test_per_class")
    if name == "gaussian":
        return DatasetInfo("gaussian", 2, (opts["d"],), (train,) * 2, ("+1", "-1"), (test,) * 2)
    if name == "synthetic":
        classes, shape = opts["classes"], (opts["channels"], opts["size"], opts["size"])
        return DatasetInfo("synthetic", classes, shape, (train,) * classes, (), (test,) * classes)
    return _folder_info(root, opts)


_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def _folder_info(root: Path, options: dict[str, float | int | str]) -> DatasetInfo:
    train = root / "train" if (root / "train").is_dir() else root
    if not train.is_dir():
        raise SratError(f"image folder not found: {root} (expected one subfolder per class)")
    classes = sorted(p for p in train.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise SratError(f"{train} needs at least two class subfolders, found {len(classes)}")
    sizes = [_image_count(c) for c in classes]
    if (root / "train").is_dir() and (root / "test").is_dir():  # its own split, as sources.py
        tests = [_image_count(root / "test" / c.name) for c in classes]
    else:
        given = options["test_per_class"]
        held_out = folder_held_out(min(sizes)) if given is None else given
        tests = [min(n, held_out) for n in sizes]
        sizes = [n - held_out for n in sizes]
    size = options["image_size"]
    names = tuple(c.name for c in classes)
    return DatasetInfo("folder", len(classes), (3, size, size), tuple(sizes), names, tuple(tests))


def _image_count(folder: Path) -> int:
    if not folder.is_dir():
        return 0
    return sum(1 for f in folder.rglob("*") if f.suffix.lower() in _IMAGE_SUFFIXES)


# -- the files of torchvision's datasets ----------------------------------------------------------


@dataclass(frozen=True)
class DatasetFiles:
    """How a torchvision dataset lays out its files, for messages, launch checks and diagnosis."""

    title: str
    files: tuple[str, ...]  # relative to root, in the order torchvision reads them
    archive: str | None  # the downloadable archive (CIFAR), or None (SVHN: plain files)
    folder: str | None  # what the archive extracts to


CIFAR10_FILES = DatasetFiles(
    "CIFAR-10",
    tuple(
        f"cifar-10-batches-py/{f}"
        for f in (
            "data_batch_1",
            "data_batch_2",
            "data_batch_3",
            "data_batch_4",
            "data_batch_5",
            "test_batch",
            "batches.meta",
        )
    ),
    "cifar-10-python.tar.gz",
    "cifar-10-batches-py",
)
CIFAR100_FILES = DatasetFiles(
    "CIFAR-100",
    ("cifar-100-python/train", "cifar-100-python/test", "cifar-100-python/meta"),
    "cifar-100-python.tar.gz",
    "cifar-100-python",
)
SVHN_FILES = DatasetFiles("SVHN", ("train_32x32.mat", "test_32x32.mat"), None, None)
TORCHVISION_FILES = {"cifar10": CIFAR10_FILES, "cifar100": CIFAR100_FILES, "svhn": SVHN_FILES}


def not_found(spec: DatasetFiles, root: Path) -> SratError:
    if spec.archive is not None:
        what = f"{spec.archive} (extracted: {spec.folder}/)"
    else:
        what = " and ".join(spec.files)
    return SratError(
        f"{spec.title} not found in {root}: place {what} there, "
        "or set data.download=true on a machine with internet access"
    )


def missing_files(spec: DatasetFiles, root: Path) -> list[str]:
    return [f for f in spec.files if not (root / f).is_file()]


def missing_dataset(name: str, root: Path, download: bool) -> str | None:
    """Why dataset `name` cannot load from `root`: its files are not there, nor an archive
    to extract them from, and it may not download (the message loading would raise). None
    when it can try, and for datasets without files (digits, gaussian, synthetic; a folder's
    problems are its catalog's). Cheap: file stats, no reading."""
    spec = TORCHVISION_FILES.get(name)
    if spec is None or download:
        return None
    root = Path(root).expanduser()
    if not missing_files(spec, root):
        return None
    if spec.archive is not None and (root / spec.archive).is_file():
        return None  # extracted on load
    return str(not_found(spec, root))
