"""Dataset registry: each entry reads train and test splits from disk into memory."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..registry import Registry
from . import readers
from .readers import DatasetError

DATASETS: Registry = Registry("dataset")


@dataclass
class DataSplits:
    """A data set decoded once into memory: uint8 N x C x H x W images, int64 labels."""

    name: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int  # the usual random-crop padding for this data set

    @property
    def in_chans(self) -> int:
        return self.train_x.shape[1]

    @property
    def image_size(self) -> int:
        return self.train_x.shape[-1]


def _require_dir(path: str | None, name: str, default: str | None, hint: str) -> Path:
    root = Path(path or default or "").expanduser()
    if not str(root) or not root.is_dir():
        where = f"{root}" if str(root) else "(no data.dir given)"
        raise DatasetError(f"{name}: data directory {where} not found. {hint}")
    return root


def channel_stats(x: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images, scaled to [0, 1]."""
    xf = x[:50000].float().div_(255)
    return tuple(xf.mean(dim=(0, 2, 3)).tolist()), tuple(xf.std(dim=(0, 2, 3)).tolist())


FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


@DATASETS.register("fashion_mnist")
def fashion_mnist(root: str | None = None, image_size: int = 0) -> DataSplits:
    """Fashion-MNIST, 10 classes, 1x28x28, from IDX files (gzipped or not)."""
    d = _require_dir(
        root, "fashion_mnist", FASHION_MNIST_DIR,
        "Install Debian's package with `apt-get install dataset-fashion-mnist` (it fills "
        f"{FASHION_MNIST_DIR}), or put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz in a directory and set data.dir=DIR.",
    )
    tx, ty = readers.read_mnist_dir(d, "train")
    vx, vy = readers.read_mnist_dir(d, "test")
    return DataSplits("fashion_mnist", tx, ty, vx, vy, 10, (0.2860,), (0.3530,), 2)


@DATASETS.register("mnist")
def mnist(root: str | None = None, image_size: int = 0) -> DataSplits:
    """MNIST, 10 classes, 1x28x28, from IDX files in data.dir."""
    d = _require_dir(root, "mnist", None, "Put the four MNIST IDX files in a directory and set data.dir=DIR.")
    tx, ty = readers.read_mnist_dir(d, "train")
    vx, vy = readers.read_mnist_dir(d, "test")
    return DataSplits("mnist", tx, ty, vx, vy, 10, (0.1307,), (0.3081,), 2)


def _cifar(name: str, num_classes: int, root: str | None, mean, std, folder: str) -> DataSplits:
    d = _require_dir(
        root, name, None,
        f"Download the 'python version' archive of {name.upper()} yourself, extract it, and set "
        f"data.dir to the directory holding {folder}/ (or to {folder}/ itself).",
    )
    tx, ty = readers.read_cifar_dir(d, "train", num_classes)
    vx, vy = readers.read_cifar_dir(d, "test", num_classes)
    return DataSplits(name, tx, ty, vx, vy, num_classes, mean, std, 4)


@DATASETS.register("cifar10")
def cifar10(root: str | None = None, image_size: int = 0) -> DataSplits:
    """CIFAR-10, 10 classes, 3x32x32, from the python pickle batches (cifar-10-batches-py)."""
    return _cifar("cifar10", 10, root, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), "cifar-10-batches-py")


@DATASETS.register("cifar100")
def cifar100(root: str | None = None, image_size: int = 0) -> DataSplits:
    """CIFAR-100, 100 fine classes, 3x32x32, from the python pickles (cifar-100-python)."""
    return _cifar("cifar100", 100, root, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), "cifar-100-python")


@DATASETS.register("tiny_imagenet")
def tiny_imagenet(root: str | None = None, image_size: int = 0) -> DataSplits:
    """Tiny-ImageNet-200, 3x64x64, from its directory layout; the labelled val split is the test set."""
    d = _require_dir(
        root, "tiny_imagenet", None,
        "Extract tiny-imagenet-200.zip yourself and set data.dir to the tiny-imagenet-200 directory.",
    )
    tx, ty, wnids = readers.read_tiny_imagenet(d, "train")
    vx, vy, _ = readers.read_tiny_imagenet(d, "val")
    return DataSplits("tiny_imagenet", tx, ty, vx, vy, len(wnids), (0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262), 8)


@DATASETS.register("image_folder")
def image_folder(root: str | None = None, image_size: int = 0) -> DataSplits:
    """Any image folder: DIR/train/<class>/*.png|jpg and DIR/val/<class>/... (or DIR/test/...)."""
    d = _require_dir(root, "image_folder", None, "Set data.dir to a directory with train/ and val/ (or test/) class folders.")
    test_dir = next((d / s for s in ("val", "test") if (d / s).is_dir()), None)
    if not (d / "train").is_dir() or test_dir is None:
        raise DatasetError(f"image_folder: {d} must contain train/ and val/ (or test/), one sub-folder per class")
    size = image_size or None
    tx, ty, classes = readers.read_image_folder(d / "train", None, size)
    vx, vy, _ = readers.read_image_folder(test_dir, classes, size)
    if vx.shape[1:] != tx.shape[1:]:
        raise DatasetError(f"image_folder: {test_dir} images are {tuple(vx.shape[1:])}, train images {tuple(tx.shape[1:])}; set data.image_size")
    mean, std = channel_stats(tx)
    pad = max(1, tx.shape[-1] // 8)
    return DataSplits("image_folder", tx, ty, vx, vy, len(classes), mean, std, pad)


def load_dataset(name: str, root: str | None = None, image_size: int = 0, limit_train: int = 0, limit_test: int = 0) -> DataSplits:
    """Read a registered data set; ``limit_*`` keep the first N examples (0 keeps all)."""
    splits = DATASETS.get(name)(root=root, image_size=image_size)
    if len(splits.train_x) == 0 or len(splits.test_x) == 0:
        raise DatasetError(f"{name}: empty train or test split")
    if limit_train:
        splits.train_x, splits.train_y = splits.train_x[:limit_train], splits.train_y[:limit_train]
    if limit_test:
        splits.test_x, splits.test_y = splits.test_x[:limit_test], splits.test_y[:limit_test]
    return splits
