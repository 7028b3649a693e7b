"""Tests of datadistill.data: readers on tiny files in the real formats, preprocessing, datasets."""

from __future__ import annotations

import gzip
import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from datadistill.data import (
    DATASETS,
    ZCA,
    Preprocessing,
    RealDataset,
    dataset_info,
    load_dataset,
    read_cifar,
    read_idx,
    read_imagefolder,
    read_mnist_like,
)
from datadistill.data import readers as readers_mod
from datadistill.errors import ConfigError, DataError, UnknownNameError
from datadistill.utils import make_generator

FASHION_SYSTEM = Path("/usr/share/datasets/fashion-mnist")


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(autouse=True)
def no_system_dirs(monkeypatch, tmp_path):
    """Keep the machine's /usr/share/datasets out of reader searches (tests use tmp files)."""
    monkeypatch.setattr(readers_mod, "SYSTEM_DATA_DIRS", [tmp_path / "no-system-datasets"])


def write_idx(path: Path, arr: np.ndarray, compress: bool = False) -> None:
    codes = {np.uint8: 0x08, np.int32: 0x0C, np.float32: 0x0D}
    code = codes[arr.dtype.type]
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    data = header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    if compress:
        data = gzip.compress(data)
    path.write_bytes(data)


def make_mnist_dir(folder: Path, n_train: int = 30, n_test: int = 10, gz: bool = True) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for stem, arr in arrays.items():
        write_idx(folder / (stem + (".gz" if gz else "")), arr, compress=gz)
    return arrays


def make_cifar10_dir(folder: Path, per_batch: int = 4) -> tuple[np.ndarray, np.ndarray]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    xs, ys = [], []
    for i in range(1, 6):
        x = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, per_batch)]
        # The official files come from Python 2: bytes keys, protocol 2.
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump({b"data": x, b"labels": y, b"batch_label": b"b"}, f, protocol=2)
        xs.append(x)
        ys += y
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": xs[0][:3].copy(), "labels": ys[:3]}, f)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer"]
    names += [b"dog", b"frog", b"horse", b"ship", b"truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names, b"num_vis": 3072}, f, protocol=2)
    return np.concatenate(xs), np.array(ys)


def make_cifar100_dir(folder: Path) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(2)
    for split, n in (("train", 6), ("test", 2)):
        with open(folder / split, "wb") as f:
            pickle.dump(
                {
                    "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                    "fine_labels": list(range(100 - n, 100)) if split == "train" else [0, 99],
                    "coarse_labels": [0] * n,
                },
                f,
                protocol=5,
            )
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"c{i}" for i in range(100)]}, f)


def make_imagefolder(root: Path, classes: dict[str, int], size: int = 12) -> None:
    from PIL import Image

    rng = np.random.default_rng(3)
    for c, n in classes.items():
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            arr = rng.integers(0, 256, (size, size + 2, 3), dtype=np.uint8)
            ext = "png" if i % 2 == 0 else "jpg"
            img = Image.fromarray(arr)
            if i % 3 == 0:
                img = img.convert("L")  # greyscale must come back as RGB
            img.save(root / c / f"{i}.{ext}")


def make_dataset(n_per_class=(5, 3, 4), shape=(1, 4, 4)) -> RealDataset:
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(n_per_class)])
    labels = labels[torch.randperm(len(labels), generator=make_generator(0))]
    images = torch.arange(len(labels), dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, *shape)
    pre = Preprocessing((0.5,) * shape[0], (0.25,) * shape[0])
    return RealDataset(
        images.clone(), labels, [f"k{c}" for c in range(len(n_per_class))], pre, "toy", "train"
    )


# ---------------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_plain_and_gz(tmp_path, compress):
    arr = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    write_idx(tmp_path / "a.idx", arr, compress)
    out = read_idx(tmp_path / "a.idx")
    assert out.dtype == np.uint8 and out.shape == (7, 5, 3)
    np.testing.assert_array_equal(out, arr)
    assert out.flags.writeable


def test_read_idx_multibyte_types(tmp_path):
    arr = np.arange(-3, 9, dtype=np.int32).reshape(3, 4)
    write_idx(tmp_path / "i.idx", arr)
    out = read_idx(tmp_path / "i.idx")
    assert out.dtype == np.int32 and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)
    farr = np.linspace(0, 1, 6, dtype=np.float32)
    write_idx(tmp_path / "f.idx", farr)
    np.testing.assert_array_equal(read_idx(tmp_path / "f.idx"), farr)


