"""Data larger than memory: image files decoded in DataLoader worker processes, batch by batch.

The loader keeps the in-memory loader's contract (``set_epoch``, ``batches(start)``, ``len``) and its
sharding: each epoch's order comes from ``(seed, epoch)``, every global batch is split between the ranks,
and an interrupted epoch continues at a batch index. Each example's augmentation is drawn from
``(seed, epoch, index)``, so it does not depend on which worker decodes it.

Augmentation, as for the in-memory sets: images of at most 64 px are resized to ``image_size`` and get a
padded random crop and a flip; larger ones get a random-resized crop (scale 0.08-1, aspect 3/4-4/3) and a
flip. Evaluation resizes the shorter side to ``image_size / 0.875`` and takes the center crop (at most 64 px:
a plain resize).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from .shards import rank_slice, shard_bounds
from .loader import epoch_order
from .readers import DatasetError, decode_image
from .transforms import Normalize

SMALL = 64  # images up to this size use the CIFAR-style pipeline


@dataclass
class StreamSplits:
    """A data set read from files as it trains: paths and labels, and what the networks need to know."""

    name: str
    train_files: list[Path]
    train_y: Tensor
    test_files: list[Path]
    test_y: Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int
    classes: Sequence[str] | None = None
    in_chans: int = 3
    image_size: int = 224
    user_dataset: bool = False  # the "files" are items of a user's Dataset (user.DatasetSplits)
    streaming: bool = field(default=True, init=False)

    @property
    def class_names(self) -> list[str]:
        return list(self.classes) if self.classes is not None else [str(i) for i in range(self.num_classes)]


def _rng(seed: int, epoch: int, index: int) -> random.Random:
    return random.Random((seed * 1_000_003 + epoch) * 10_000_019 + index)


def random_resized_box(w: int, h: int, rng: random.Random, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """A (left, top, width, height) box as torchvision's RandomResizedCrop draws it (fallback: the center)."""
    area = w * h
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_r))
        cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            return rng.randint(0, w - cw), rng.randint(0, h - ch), cw, ch
    in_ratio = w / h
    if in_ratio < ratio[0]:
        cw, ch = w, int(round(w / ratio[0]))
    elif in_ratio > ratio[1]:
        cw, ch = int(round(h * ratio[1])), h
    else:
        cw, ch = w, h
    return (w - cw) // 2, (h - ch) // 2, cw, ch


class ImageFiles(Dataset):
    """Decodes one file into a uint8 C x S x S tensor, augmented for training. Items are (epoch, index) pairs."""

    def __init__(self, files: Sequence[Path], labels: Tensor, size: int, mode: str, train: bool, seed: int,
                 padding: int, in_chans: int | None = None) -> None:
        self.files, self.labels = list(files), labels
        self.size, self.mode, self.train, self.seed, self.padding = size, mode, train, seed, padding
        self.in_chans = in_chans if in_chans is not None else (1 if mode == "L" else 3)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, item: tuple[int, int]) -> tuple[Tensor, int]:
        epoch, i = item
        src = self.files[i]
        if hasattr(src, "load"):  # an item of a user's Dataset: its own transforms are the augmentation
            seed = (self.seed * 1_000_003 + epoch) * 10_000_019 + i if self.train else None
            image = src.load(seed)
            want = (self.in_chans, self.size, self.size)
            if tuple(image.shape) != want:  # else torch's "stack expects each tensor to be equal size", unnamed
                raise DatasetError(f"{src}: the image is {' x '.join(map(str, image.shape))} (C x H x W), but the "
                                   f"dataset's first image is {' x '.join(map(str, want))}; every image must have "
                                   "the same size (resize or crop them in the dataset's transform)")
            return image, int(self.labels[i])
        # A damaged or hostile file is a DatasetError naming it (readers.decode_image), whatever the decoder
        # raised; the run stops with that line and its last checkpoint intact (README, "Your own images").
        arr = decode_image(self.files[i], self.mode, lambda im: self._transform(im, _rng(self.seed, epoch, i)))
        return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).contiguous(), int(self.labels[i])

    def _transform(self, im, rng: random.Random) -> np.ndarray:
        from PIL import Image

        s = self.size
        if s <= SMALL:
            im = im.resize((s, s), Image.BILINEAR)
            arr = np.array(im, dtype=np.uint8).reshape(s, s, -1)
            if self.train:
                p = self.padding
                if p:
                    padded = np.zeros((s + 2 * p, s + 2 * p, arr.shape[2]), np.uint8)
                    padded[p:p + s, p:p + s] = arr
                    r, c = rng.randint(0, 2 * p), rng.randint(0, 2 * p)
                    arr = padded[r:r + s, c:c + s]
                if rng.random() < 0.5:
                    arr = arr[:, ::-1]
            return np.ascontiguousarray(arr)
        if self.train:
            left, top, w, h = random_resized_box(im.width, im.height, rng)
            im = im.resize((s, s), Image.BILINEAR, box=(left, top, left + w, top + h))
            if rng.random() < 0.5:
                im = im.transpose(Image.FLIP_LEFT_RIGHT)
        else:
            short = round(s / 0.875)
            scale = short / min(im.width, im.height)
            im = im.resize((max(s, round(im.width * scale)), max(s, round(im.height * scale))), Image.BILINEAR)
            left, top = (im.width - s) // 2, (im.height - s) // 2
            im = im.crop((left, top, left + s, top + s))
        return np.array(im, dtype=np.uint8).reshape(s, s, -1)


