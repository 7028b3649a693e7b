"""Real datasets: readers for the on-disk formats, preprocessing (normalisation, ZCA), registry."""

from datadistill.data.base import ZCA, Preprocessing, RealDataset
from datadistill.data.readers import (
    RawData,
    read_cifar,
    read_digits,
    read_idx,
    read_imagefolder,
    read_mnist_like,
)
from datadistill.data.registry import DATASETS, DatasetInfo, dataset_info, load_dataset

__all__ = [
    "ZCA",
    "Preprocessing",
    "RealDataset",
    "RawData",
    "read_idx",
    "read_mnist_like",
    "read_cifar",
    "read_imagefolder",
    "read_digits",
    "DATASETS",
    "DatasetInfo",
    "dataset_info",
    "load_dataset",
]