def test_read_idx_truncated(tmp_path):
    arr = np.zeros((10, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "full", arr)
    data = (tmp_path / "full").read_bytes()
    (tmp_path / "cut").write_bytes(data[:-100])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "cut")
    # A truncated gzip stream is also reported as truncated.
    (tmp_path / "cut.gz").write_bytes(gzip.compress(data)[:-30])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "cut.gz")
    (tmp_path / "hdr").write_bytes(data[:6])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "hdr")


def test_read_idx_bad_magic_and_trailing(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x12\x34\x08\x01" + b"\x00" * 20)
    with pytest.raises(DataError, match="magic"):
        read_idx(tmp_path / "bad")
    write_idx(tmp_path / "ok", np.zeros(4, dtype=np.uint8))
    (tmp_path / "long").write_bytes((tmp_path / "ok").read_bytes() + b"xx")
    with pytest.raises(DataError, match="corrupt"):
        read_idx(tmp_path / "long")
    with pytest.raises(DataError, match="not found"):
        read_idx(tmp_path / "missing")


# ----------------------------------------------------------------------------- MNIST-like


@pytest.mark.parametrize("gz", [True, False])
def test_read_mnist_like_root(tmp_path, gz):
    arrays = make_mnist_dir(tmp_path / "d", gz=gz)
    raw = read_mnist_like(tmp_path / "d", "fashion-mnist")
    assert raw.train_images.shape == (30, 1, 28, 28) and raw.train_images.dtype == np.uint8
    assert raw.test_images.shape == (10, 1, 28, 28)
    assert raw.train_labels.dtype == np.int64 and raw.test_labels.dtype == np.int64
    np.testing.assert_array_equal(raw.train_images[:, 0], arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(raw.test_labels, arrays["t10k-labels-idx1-ubyte"])
    assert raw.class_names[0] == "T-shirt/top" and raw.class_names[9] == "Ankle boot"


def test_read_mnist_like_search_order(tmp_path, monkeypatch):
    make_mnist_dir(tmp_path / "tv" / "MNIST" / "raw", n_train=20)
    raw = read_mnist_like(tmp_path / "tv", "mnist")  # torchvision layout
    assert len(raw.train_labels) == 20 and raw.class_names == [str(i) for i in range(10)]
    system = tmp_path / "system"
    make_mnist_dir(system / "fashion-mnist", n_train=40)
    monkeypatch.setattr(readers_mod, "SYSTEM_DATA_DIRS", [system])
    # Nothing in the user's root: falls back to the system folder.
    (tmp_path / "empty").mkdir()
    assert len(read_mnist_like(tmp_path / "empty", "fashion-mnist").train_labels) == 40
    assert len(read_mnist_like(None, "fashion-mnist").train_labels) == 40
    # The user's root wins over the system folder.
    make_mnist_dir(tmp_path / "user", n_train=50)
    assert len(read_mnist_like(tmp_path / "user", "fashion-mnist").train_labels) == 50


def test_read_mnist_like_missing_message(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as e:
        read_mnist_like(tmp_path / "empty", "fashion-mnist")
    msg = str(e.value)
    assert "apt-get install dataset-fashion-mnist" in msg and "--data-root" in msg
    assert str(tmp_path / "empty") in msg and "FashionMNIST" in msg
    with pytest.raises(DataError, match="--data-root"):
        load_dataset("mnist", tmp_path / "empty")


def test_read_mnist_like_partial_and_mismatch(tmp_path):
    make_mnist_dir(tmp_path / "d")
    (tmp_path / "d" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="lacks t10k-labels-idx1-ubyte"):
        read_mnist_like(tmp_path / "d", "mnist")
    write_idx(tmp_path / "d" / "t10k-labels-idx1-ubyte", np.zeros(3, dtype=np.uint8))
    with pytest.raises(DataError, match="3 labels"):
        read_mnist_like(tmp_path / "d", "mnist")


def test_load_mnist_like_normalised(tmp_path):
    make_mnist_dir(tmp_path)
    train, test = load_dataset("fashion-mnist", tmp_path)
    assert train.images.shape == (30, 1, 28, 28) and train.images.dtype == torch.float32
    assert train.labels.dtype == torch.int64 and len(test) == 10
    assert train.name == "fashion-mnist" and (train.split, test.split) == ("train", "test")
    raw = read_mnist_like(tmp_path, "fashion-mnist")
    expected = (torch.from_numpy(raw.train_images).float() / 255 - 0.2861) / 0.3530
    torch.testing.assert_close(train.images, expected)
    assert train.preprocessing.describe() == "normalised mean=(0.2861,) std=(0.353,)"
    pixels = train.preprocessing.invert(train.images)
    torch.testing.assert_close(pixels * 255, torch.from_numpy(raw.train_images).float())


# --------------------------------------------------------------------------------- CIFAR


@pytest.mark.parametrize("parent", [False, True])
def test_read_cifar10(tmp_path, parent):
    x, y = make_cifar10_dir(tmp_path / "cifar-10-batches-py")
    raw = read_cifar(tmp_path if parent else tmp_path / "cifar-10-batches-py", "cifar10")
    assert raw.train_images.shape == (20, 3, 32, 32) and raw.train_images.dtype == np.uint8
    np.testing.assert_array_equal(raw.train_images.reshape(20, -1), x)
    # CHW: the first 1024 values of a row are the red plane, row-major.
    assert raw.train_images[0, 0, 1, 0] == x[0, 32] and raw.train_images[0, 1, 0, 0] == x[0, 1024]
    np.testing.assert_array_equal(raw.train_labels, y)
    assert raw.train_labels.dtype == np.int64 and raw.test_images.shape == (3, 3, 32, 32)
    assert raw.class_names[0] == "airplane" and raw.class_names[-1] == "truck"


def test_load_cifar100(tmp_path):
    make_cifar100_dir(tmp_path / "cifar-100-python")
    raw = read_cifar(tmp_path, "cifar100")
    assert len(raw.class_names) == 100 and list(raw.test_labels) == [0, 99]
    assert raw.train_labels.tolist() == list(range(94, 100))
    train, test = load_dataset("cifar100", tmp_path)
    assert train.num_classes == 100 and train.image_shape == (3, 32, 32) and len(test) == 2
    assert train.class_names[5] == "c5" and train.preprocessing.zca is None
    px = torch.from_numpy(raw.test_images).float() / 255
    torch.testing.assert_close(test.preprocessing.invert(test.images), px)


def test_load_with_zca(tmp_path):
    # Small images keep the D x D eigendecomposition cheap (CIFAR's D = 3072 takes seconds).
    make_imagefolder(tmp_path, {"a": 20, "b": 20}, size=6)
    train, test = load_dataset("imagefolder", tmp_path, im_size=6, zca=True)
    assert train.preprocessing.zca is not None and train.preprocessing.zca.dim == 3 * 6 * 6
    assert train.preprocessing.describe().endswith(" + ZCA")
    assert test.preprocessing is train.preprocessing
    raw = read_imagefolder(tmp_path, 6)
    px = torch.from_numpy(raw.test_images).float() / 255
    torch.testing.assert_close(test.preprocessing.invert(test.images), px, atol=1e-4, rtol=0)
    plain, _ = load_dataset("imagefolder", tmp_path, im_size=6)
    assert plain.preprocessing.zca is None
    # Whitening fitted on the normalised train set.
    zca = ZCA.fit(plain.images)
    torch.testing.assert_close(train.images, zca.apply(plain.images))


def test_read_cifar_corrupt_and_missing(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    make_cifar10_dir(folder)
    good = (folder / "data_batch_3").read_bytes()
    (folder / "data_batch_3").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="corrupt or truncated"):
        read_cifar(folder, "cifar10")
    (folder / "data_batch_3").write_bytes(b"garbage, not a pickle")
    with pytest.raises(DataError, match="data_batch_3"):
        read_cifar(folder, "cifar10")
    # A pickle that would run code is refused, not executed.
    (folder / "data_batch_3").write_bytes(pickle.dumps({"x": Path("/")}))
    with pytest.raises(DataError, match="forbidden"):
        read_cifar(folder, "cifar10")
    (folder / "test_batch").unlink()
    with pytest.raises(DataError, match="--data-root") as e:
        read_cifar(tmp_path, "cifar10")
    assert "cifar-10-python.tar.gz" in str(e.value)


# --------------------------------------------------------------------------- imagefolder


def test_imagefolder_train_val(tmp_path):
    make_imagefolder(tmp_path / "train", {"cat": 3, "ant": 2})
    make_imagefolder(tmp_path / "val", {"ant": 1, "cat": 2})
    raw = read_imagefolder(tmp_path, 8)
    assert raw.class_names == ["ant", "cat"]
    assert raw.train_images.shape == (5, 3, 8, 8) and raw.train_images.dtype == np.uint8
    assert list(raw.train_labels) == [0, 0, 1, 1, 1] and list(raw.test_labels) == [0, 1, 1]
    train, test = load_dataset("imagefolder", tmp_path, im_size=8)
    assert train.image_shape == (3, 8, 8) and train.num_classes == 2 and len(test) == 3
    assert train.preprocessing.mean == (0.485, 0.456, 0.406)
    make_imagefolder(tmp_path / "val", {"dog": 1})
    with pytest.raises(DataError, match="dog"):
        read_imagefolder(tmp_path, 8)


def test_imagefolder_flat_split_is_stratified_and_deterministic(tmp_path):
    make_imagefolder(tmp_path, {"b": 10, "a": 20}, size=6)
    r1, r2 = read_imagefolder(tmp_path, 6, seed=0), read_imagefolder(tmp_path, 6, seed=0)
    np.testing.assert_array_equal(r1.test_images, r2.test_images)
    assert np.bincount(r1.test_labels).tolist() == [2, 1]
    assert np.bincount(r1.train_labels).tolist() == [18, 9]
    r3 = read_imagefolder(tmp_path, 6, seed=1)
    assert not np.array_equal(r1.test_images, r3.test_images)


def test_imagefolder_errors(tmp_path):
    with pytest.raises(DataError, match="--data-root"):
        read_imagefolder(None, 8)
    with pytest.raises(DataError, match="not found"):
        read_imagefolder(tmp_path / "nope", 8)
    (tmp_path / "c").mkdir()
    with pytest.raises(DataError, match="no images"):
        read_imagefolder(tmp_path, 8)
    (tmp_path / "c" / "x.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="x.png"):
        read_imagefolder(tmp_path, 8)


# -------------------------------------------------------------------------------- digits


def test_digits():
    train, test = load_dataset("digits")
    assert train.images.shape == (1257, 1, 8, 8) and test.images.shape == (540, 1, 8, 8)
    assert train.num_classes == 10 and train.class_names == [str(i) for i in range(10)]
    assert train.class_counts().sum() == 1257 and train.class_counts().min() >= 120
    px = train.preprocessing.invert(train.images)
    assert px.min() >= 0 and px.max() <= 1
    # The hard-coded constants are the seed-0 training statistics (rounded to 4 digits).
    assert abs(px.mean().item() - 0.3056) < 1e-3 and abs(px.std().item() - 0.3761) < 1e-3
    again, _ = load_dataset("digits")
    assert again.checksum() == train.checksum()
    other, _ = load_dataset("digits", seed=1)
    assert other.checksum() != train.checksum()


# ------------------------------------------------------------------------------ registry


def test_registry_names_and_unknown():
    assert set(DATASETS.names()) == {
        "fashion-mnist", "mnist", "cifar10", "cifar100", "imagefolder", "digits"
    }  # fmt: skip
    info = dataset_info("cifar10")
    assert info.channels == 3 and info.im_size == (32, 32) and info.num_classes == 10
    assert info.std == (0.2023, 0.1994, 0.2010) and not info.zca_default
    assert dataset_info("mnist").mean == (0.1307,)
    with pytest.raises(UnknownNameError, match="fashion-mnist") as e:
        load_dataset("fashionmnist")
    assert "digits" in str(e.value) and "cifar100" in str(e.value)
    with pytest.raises(ConfigError, match="imagefolder"):
        load_dataset("digits", im_size=16)


@pytest.mark.skipif(not FASHION_SYSTEM.is_dir(), reason="dataset-fashion-mnist not installed")
def test_system_fashion_mnist(monkeypatch):
    monkeypatch.setattr(readers_mod, "SYSTEM_DATA_DIRS", [FASHION_SYSTEM.parent])
    train, test = load_dataset("fashion-mnist")
    assert len(train) == 60000 and len(test) == 10000
    assert train.class_counts().tolist() == [6000] * 10
    assert abs(train.images.mean().item()) < 0.01 and abs(train.images.std().item() - 1) < 0.01


# ----------------------------------------------------------------------------------- ZCA


def test_zca_round_trip_and_whitening():
    g = make_generator(0)
    mix = torch.randn(48, 48, generator=g, dtype=torch.float64)
    x = (torch.randn(2000, 48, generator=g, dtype=torch.float64) @ mix + 3).float()
    x = x.view(2000, 3, 4, 4)
    zca = ZCA.fit(x, reg=1e-6)
    assert zca.mean.shape == (48,) and zca.transform.shape == (48, 48)
    assert zca.transform.dtype == torch.float32 and zca.inverse.dtype == torch.float32
    w = zca.apply(x)
    assert w.shape == x.shape
    flat = w.reshape(2000, -1).double()
    cov = torch.cov(flat.T, correction=0)
    assert (cov - torch.eye(48, dtype=torch.float64)).abs().max() < 0.02
    assert flat.mean(0).abs().max() < 1e-3
    back = zca.invert(w)
    assert (back - x).abs().max() < 1e-4 * x.abs().max()
    torch.testing.assert_close(zca.inverse.double() @ zca.transform.double(), torch.eye(48,
        dtype=torch.float64), atol=1e-4, rtol=0)  # fmt: skip


def test_zca_default_reg_round_trip_and_dict():
    x = torch.rand(64, 1, 4, 4, generator=make_generator(1))
    zca = ZCA.fit(x)  # reg 0.1: shrinks, but stays invertible
    torch.testing.assert_close(zca.invert(zca.apply(x)), x, atol=1e-4, rtol=0)
    d = zca.to_dict()
    assert set(d) == {"mean", "transform", "inverse"}
    again = ZCA.from_dict(d)
    assert again == zca and hash(again) == hash(zca)
    torch.testing.assert_close(again.apply(x), zca.apply(x))
    with pytest.raises(ConfigError):
        zca.apply(torch.zeros(2, 1, 3, 3))
    with pytest.raises(ConfigError):
        ZCA.from_dict({"mean": d["mean"]})
    with pytest.raises(ConfigError):
        ZCA.fit(x[:1])


def test_preprocessing_round_trip_and_dict(tmp_path):
    pre = Preprocessing((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
    px = torch.rand(5, 3, 4, 4, generator=make_generator(2))
    x = pre.apply(px)
    torch.testing.assert_close(x[:, 1], (px[:, 1] - 0.4822) / 0.1994)
    torch.testing.assert_close(pre.invert(x), px)
    assert pre.invert(x * 100).min() >= 0 and pre.invert(x * 100).max() <= 1
    # No ZCA: the dict is JSON-friendly.
    assert Preprocessing.from_dict(json.loads(json.dumps(pre.to_dict()))) == pre
    zpre = Preprocessing(pre.mean, pre.std, ZCA.fit(pre.apply(torch.rand(40, 3, 4, 4))))
    torch.testing.assert_close(zpre.invert(zpre.apply(px)), px, atol=1e-4, rtol=0)
    torch.save(zpre.to_dict(), tmp_path / "p.pt")
    loaded = Preprocessing.from_dict(torch.load(tmp_path / "p.pt"))
    assert loaded == zpre and loaded.describe() == zpre.describe()
    with pytest.raises(ConfigError):
        pre.apply(torch.rand(2, 1, 4, 4))
    with pytest.raises(ConfigError):
        Preprocessing((0.5, 0.5), (0.2,))
    with pytest.raises(ConfigError):
        Preprocessing((0.5,), (0.0,))


# --------------------------------------------------------------------------- RealDataset


def test_real_dataset_validation():
    pre = Preprocessing((0.0,), (1.0,))
    ok_x, ok_y = torch.zeros(4, 1, 2, 2), torch.tensor([0, 1, 1, 0])
    RealDataset(ok_x, ok_y, ["a", "b"], pre, "t", "train")
    bad = ok_x.clone()
    bad[2, 0, 1, 1] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        RealDataset(bad, ok_y, ["a", "b"], pre, "t", "train")
    bad[2, 0, 1, 1] = float("inf")
    with pytest.raises(DataError, match="infinite"):
        RealDataset(bad, ok_y, ["a", "b"], pre, "t", "train")
    with pytest.raises(DataError, match="4-D"):
        RealDataset(torch.zeros(4, 2, 2), ok_y, ["a", "b"], pre, "t", "train")
    with pytest.raises(DataError, match="float"):
        RealDataset(ok_x.to(torch.uint8), ok_y, ["a", "b"], pre, "t", "train")
    with pytest.raises(DataError, match="1-D"):
        RealDataset(ok_x, ok_y.view(2, 2), ["a", "b"], pre, "t", "train")
    with pytest.raises(DataError, match="3 labels"):
        RealDataset(ok_x, ok_y[:3], ["a", "b"], pre, "t", "train")
    with pytest.raises(DataError, match=r"\[0, 2\)"):
        RealDataset(ok_x, torch.tensor([0, 1, 2, 0]), ["a", "b"], pre, "t", "train")
    with pytest.raises(DataError, match=r"\[0, 2\)"):
        RealDataset(ok_x, torch.tensor([0, -1, 1, 0]), ["a", "b"], pre, "t", "train")
    with pytest.raises(DataError, match="channels"):
        RealDataset(torch.zeros(4, 3, 2, 2), ok_y, ["a", "b"], pre, "t", "train")


def test_real_dataset_properties_and_indices():
    ds = make_dataset()
    assert len(ds) == 12 and ds.num_classes == 3 and ds.channels == 1
    assert ds.im_size == (4, 4) and ds.image_shape == (1, 4, 4)
    assert ds.class_counts().tolist() == [5, 3, 4] and ds.class_counts().dtype == torch.int64
    for c, idx in enumerate(ds.indices_by_class):
        assert idx.dtype == torch.int64 and (ds.labels[idx] == c).all()
        assert torch.equal(idx, torch.sort(idx).values)
    assert sum(len(i) for i in ds.indices_by_class) == len(ds)


def test_sample_deterministic_and_correct_class():
    ds = make_dataset()
    a = ds.sample(0, 4, make_generator(7))
    b = ds.sample(0, 4, make_generator(7))
    assert a.shape == (4, 1, 4, 4) and torch.equal(a, b)
    ids = a[:, 0, 0, 0].long()  # image value = its index
    assert (ds.labels[ids] == 0).all() and len(set(ids.tolist())) == 4
    assert not torch.equal(ds.sample(0, 5, make_generator(7)), ds.sample(0, 5, make_generator(8)))
    assert ds.sample(1, 0, make_generator(0)).shape == (0, 1, 4, 4)
    with pytest.raises(ConfigError, match="has 3"):
        ds.sample(1, 4, make_generator(0))
    with pytest.raises(ConfigError, match="out of range"):
        ds.sample(3, 1, make_generator(0))


def test_sample_balanced():
    ds = make_dataset()
    x, y = ds.sample_balanced(3, make_generator(3))
    x2, y2 = ds.sample_balanced(3, make_generator(3))
    assert x.shape == (9, 1, 4, 4) and torch.equal(x, x2) and torch.equal(y, y2)
    assert y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] and y.dtype == torch.int64
    assert torch.equal(ds.labels[x[:, 0, 0, 0].long()], y)
    with pytest.raises(ConfigError):
        ds.sample_balanced(4, make_generator(3))


def test_subset_checksum_to():
    ds = make_dataset()
    sub = ds.subset(ds.indices_by_class[2])
    assert len(sub) == 4 and (sub.labels == 2).all() and sub.class_counts().tolist() == [0, 0, 4]
    assert sub.name == ds.name and sub.split == ds.split and sub.preprocessing is ds.preprocessing
    mask = ds.labels == 1
    assert len(ds.subset(mask)) == 3
    c = ds.checksum()
    assert len(c) == 16 and int(c, 16) >= 0 and c == ds.checksum()
    assert sub.checksum() != c and make_dataset().checksum() == c
    moved = ds.to("cpu")
    assert moved.checksum() == c and torch.equal(moved.images, ds.images)
    assert moved.indices_by_class[1].device.type == "cpu"
