"""Any map-style torch ``Dataset`` as a run's data: ``DatasetSplits(train, test, name=...)``.

The datasets are read item by item while training, in ``data.workers`` processes, like the streamed image
folders (``stream.py``): the order of each epoch is drawn from (seed, epoch), every global batch is split
between the ranks, and an interrupted epoch continues at its batch. The dataset's own transforms are its
augmentation; each item is read under random generators seeded from (seed, epoch, index), so a random
transform draws the same crop on a resumed run (bit-exact resume) and does not disturb training's RNG.
Labels are read once up front (a dataset's ``targets`` if it has them), so the run conditions (noise, few
labels, drift) apply as to the built-in data sets.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from .readers import DatasetError
from .stream import StreamSplits

STATS_SAMPLE = 1000  # items read to compute mean and std when they are not given


@dataclass(frozen=True)
class Item:
    """One example of a user's dataset: what a streamed split holds in place of a file path."""

    dataset: Any
    index: int
    name: str

    def load(self, seed: int | None = None) -> Tensor:
        """The image as a C x H x W tensor scaled to 0-255 (uint8, or float for float images), read under
        generators seeded from ``seed`` (None: as they are)."""
        if seed is None:
            return to_image(self.dataset[self.index][0], self.name, self.index)
        state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            random.seed(seed)
            np.random.seed(seed % 2**32)
            torch.manual_seed(seed)
            try:
                image = self.dataset[self.index][0]
            finally:
                random.setstate(state[0])
                np.random.set_state(state[1])
        return to_image(image, self.name, self.index)

    def __str__(self) -> str:  # what an error names
        return f"{self.name}[{self.index}]"


def to_image(image: Any, name: str, index: int) -> Tensor:
    """A dataset's image (a C x H x W tensor, uint8 or float in [0, 1], or a PIL image) as C x H x W on 0-255."""
    if isinstance(image, Tensor):
        if image.dim() == 2:
            image = image[None]
        if image.dim() != 3:
            raise DatasetError(f"{name}[{index}]: the image is a tensor of shape {tuple(image.shape)}; expected "
                               "C x H x W (or H x W)")
        if image.dtype == torch.uint8:
            return image
        if not image.is_floating_point():
            raise DatasetError(f"{name}[{index}]: the image tensor is {image.dtype}; expected uint8 (0-255) or "
                               "float in [0, 1]")
        if not bool(torch.isfinite(image).all()):
            bad = (~torch.isfinite(image)).nonzero()[0].tolist()
            raise DatasetError(f"{name}[{index}]: the image has a non-finite value ({image[tuple(bad)].item()} at "
                               f"{tuple(bad)}); expected finite values in [0, 1]")
        lo, hi = float(image.min()), float(image.max())
        if lo < 0.0 or hi > 1.0:
            raise DatasetError(f"{name}[{index}]: a float image must be in [0, 1], got values in [{lo:.3g}, {hi:.3g}] "
                               "(already normalised? give the dataset unnormalised images, and mean/std to "
                               "DatasetSplits)")
        return image.float() * 255.0
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        Image = None
    if Image is not None and isinstance(image, Image.Image):
        arr = np.array(image.convert("L" if image.mode in ("L", "1", "I", "F") else "RGB"), dtype=np.uint8)
        arr = arr[..., None] if arr.ndim == 2 else arr
        return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).contiguous()
    raise DatasetError(f"{name}[{index}]: the image is a {type(image).__name__}; expected a C x H x W tensor "
                       "(uint8, or float in [0, 1]) or a PIL image")


