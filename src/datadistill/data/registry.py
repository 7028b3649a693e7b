"""The dataset registry and :func:`load_dataset`, which gives (train, test) in model-input space."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from datadistill.data.base import ZCA, Preprocessing, RealDataset
from datadistill.data.readers import (
    RawData,
    read_cifar,
    read_digits,
    read_imagefolder,
    read_mnist_like,
)
from datadistill.errors import ConfigError, DataError
from datadistill.registry import Registry

__all__ = ["DatasetInfo", "DATASETS", "load_dataset", "dataset_info"]

# reader(root, im_size, seed) -> RawData
Reader = Callable[[str | os.PathLike | None, int, int], RawData]


@dataclass(frozen=True)
class DatasetInfo:
    """What is known about a dataset before reading it.

    ``im_size`` is (H, W) (imagefolder: the default size, 64 x 64); ``num_classes`` is 0 when the
    files decide it (imagefolder); ``mean`` / ``std`` are per-channel normalisation constants on
    pixels in ``[0, 1]``; ``zca_default`` is whether :func:`load_dataset` whitens by default;
    ``reader(root, im_size, seed) -> RawData`` reads the files.
    """

    name: str
    channels: int
    im_size: tuple[int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    zca_default: bool
    description: str
    reader: Reader | None = field(default=None, repr=False, compare=False)


DATASETS: Registry[DatasetInfo] = Registry("dataset")


def _register(info: DatasetInfo) -> None:
    DATASETS.add(info.name, info, info.description)


# Normalisation constants: MNIST, Fashion-MNIST and CIFAR-10 from the original DC code
# (REFERENCE.md); CIFAR-100 the usual torchvision-recipe values; imagefolder the ImageNet ones.
_register(DatasetInfo(
    "fashion-mnist", 1, (28, 28), 10, (0.2861,), (0.3530,), False,
    "Fashion-MNIST: 70,000 28x28 greyscale clothing images, 10 classes (IDX files)",
    lambda root, im_size, seed: read_mnist_like(root, "fashion-mnist"),
))  # fmt: skip
_register(DatasetInfo(
    "mnist", 1, (28, 28), 10, (0.1307,), (0.3081,), False,
    "MNIST: 70,000 28x28 greyscale handwritten digits, 10 classes (IDX files)",
    lambda root, im_size, seed: read_mnist_like(root, "mnist"),
))  # fmt: skip
_register(DatasetInfo(
    "cifar10", 3, (32, 32), 10, (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010), False,
    "CIFAR-10: 60,000 32x32 colour images, 10 classes (python pickle batches)",
    lambda root, im_size, seed: read_cifar(root, "cifar10"),
))  # fmt: skip
_register(DatasetInfo(
    "cifar100", 3, (32, 32), 100, (0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762), False,
    "CIFAR-100: 60,000 32x32 colour images, 100 fine classes (python pickle batches)",
    lambda root, im_size, seed: read_cifar(root, "cifar100"),
))  # fmt: skip
_register(DatasetInfo(
    "imagefolder", 3, (64, 64), 0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), False,
    "a folder of class sub-folders of .png/.jpg images, resized to --im-size (default 64)",
    lambda root, im_size, seed: read_imagefolder(root, im_size, seed),
))  # fmt: skip
# Digits: mean / std of the training pixels (values / 16) of the seed-0 split, computed once
# with numpy (0.30555, 0.37612); kept fixed for every seed so artifacts stay comparable.
_register(DatasetInfo(
    "digits", 1, (8, 8), 10, (0.3056,), (0.3761,), False,
    "scikit-learn digits: 1,797 8x8 greyscale digits, 10 classes (bundled, no download)",
    lambda root, im_size, seed: read_digits(seed),
))  # fmt: skip


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``name``; raises UnknownNameError listing valid names."""
    return DATASETS.get(name)


def _to_pixels(x: np.ndarray) -> torch.Tensor:
    """uint8 0..255 or float 0..1 numpy images -> float32 tensor in [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(x))
    return t.float().div_(255.0) if t.dtype == torch.uint8 else t.float()


def load_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    zca: bool | None = None,
    im_size: int | None = None,
    seed: int = 0,
) -> tuple[RealDataset, RealDataset]:
    """Read a registered dataset and return ``(train, test)`` :class:`RealDataset` s.

    Images are ``(N, C, H, W)`` float32 in model-input space: pixels in ``[0, 1]`` normalised
    with the dataset's per-channel mean / std, then ZCA-whitened when ``zca`` is true (``None``
    = the dataset's default, False everywhere; the ZCA (reg 0.1) is fitted on the normalised
    train set and applied to both splits). ``root`` is the user's data folder (``--data-root``);
    ``im_size`` applies to imagefolder only (default 64); ``seed`` fixes the train/test split of
    digits and of image folders without a test split.

    Raises UnknownNameError (unknown name), ConfigError (``im_size`` for a fixed-size dataset),
    DataError (missing / corrupt files, unexpected class count).
    """
    info = DATASETS.get(name)
    if info.reader is None:
        raise ConfigError(f"dataset {info.name!r} has no reader")
    if im_size is not None and info.name != "imagefolder" and int(im_size) != info.im_size[0]:
        raise ConfigError(
            f"--im-size applies to imagefolder only; {info.name} images are "
            f"{info.im_size[0]}x{info.im_size[1]}"
        )
    size = int(im_size) if im_size is not None else info.im_size[0]
    raw = info.reader(root, size, seed)
    if info.num_classes and len(raw.class_names) != info.num_classes:
        raise DataError(
            f"{info.name} at {raw.source}: expected {info.num_classes} classes, found "
            f"{len(raw.class_names)}"
        )
    pre = Preprocessing(info.mean, info.std)
    train_x = pre.apply(_to_pixels(raw.train_images))
    test_x = pre.apply(_to_pixels(raw.test_images))
    if zca if zca is not None else info.zca_default:
        whitening = ZCA.fit(train_x)
        pre = Preprocessing(info.mean, info.std, whitening)
        train_x, test_x = whitening.apply(train_x), whitening.apply(test_x)
    train = RealDataset(
        train_x, torch.from_numpy(raw.train_labels), raw.class_names, pre, info.name, "train"
    )
    test = RealDataset(
        test_x, torch.from_numpy(raw.test_labels), raw.class_names, pre, info.name, "test"
    )
    return train, test