class StreamingLoader:
    """Batches of (normalised images on ``device``, labels) decoded by ``workers`` processes."""

    def __init__(self, files: Sequence[Path], labels: Tensor, batch_size: int, mean, std, *, train: bool,
                 image_size: int, in_chans: int = 3, crop_padding: int = 0, drop_last: bool = False, seed: int = 0,
                 device: torch.device | str = "cpu", channels_last: bool = False, rank: int = 0, world_size: int = 1,
                 workers: int = 4, stream=None, augment_seed: int | None = None) -> None:
        # Each item's augmentation is drawn from (seed, epoch, index): with data.augment_seed, from that seed, so
        # that a teacher cache's views are every run's views whatever train.seed.
        self.dataset = ImageFiles(files, labels, image_size, "L" if in_chans == 1 else "RGB", train,
                                  seed if augment_seed is None else augment_seed, crop_padding if train else 0, in_chans)
        self.labels = labels
        self.train, self.seed, self.epoch = train, seed, 0
        self.device = torch.device(device)
        self.rank, self.world_size, self.workers = rank, world_size, workers
        self.channels_last = channels_last
        self.normalize = Normalize(mean, std, self.device)
        self.bounds = shard_bounds(len(labels), batch_size, world_size, drop_last)
        self.stream = stream  # a DriftStream (data.drift_phases): which examples make up each epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.bounds)

    def image_indices(self, b: int) -> Tensor:
        """The images (indices into the training set) of this rank's part of batch ``b`` of the current epoch
        (the epoch's order is drawn once per epoch and kept)."""
        if getattr(self, "_order_epoch", None) != self.epoch:
            self._order, self._order_epoch = self.batch_indices(0), self.epoch
        return torch.tensor([i for _, i in self._order[b]], dtype=torch.int64)

    def view(self, indices: Tensor, epoch: int) -> Tensor:
        """The normalised images ``indices`` as training sees them at ``epoch`` (for filling a teacher cache)."""
        x = torch.stack([self.dataset[(epoch, int(i))][0] for i in indices.tolist()])
        x = self.normalize(x.to(self.device))
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def batch_indices(self, start: int = 0) -> list[list[tuple[int, int]]]:
        """This rank's (epoch, example) lists for the batches from ``start`` to the end of the epoch."""
        n = len(self.labels)
        if self.train:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = epoch_order(n, g, self.stream, self.epoch).tolist()
        else:
            order = list(range(n))
        return [[(self.epoch, order[i]) for i in range(sl.start, sl.stop)]
                for sl in (rank_slice(*self.bounds[b], self.rank, self.world_size) for b in range(start, len(self)))]

    def batches(self, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        index = self.batch_indices(start)
        if not index:
            return
        pin = self.device.type == "cuda"
        loader = DataLoader(self.dataset, batch_sampler=index, num_workers=self.workers, pin_memory=pin,
                            persistent_workers=False)
        for x, y in _one_line_errors(loader):
            x = self.normalize(x.to(self.device, non_blocking=pin))
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y.to(self.device, non_blocking=pin)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return self.batches()


def _one_line_errors(loader: DataLoader) -> Iterator:
    """A worker's DatasetError arrives wrapped in its traceback's text; keep its own one-line message."""
    try:
        yield from loader
    except DatasetError as e:
        last = str(e).strip().splitlines()[-1]
        raise DatasetError(last.split("DatasetError: ", 1)[-1]) from None