def _label(value: Any, name: str, index: int) -> int:
    """One label as a class index; anything but an integer (a string, a float like 2.5, a bool) is a
    ``DatasetError`` naming the dataset and index."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise DatasetError(f"{name}[{index}]: the label is a tensor of shape {tuple(value.shape)}; expected a class "
                               "index (an integer)")
        value = value.item()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not value.is_integer()):
        raise DatasetError(f"{name}[{index}]: the label is {value!r} ({type(value).__name__}); expected a class index "
                           "(an integer from 0); map class names to indices in the dataset, or give class_names")
    return int(value)


def _labels(dataset: Any, name: str) -> Tensor:
    if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
        raise DatasetError(f"{name}: expected a map-style torch Dataset (with __getitem__ and __len__) yielding "
                           f"(image, label), got {type(dataset).__name__}")
    n = len(dataset)
    if n == 0:
        raise DatasetError(f"{name}: the dataset is empty")
    targets = getattr(dataset, "targets", None)
    if targets is not None and len(targets) == n:
        values = list(targets) if not isinstance(targets, Tensor) else targets.tolist()
        y = torch.tensor([_label(v, f"{name}.targets", i) for i, v in enumerate(values)])
    else:
        labels = []
        for i in range(n):
            item = dataset[i]
            if not isinstance(item, (tuple, list)) or len(item) < 2:
                raise DatasetError(f"{name}[{i}]: expected an (image, label) pair, got {type(item).__name__}")
            labels.append(_label(item[1], name, i))
        y = torch.tensor(labels)
    if y.dim() != 1 or y.is_floating_point():
        raise DatasetError(f"{name}: labels must be class indices (integers), got {y.dtype} of shape {tuple(y.shape)}")
    return y.long()


def DatasetSplits(train: Any, test: Any, *, name: str, num_classes: int | None = None,
                  class_names: Sequence[str] | None = None, mean: Sequence[float] | None = None,
                  std: Sequence[float] | None = None, crop_padding: int = 0) -> StreamSplits:
    """Wrap two map-style ``Dataset``s that yield ``(image, label)`` as a run's data.

    Args:
        train, test: the datasets; an image is a C x H x W tensor (uint8, or float in [0, 1]) or a PIL image,
            a label a class index. The dataset's transforms are its augmentation.
        name: the data's name in the run header, report.json and the exported model's sidecar.
        num_classes: the class count (default: the largest label + 1, or ``len(class_names)``).
        class_names: a name per class (default "0", "1", ...).
        mean, std: per-channel normalisation on the [0, 1] scale (default: computed from up to 1,000
            training images); saved with the run for ``predict`` and ``export``.

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> from switokd.data import DatasetSplits
        >>> imgs = torch.rand(20, 1, 8, 8)
        >>> data = DatasetSplits(TensorDataset(imgs, torch.arange(20) % 4), TensorDataset(imgs, torch.arange(20) % 4),
        ...                      name="toy")
        >>> data.num_classes, data.in_chans, data.image_size
        (4, 1, 8)
    """
    train_y, test_y = _labels(train, f"{name} (train)"), _labels(test, f"{name} (test)")
    if num_classes is None:
        num_classes = len(class_names) if class_names is not None else int(max(train_y.max(), test_y.max())) + 1
    for split, y in (("train", train_y), ("test", test_y)):
        bad = (y < 0) | (y >= num_classes)
        if bool(bad.any()):
            raise DatasetError(f"{name} ({split}): label {int(y[bad][0])} is outside the {num_classes} classes")
    if class_names is not None and len(class_names) != num_classes:
        raise DatasetError(f"{name}: {len(class_names)} class names for {num_classes} classes")
    first = Item(train, 0, f"{name} (train)").load(seed=0)
    c, h, w = first.shape
    if h != w:
        raise DatasetError(f"{name} (train)[0]: the images are {h} x {w}; switokd's models take square images "
                           "(resize or crop them in the dataset's transform)")
    if mean is None or std is None:
        step = max(1, len(train_y) // STATS_SAMPLE)
        # Seeded reads: a random transform draws the same sample every time, so the statistics (and a resumed
        # run's normalisation) are the same to the last bit.
        images = []
        for i in list(range(0, len(train_y), step))[:STATS_SAMPLE]:
            image = Item(train, i, f"{name} (train)").load(seed=i)
            if image.shape != first.shape:  # else torch's "stack expects each tensor to be equal size", unnamed
                raise DatasetError(f"{name} (train)[{i}]: the image is {' x '.join(map(str, image.shape))} (C x H x W), "
                                   f"but {name} (train)[0] is {' x '.join(map(str, first.shape))}; every image must "
                                   "have the same size (resize or crop them in the dataset's transform)")
            images.append(image.float() / 255.0)
        sample = torch.stack(images)
        mean = sample.mean(dim=(0, 2, 3)).tolist() if mean is None else mean
        std = sample.std(dim=(0, 2, 3)).clamp_min(1e-6).tolist() if std is None else std
    if len(mean) != c or len(std) != c:
        raise DatasetError(f"{name}: mean and std need {c} values (the images' channels), got {len(mean)} and {len(std)}")
    return StreamSplits(name, [Item(train, i, f"{name} (train)") for i in range(len(train_y))], train_y,
                        [Item(test, i, f"{name} (test)") for i in range(len(test_y))], test_y, num_classes,
                        tuple(float(v) for v in mean), tuple(float(v) for v in std), crop_padding,
                        list(class_names) if class_names is not None else None, in_chans=c, image_size=h,
                        user_dataset=True)
