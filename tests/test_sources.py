"""Dataset sources on tiny files written in the real on-disk formats (no network)."""

from __future__ import annotations

import hashlib
import pathlib
import pickle
import re
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image
from torchvision.datasets import CIFAR10, CIFAR100, SVHN

from srat_engine.data import sources
from srat_engine.data.catalog import dataset_info, missing_dataset
from srat_engine.data.sources import Splits, digits_table, load_splits
from srat_engine.errors import SratError

CIFAR10_NAMES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


def _md5(path: pathlib.Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _pickle(path: pathlib.Path, obj: dict) -> None:
    # The real archives are Python 2 pickles whose str keys torchvision reads back as str
    # (pickle.load(..., encoding="latin1") then entry["data"]); a py3 pickle with str keys
    # is what that code path sees, whereas bytes keys (b"data") would raise KeyError there.
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


# torchvision verifies every file against the md5 of the official release
# (CIFAR10._check_integrity, CIFAR10._load_meta, SVHN._check_integrity). Rather than
# disabling the check, each test swaps the class's md5 tables for the md5s of the files it
# generated, so the real integrity check still runs and still catches later corruption.


def _register_cifar_md5(monkeypatch: pytest.MonkeyPatch, cls: type, folder: pathlib.Path) -> None:
    train = [[name, _md5(folder / name)] for name, _ in cls.train_list]
    test = [[name, _md5(folder / name)] for name, _ in cls.test_list]
    meta = {**cls.meta, "md5": _md5(folder / cls.meta["filename"])}
    monkeypatch.setattr(cls, "train_list", train)
    monkeypatch.setattr(cls, "test_list", test)
    monkeypatch.setattr(cls, "meta", meta)


def _write_cifar10(root: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, np.ndarray]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = _rng(1)
    xs, ys = [], []
    for i in range(1, 6):
        data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, 4)]
        batch = {
            "batch_label": f"training batch {i} of 5",
            "labels": labels,
            "data": data,
            "filenames": [f"f{i}_{k}.png" for k in range(4)],
        }
        _pickle(folder / f"data_batch_{i}", batch)
        xs.append(data)
        ys.extend(labels)
    test_data = rng.integers(0, 256, (6, 3072), dtype=np.uint8)
    test_labels = [9, 0, 3, 3, 5, 1]
    _pickle(folder / "test_batch", {"labels": test_labels, "data": test_data})
    _pickle(folder / "batches.meta", {"label_names": CIFAR10_NAMES, "num_vis": 3072})
    _register_cifar_md5(monkeypatch, CIFAR10, folder)
    return {
        "train_x": np.vstack(xs),
        "train_y": np.array(ys),
        "test_x": test_data,
        "test_y": np.array(test_labels),
    }


