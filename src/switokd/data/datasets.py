"""Dataset registry: each entry reads train and test splits from disk into memory."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

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
    classes: Sequence[str] | None = None  # class names, index = label (None: "0", "1", ...)

    def __post_init__(self) -> None:
        for split, x, y in (("train", self.train_x, self.train_y), ("test", self.test_x, self.test_y)):
            if not isinstance(x, Tensor) or x.dim() != 4:
                raise DatasetError(f"DataSplits {self.name!r}: {split}_x must be a uint8 N x C x H x W tensor, got "
                                   f"{type(x).__name__}{' of shape ' + str(tuple(x.shape)) if isinstance(x, Tensor) else ''}")
            if x.dtype != torch.uint8:
                hint = (" (for float images in [0, 1] use switokd.data.DatasetSplits, or (x * 255).round()"
                        ".to(torch.uint8))" if x.is_floating_point() else "")
                raise DatasetError(f"DataSplits {self.name!r}: {split}_x must be uint8 (0-255), got {x.dtype}{hint}")
            if len(y) != len(x):
                raise DatasetError(f"DataSplits {self.name!r}: {len(x)} {split} images but {len(y)} labels")
            if len(y) and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
                bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
                raise DatasetError(f"DataSplits {self.name!r}: {split} label {bad} is outside the {self.num_classes} "
                                   "classes")

    @property
    def class_names(self) -> list[str]:
        return list(self.classes) if self.classes is not None else [str(i) for i in range(self.num_classes)]

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
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


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
    return DataSplits("fashion_mnist", tx, ty, vx, vy, 10, (0.2860,), (0.3530,), 2, FASHION_MNIST_CLASSES)


@DATASETS.register("mnist")
def mnist(root: str | None = None, image_size: int = 0) -> DataSplits:
    """MNIST, 10 classes, 1x28x28, from IDX files in data.dir."""
    d = _require_dir(root, "mnist", None, "Put the four MNIST IDX files in a directory and set data.dir=DIR.")
    tx, ty = readers.read_mnist_dir(d, "train")
    vx, vy = readers.read_mnist_dir(d, "test")
    return DataSplits("mnist", tx, ty, vx, vy, 10, (0.1307,), (0.3081,), 2, tuple(map(str, range(10))))


def _pairs(x: Tensor, y: Tensor, classes: int, seed: int) -> tuple[Tensor, Tensor]:
    """Example i paired with example perm(i): the two images as two channels, label classes * y_i + y_perm(i)."""
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    return torch.cat([x, x[perm]], dim=1), y * classes + y[perm]


@DATASETS.register("fashion_mnist_pairs")
def fashion_mnist_pairs(root: str | None = None, image_size: int = 0) -> DataSplits:
    """Fashion-MNIST pairs: 100 classes (10 * first + second), 2x28x28, built from the real Fashion-MNIST.

    Each image is paired with another of its split (a fixed permutation, the same for every run), the two
    stacked as two channels so that the order stays visible to a network that ends in global pooling.
    A 100-class task from real images: with many classes a lagging student's mistakes overlap less
    with its teacher's, which is when SwitOKD pauses the teacher (docs/method.md).
    """
    base = fashion_mnist(root, image_size)
    tx, ty = _pairs(base.train_x, base.train_y, 10, seed=1)
    vx, vy = _pairs(base.test_x, base.test_y, 10, seed=2)
    names = [f"{a} | {b}" for a in FASHION_MNIST_CLASSES for b in FASHION_MNIST_CLASSES]
    return DataSplits("fashion_mnist_pairs", tx, ty, vx, vy, 100, base.mean * 2, base.std * 2, base.crop_padding, names)


def _cifar(name: str, num_classes: int, root: str | None, mean, std, folder: str) -> DataSplits:
    d = _require_dir(
        root, name, None,
        f"Download the 'python version' archive of {name.upper()} yourself, extract it, and set "
        f"data.dir to the directory holding {folder}/ (or to {folder}/ itself).",
    )
    tx, ty = readers.read_cifar_dir(d, "train", num_classes)
    vx, vy = readers.read_cifar_dir(d, "test", num_classes)
    names = readers.read_cifar_names(d, num_classes) or (CIFAR10_CLASSES if num_classes == 10 else None)
    return DataSplits(name, tx, ty, vx, vy, num_classes, mean, std, 4, names)


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
    return DataSplits("tiny_imagenet", tx, ty, vx, vy, len(wnids), (0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262), 8,
                      readers.read_wnid_words(d, wnids))


@DATASETS.register("image_folder")
def image_folder(root: str | None = None, image_size: int = 0, channels: int = 0) -> DataSplits:
    """Any image folder: DIR/train/<class>/*.png|jpg and DIR/val/<class>/... (or DIR/test/...).

    Grayscale or color is decided over the whole data set: color if any file is color
    (``data.channels=1|3`` forces it); ``data.image_size=N`` resizes every image to N x N.
    """
    d = _require_dir(root, "image_folder", None, "Set data.dir to a directory with train/ and val/ (or test/) class folders.")
    test_dir = _test_dir(d, "image_folder")
    train_paths, train_labels, classes = readers.list_image_folder(d / "train", None)
    test_paths, test_labels, _ = readers.list_image_folder(test_dir, classes)
    mode = {1: "L", 3: "RGB"}.get(channels) or readers.common_mode(train_paths + test_paths)
    size = image_size or None
    tx, vx = readers.stack_images(train_paths, mode, size), readers.stack_images(test_paths, mode, size)
    if vx.shape[1:] != tx.shape[1:]:
        raise DatasetError(f"image_folder: {test_dir} images are {tuple(vx.shape[2:])} pixels, train images "
                           f"{tuple(tx.shape[2:])}; set data.image_size=N to resize every image to N x N")
    mean, std = channel_stats(tx)
    pad = max(1, tx.shape[-1] // 8)
    return DataSplits("image_folder", tx, torch.tensor(train_labels, dtype=torch.int64), vx,
                      torch.tensor(test_labels, dtype=torch.int64), len(classes), mean, std, pad, classes)


def _test_dir(root: Path, name: str) -> Path:
    """The test split of a class-folder layout (val/ or test/ beside train/), or an error naming data.dir."""
    test_dir = next((root / s for s in ("val", "test") if (root / s).is_dir()), None)
    if not (root / "train").is_dir() or test_dir is None:
        raise DatasetError(f"{name}: {root} must contain train/ and val/ (or test/), one sub-folder per class; "
                           "set data.dir to that directory")
    return test_dir


def convert_channels(x: Tensor, channels: int) -> Tensor:
    """uint8 N x C x H x W to ``channels`` (1 or 3): gray repeated to RGB, or RGB to luma (ITU-R 601, as PIL's 'L')."""
    if x.shape[1] == channels:
        return x
    if channels == 3 and x.shape[1] == 1:
        return x.expand(-1, 3, -1, -1).contiguous()
    if channels == 1 and x.shape[1] == 3:
        w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (x.float() * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    raise DatasetError(f"cannot convert {x.shape[1]}-channel images to data.channels={channels}")


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _subset(files: list[Path], labels: list[int], n: int) -> tuple[list[Path], list[int]]:
    """``n`` examples spread evenly over a class-sorted file list (the first ``n`` would be a few classes)."""
    if not n or n >= len(files):
        return files, labels
    idx = [i * len(files) // n for i in range(n)]
    return [files[i] for i in idx], [labels[i] for i in idx]


def stream_folder(root: Path, name: str, image_size: int, channels: int, limit_train: int, limit_test: int,
                  default_size: int | None = None, mean=None, std=None, classes: list[str] | None = None):
    """An image folder read from disk while training (``data.in_memory=false``, and always for ImageNet)."""
    from .stream import ImageFiles, StreamSplits

    test_dir = _test_dir(root, name)
    train, train_y, wnids = readers.list_image_folder(root / "train", None)
    test, test_y, _ = readers.list_image_folder(test_dir, wnids)
    train, train_y = _subset(train, train_y, limit_train)
    test, test_y = _subset(test, test_y, limit_test)
    size = image_size or default_size
    if not size:
        size = min(readers.image_header(train[0])[1])
    in_chans = channels or 3  # streamed sets are decoded as RGB unless data.channels=1
    pad = max(1, size // 8) if size <= 64 else 0
    if mean is None:  # per-channel statistics from an evenly spaced sample of the training files
        sample = ImageFiles(_subset(train, train_y, 256)[0], torch.zeros(256, dtype=torch.int64), size,
                            "L" if in_chans == 1 else "RGB", train=False, seed=0, padding=0)
        mean, std = channel_stats(torch.stack([sample[(0, i)][0] for i in range(len(sample))]))
    return StreamSplits(name, train, torch.tensor(train_y, dtype=torch.int64), test, torch.tensor(test_y, dtype=torch.int64),
                        len(wnids), tuple(mean), tuple(std), pad, classes or wnids, in_chans, size)


def imagenet_names(root: Path, wnids: list[str]) -> list[str]:
    """Class names from LOC_synset_mapping.txt (``n01440764 tench, Tinca tinca``) if present, else the wnids."""
    names: dict[str, str] = {}
    try:
        for line in (root / "LOC_synset_mapping.txt").read_text().splitlines():
            wnid, _, text = line.partition(" ")
            names[wnid] = text.split(",")[0].strip()
    except OSError:
        pass
    return [names.get(w) or w for w in wnids]


@DATASETS.register("imagenet")
def imagenet(root: str | None = None, image_size: int = 0, channels: int = 0, limit_train: int = 0,
             limit_test: int = 0):
    """ImageNet (ILSVRC-2012) in the usual folder layout, DIR/train/<wnid>/*.JPEG and DIR/val/<wnid>/*.JPEG,
    streamed from disk (224 px unless data.image_size is set)."""
    d = _require_dir(root, "imagenet", None,
                     "Put ImageNet in the usual layout (train/<wnid>/*.JPEG, val/<wnid>/*.JPEG, the val images sorted "
                     "into class folders) and set data.dir to it.")
    wnids = sorted(p.name for p in (d / "train").iterdir() if p.is_dir()) if (d / "train").is_dir() else []
    return stream_folder(d, "imagenet", image_size, channels, limit_train, limit_test, default_size=224,
                         mean=IMAGENET_MEAN, std=IMAGENET_STD, classes=imagenet_names(d, wnids) if wnids else None)


STREAMING = ("image_folder", "imagenet")  # the data sets that can be read from disk while training


def load_dataset(name: str, root: str | None = None, image_size: int = 0, limit_train: int = 0, limit_test: int = 0,
                 channels: int = 0, in_memory: bool = True):
    """Read a registered data set; ``limit_*`` keep the first N examples (0 keeps all); ``channels`` (1 or 3,
    0 keeps the data set's own) converts gray and color. ``in_memory=False`` (image folders) and ImageNet
    give a ``StreamSplits`` of file paths, decoded while training."""
    if channels not in (0, 1, 3):
        raise DatasetError(f"data.channels must be 1, 3 or 0 (the data set's own), got {channels}")
    try:
        factory = DATASETS.get(name)
    except KeyError as e:
        raise DatasetError(f"config key 'data.name': {e.args[0]}") from None
    if not in_memory and name not in STREAMING:
        raise DatasetError(f"data.in_memory=false streams {', '.join(STREAMING)} only; {name} is read into memory")
    try:
        if name == "imagenet" or (name == "image_folder" and not in_memory):
            d = _require_dir(root, name, None, "Set data.dir to a directory with train/ and val/ class folders.")
            if name == "imagenet":
                return imagenet(root, image_size, channels, limit_train, limit_test)
            return stream_folder(d, name, image_size, channels, limit_train, limit_test)
        kwargs = {"channels": channels} if name == "image_folder" else {}
        splits = factory(root=root, image_size=image_size, **kwargs)
    except DatasetError as e:
        msg = str(e)
        if "data." not in msg:  # every data error names the config key that fixes it
            msg += f" (data.name={name}, data.dir={root or 'default'}: point data.dir at the data set's files)"
        raise DatasetError(msg) from None
    if len(splits.train_x) == 0 or len(splits.test_x) == 0:
        raise DatasetError(f"{name}: empty train or test split in data.dir={root}")
    if limit_train:
        splits.train_x, splits.train_y = splits.train_x[:limit_train], splits.train_y[:limit_train]
    if limit_test:
        splits.test_x, splits.test_y = splits.test_x[:limit_test], splits.test_y[:limit_test]
    if channels and splits.in_chans != channels:
        splits.train_x, splits.test_x = convert_channels(splits.train_x, channels), convert_channels(splits.test_x, channels)
        splits.mean, splits.std = channel_stats(splits.train_x)
    return splits


def make_loaders(data, *, batch_size: int, eval_batch_size: int, crop_padding: int, hflip: bool, drop_last: bool,
                 workers: int, stream=None, augment_seed: int | None = None, **common):
    """The train and test loaders for in-memory ``DataSplits`` or streamed ``StreamSplits``; ``stream`` (a
    ``DriftStream``) makes up each training epoch."""
    from .loader import TensorLoader
    from .stream import StreamingLoader

    test = eval_loader(data, data.test_x if not getattr(data, "streaming", False) else data.test_files, data.test_y,
                       eval_batch_size, workers, **common)
    if getattr(data, "streaming", False):
        return (StreamingLoader(data.train_files, data.train_y, batch_size, train=True, crop_padding=crop_padding,
                                drop_last=drop_last, image_size=data.image_size, in_chans=data.in_chans,
                                workers=workers, stream=stream, augment_seed=augment_seed, **common), test)
    return (TensorLoader(data.train_x, data.train_y, batch_size, train=True, crop_padding=crop_padding, hflip=hflip,
                         drop_last=drop_last, stream=stream, augment_seed=augment_seed, **common), test)


def eval_loader(data, images, labels, batch_size: int, workers: int, **common):
    """A loader without augmentation or shuffling over ``images`` (a uint8 tensor, or file paths of a streamed
    set) with ``labels``, preprocessed as ``data``'s test split."""
    from .loader import TensorLoader
    from .stream import StreamingLoader

    if getattr(data, "streaming", False):
        return StreamingLoader(images, labels, batch_size, train=False, image_size=data.image_size,
                               in_chans=data.in_chans, workers=workers, **common)
    return TensorLoader(images, labels, batch_size, train=False, **common)