def _write_cifar100(root: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, np.ndarray]:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = _rng(2)
    out = {}
    for split, n in (("train", 7), ("test", 5)):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = [int(v) for v in rng.integers(0, 100, n)]
        coarse = [v // 5 for v in fine]
        _pickle(folder / split, {"data": data, "fine_labels": fine, "coarse_labels": coarse})
        out[f"{split}_x"], out[f"{split}_y"] = data, np.array(fine)
    _pickle(
        folder / "meta",
        {
            "fine_label_names": [f"fine{i}" for i in range(100)],
            "coarse_label_names": [f"coarse{i}" for i in range(20)],
        },
    )
    _register_cifar_md5(monkeypatch, CIFAR100, folder)
    return out


def _write_svhn(root: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, np.ndarray]:
    root.mkdir(parents=True, exist_ok=True)
    rng = _rng(3)
    out = {}
    split_list = {k: list(v) for k, v in SVHN.split_list.items()}
    for split, n in (("train", 9), ("test", 4)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        # the .mat files label digit 0 as 10
        y = np.array([10, 1, 2, 3, 4, 5, 6, 7, 9][:n], dtype=np.uint8).reshape(n, 1)
        path = root / f"{split}_32x32.mat"
        scipy.io.savemat(str(path), {"X": x, "y": y})
        split_list[split][2] = _md5(path)
        out[f"{split}_x"] = x.transpose(3, 2, 0, 1)  # [H, W, C, N] -> [N, C, H, W]
        out[f"{split}_y"] = y.reshape(-1).astype(np.int64) % 10
    monkeypatch.setattr(SVHN, "split_list", split_list)
    return out


def _assert_images(s: Splits, expected: dict[str, np.ndarray]) -> None:
    for split in ("train", "test"):
        x, y = getattr(s, f"{split}_x"), getattr(s, f"{split}_y")
        want_x = expected[f"{split}_x"]
        assert x.dtype == torch.uint8 and y.dtype == torch.int64
        assert x.is_contiguous()
        assert x.shape == (want_x.shape[0], 3, 32, 32)
        assert torch.equal(x, torch.from_numpy(np.ascontiguousarray(want_x).reshape(x.shape)))
        assert y.tolist() == expected[f"{split}_y"].tolist()
    assert s.clip == (0.0, 1.0)


def test_cifar10_round_trip(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = _write_cifar10(tmp_path, monkeypatch)
    s = load_splits("cifar10", tmp_path)
    _assert_images(s, expected)
    assert s.classes == CIFAR10_NAMES
    # CIFAR rows are channel-major: the first 1024 bytes are the red plane, row by row
    assert s.train_x[0, 0, 0, 1].item() == expected["train_x"][0, 1]
    assert s.train_x[0, 2, 31, 31].item() == expected["train_x"][0, 3071]


def test_cifar100_round_trip(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = _write_cifar100(tmp_path, monkeypatch)
    s = load_splits("cifar100", tmp_path)
    _assert_images(s, expected)
    assert s.classes == [f"fine{i}" for i in range(100)]


def test_svhn_round_trip(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = _write_svhn(tmp_path, monkeypatch)
    s = load_splits("svhn", tmp_path)
    _assert_images(s, expected)
    assert s.classes == [str(i) for i in range(10)]
    assert s.train_y[0].item() == 0  # label 10 in the file


def test_cifar10_from_a_hand_placed_archive(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    staging = tmp_path / "staging"
    expected = _write_cifar10(staging, monkeypatch)
    data = tmp_path / "data"
    data.mkdir()
    with tarfile.open(data / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(staging / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    _assert_images(load_splits("cifar10", data), expected)


@pytest.mark.parametrize(
    ("name", "archive"),
    [
        ("cifar10", "cifar-10-python.tar.gz"),
        ("cifar100", "cifar-100-python.tar.gz"),
        ("svhn", "train_32x32.mat"),
        ("svhn", "test_32x32.mat"),
    ],
)
def test_missing_files_name_directory_and_archive(
    tmp_path: pathlib.Path, name: str, archive: str
) -> None:
    root = tmp_path / "nowhere"
    with pytest.raises(SratError) as info:
        load_splits(name, root)
    msg = str(info.value)
    assert str(root) in msg
    assert archive in msg
    assert "\n" not in msg


def test_missing_dataset_says_what_loading_would(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`missing_dataset` (what a launch checks) agrees with `load_splits` on every case."""
    root = tmp_path / "nowhere"
    with pytest.raises(SratError) as info:
        load_splits("cifar10", root)
    assert missing_dataset("cifar10", root, download=False) == str(info.value)
    assert missing_dataset("cifar10", root, download=True) is None  # it may try
    assert missing_dataset("digits", root, download=False) is None  # no files to miss
    _write_cifar10(tmp_path / "files", monkeypatch)
    assert missing_dataset("cifar10", tmp_path / "files", download=False) is None
    archive_only = tmp_path / "archive"
    archive_only.mkdir()
    (archive_only / "cifar-10-python.tar.gz").write_bytes(b"extracted when loaded")
    assert missing_dataset("cifar10", archive_only, download=False) is None
    assert missing_dataset("svhn", archive_only, download=False) is not None


def test_cifar10_partial_folder_is_not_found(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_cifar10(tmp_path, monkeypatch)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(SratError, match=re.escape("cifar-10-python.tar.gz")):
        load_splits("cifar10", tmp_path)


def test_cifar10_truncated_file_fails_md5_and_is_named(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_cifar10(tmp_path, monkeypatch)
    bad = tmp_path / "cifar-10-batches-py" / "data_batch_4"
    bad.write_bytes(bad.read_bytes()[:100])
    with pytest.raises(SratError) as info:
        load_splits("cifar10", tmp_path)
    assert str(bad) in str(info.value)
    assert "\n" not in str(info.value)


def test_cifar10_truncated_pickle_with_matching_md5_is_named(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar10(tmp_path, monkeypatch)
    bad = folder / "test_batch"
    bad.write_bytes(bad.read_bytes()[:100])
    _register_cifar_md5(monkeypatch, CIFAR10, folder)  # md5 passes, unpickling fails
    with pytest.raises(SratError) as info:
        load_splits("cifar10", tmp_path)
    assert str(bad) in str(info.value)


def test_svhn_corrupt_mat_is_named(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_svhn(tmp_path, monkeypatch)
    bad = tmp_path / "test_32x32.mat"
    bad.write_bytes(b"not a mat file")
    with pytest.raises(SratError) as info:
        load_splits("svhn", tmp_path)
    assert str(bad) in str(info.value)


@pytest.mark.parametrize("name", ["cifar10", "svhn"])
def test_download_without_network_is_one_clear_line(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(SratError) as info:
        load_splits(name, tmp_path, download=True)
    msg = str(info.value)
    assert "download" in msg and str(tmp_path) in msg
    assert "\n" not in msg


def test_download_flag_with_files_present_does_not_touch_network(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = _write_cifar10(tmp_path, monkeypatch)

    def offline(*args: object, **kwargs: object) -> None:
        raise AssertionError("network used although the files are present")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    _assert_images(load_splits("cifar10", tmp_path, download=True), expected)


def test_unknown_dataset_lists_known_names(tmp_path: pathlib.Path) -> None:
    with pytest.raises(SratError) as info:
        load_splits("mnist", tmp_path)
    msg = str(info.value)
    assert "mnist" in msg
    for known in ("cifar10", "cifar100", "svhn", "digits", "gaussian", "folder"):
        assert known in msg


def test_unknown_option_is_rejected(tmp_path: pathlib.Path) -> None:
    with pytest.raises(SratError, match="test_per_clas"):
        load_splits("digits", tmp_path, test_per_clas=10)


# ----------------------------------------------------------------------------- digits


def test_digits_shapes_and_balanced_test(tmp_path: pathlib.Path) -> None:
    s = load_splits("digits", tmp_path)
    assert s.train_x.shape == (1797 - 500, 1, 8, 8)
    assert s.test_x.shape == (500, 1, 8, 8)
    assert s.train_x.dtype == torch.uint8 and s.train_y.dtype == torch.int64
    assert torch.bincount(s.test_y, minlength=10).tolist() == [50] * 10
    assert s.classes == [str(i) for i in range(10)]
    assert s.clip == (0.0, 1.0)
    # 0..16 maps onto 0..255: both ends occur
    assert int(s.train_x.min()) == 0 and int(s.train_x.max()) == 255


def test_digits_split_is_fixed_and_disjoint(tmp_path: pathlib.Path) -> None:
    from sklearn.datasets import load_digits

    a = load_splits("digits", tmp_path)
    torch.manual_seed(1234)
    b = load_splits("digits", tmp_path)
    assert torch.equal(a.test_x, b.test_x) and torch.equal(a.test_y, b.test_y)
    assert torch.equal(a.train_x, b.train_x)
    # every original image lands in exactly one split
    original = np.rint(load_digits().images * 255 / 16).astype(np.uint8).reshape(1797, -1)
    pool = torch.cat([a.train_x, a.test_x]).reshape(1797, -1).numpy()
    assert sorted(map(bytes, pool)) == sorted(map(bytes, original))


def test_digits_table_is_what_load_digits_returns() -> None:
    from sklearn.datasets import load_digits

    images, labels = digits_table()
    bunch = load_digits()
    assert images.shape == (1797, 8, 8) and np.array_equal(images, bunch.images)
    assert np.array_equal(labels, bunch.target) and labels.dtype.kind == "i"


def test_digits_table_falls_back_to_load_digits_without_the_csv(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    from importlib.machinery import ModuleSpec

    from sklearn.datasets import load_digits

    # a scikit-learn whose package folder holds no digits.csv.gz
    spec = ModuleSpec("sklearn", None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path)]
    monkeypatch.setattr(sources.importlib.util, "find_spec", lambda name: spec)
    images, labels = digits_table()
    assert np.array_equal(images, load_digits().images) and labels.tolist()[:3] == [0, 1, 2]


def test_a_digits_run_does_not_import_sklearn(tmp_path: pathlib.Path) -> None:
    code = (
        "import sys; from srat_engine.data.sources import load_splits; "
        f"load_splits('digits', {str(tmp_path)!r}); print('sklearn' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_digits_custom_test_size(tmp_path: pathlib.Path) -> None:
    s = load_splits("digits", tmp_path, test_per_class=20)
    assert torch.bincount(s.test_y, minlength=10).tolist() == [20] * 10
    with pytest.raises(SratError):
        load_splits("digits", tmp_path, test_per_class=1000)


# ----------------------------------------------------------------------------- gaussian


def test_gaussian_mixture(tmp_path: pathlib.Path) -> None:
    s = load_splits(
        "gaussian",
        tmp_path,
        d=3,
        eta=2.0,
        sigma=0.5,
        train_per_class=2000,
        test_per_class=500,
        seed=4,
    )
    assert s.train_x.shape == (4000, 3) and s.test_x.shape == (1000, 3)
    assert s.train_x.dtype == torch.float32 and s.train_y.dtype == torch.int64
    assert s.clip is None
    assert s.classes == ["+1", "-1"]
    for x, y in ((s.train_x, s.train_y), (s.test_x, s.test_y)):
        assert torch.allclose(x[y == 0].mean(0), torch.full((3,), 2.0), atol=0.1)
        assert torch.allclose(x[y == 1].mean(0), torch.full((3,), -2.0), atol=0.1)
    assert abs(float(s.train_x[s.train_y == 0].std()) - 0.5) < 0.05
    again = load_splits(
        "gaussian",
        tmp_path,
        d=3,
        eta=2.0,
        sigma=0.5,
        train_per_class=2000,
        test_per_class=500,
        seed=4,
    )
    assert torch.equal(s.train_x, again.train_x)


def test_gaussian_defaults(tmp_path: pathlib.Path) -> None:
    s = load_splits("gaussian", tmp_path)
    assert s.train_x.shape == (10000, 2)
    assert torch.bincount(s.train_y).tolist() == [5000, 5000]


@pytest.mark.parametrize("bad", [{"sigma": 0.0}, {"d": 0}, {"eta": float("nan")}])
def test_gaussian_bad_options(tmp_path: pathlib.Path, bad: dict) -> None:
    with pytest.raises(SratError):
        load_splits("gaussian", tmp_path, **bad)


# ----------------------------------------------------------------------------- synthetic


def test_synthetic_defaults_are_cifar10_shaped(tmp_path: pathlib.Path) -> None:
    s = load_splits("synthetic", tmp_path, train_per_class=20, test_per_class=7)
    assert s.train_x.shape == (200, 3, 32, 32) and s.train_x.dtype == torch.uint8
    assert s.test_x.shape == (70, 3, 32, 32)
    assert torch.bincount(s.train_y).tolist() == [20] * 10
    assert torch.bincount(s.test_y).tolist() == [7] * 10
    assert s.clip == (0.0, 1.0) and s.classes == [str(c) for c in range(10)]
    # uniform over 0..255: both ends occur and the mean sits near 127.5
    assert int(s.train_x.min()) == 0 and int(s.train_x.max()) == 255
    assert abs(float(s.train_x.float().mean()) - 127.5) < 2.0


def test_synthetic_options_and_seed(tmp_path: pathlib.Path) -> None:
    opts = {"classes": 3, "channels": 1, "size": 5, "train_per_class": 4, "test_per_class": 2}
    a = load_splits("synthetic", tmp_path, seed=1, **opts)
    b = load_splits("synthetic", tmp_path, seed=1, **opts)
    c = load_splits("synthetic", tmp_path, seed=2, **opts)
    assert a.train_x.shape == (12, 1, 5, 5) and a.num_classes == 3
    assert torch.equal(a.train_x, b.train_x) and not torch.equal(a.train_x, c.train_x)


@pytest.mark.parametrize("bad", [{"classes": 1}, {"size": 0}, {"colour": 3}])
def test_synthetic_bad_options(tmp_path: pathlib.Path, bad: dict) -> None:
    with pytest.raises(SratError):
        load_splits("synthetic", tmp_path, **bad)


# ----------------------------------------------------------------------------- folder


def _write_pngs(folder: pathlib.Path, per_class: dict[str, int], size: tuple[int, int]) -> None:
    rng = _rng(5)
    for cls, n in per_class.items():
        (folder / cls).mkdir(parents=True, exist_ok=True)
        for k in range(n):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / cls / f"{k}.png")


def test_folder_with_train_and_test(tmp_path: pathlib.Path) -> None:
    _write_pngs(tmp_path / "train", {"cat": 3, "dog": 2}, (20, 12))
    _write_pngs(tmp_path / "test", {"cat": 1, "dog": 2}, (7, 9))
    s = load_splits("folder", tmp_path, image_size=16)
    assert s.classes == ["cat", "dog"]
    assert s.train_x.shape == (5, 3, 16, 16) and s.train_x.dtype == torch.uint8
    assert s.test_x.shape == (3, 3, 16, 16)
    assert s.train_y.tolist() == [0, 0, 0, 1, 1]
    assert s.test_y.tolist() == [0, 1, 1]
    assert s.clip == (0.0, 1.0)


def test_folder_same_size_image_is_kept_exactly(tmp_path: pathlib.Path) -> None:
    pixels = _rng(6).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    for split in ("train", "test"):
        (tmp_path / split / "only").mkdir(parents=True)
        Image.fromarray(pixels).save(tmp_path / split / "only" / "a.png")
    s = load_splits("folder", tmp_path, image_size=8)
    assert torch.equal(s.train_x[0], torch.from_numpy(pixels).permute(2, 0, 1))


def test_folder_held_out_split(tmp_path: pathlib.Path) -> None:
    _write_pngs(tmp_path, {"a": 10, "b": 6, "c": 8}, (10, 10))
    s = load_splits("folder", tmp_path)
    assert s.classes == ["a", "b", "c"]
    assert s.train_x.shape[1:] == (3, 32, 32)
    # default test size: 20% of the smallest class (6) -> 1 per class
    assert torch.bincount(s.test_y, minlength=3).tolist() == [1, 1, 1]
    assert torch.bincount(s.train_y, minlength=3).tolist() == [9, 5, 7]
    again = load_splits("folder", tmp_path)
    assert torch.equal(s.test_x, again.test_x)
    s2 = load_splits("folder", tmp_path, test_per_class=3, image_size=10)
    assert torch.bincount(s2.test_y, minlength=3).tolist() == [3, 3, 3]
    pool = {bytes(v) for v in torch.cat([s2.train_x, s2.test_x]).reshape(24, -1).numpy()}
    assert len(pool) == 24  # disjoint: every image appears once


def test_folder_missing_or_empty(tmp_path: pathlib.Path) -> None:
    with pytest.raises(SratError, match="nope"):
        load_splits("folder", tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SratError, match="empty"):
        load_splits("folder", tmp_path / "empty")


@pytest.mark.parametrize(
    ("name", "options"),
    [("digits", {}), ("gaussian", {"train_per_class": 5, "test_per_class": 5}),
     ("synthetic", {"classes": 2, "train_per_class": 3, "test_per_class": 2, "size": 4})],
)  # fmt: skip
def test_the_catalog_knows_the_range_the_loader_gives(
    name: str, options: dict[str, int], tmp_path: pathlib.Path
) -> None:
    """Config-time checks (a budget in pixel units) read the catalog's clip; it must be the
    loaded Splits' own."""
    loaded = load_splits(name, tmp_path, **options)
    assert dataset_info(name, options, tmp_path).clip == loaded.clip
