"""An in-memory batch loader: shuffle, augment and normalise whole batches as tensor ops."""
from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor

from .transforms import Normalize, random_crop, random_hflip


class TensorLoader:
    """Iterates (images, labels) batches from uint8 tensors already in memory.

    Randomness comes from a generator seeded by ``(seed, epoch)``, so an epoch's
    order and augmentation are reproducible without saving any loader state:
    call ``set_epoch`` before iterating, as with a DistributedSampler.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        batch_size: int,
        mean,
        std,
        *,
        train: bool,
        crop_padding: int = 0,
        hflip: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        device: torch.device | str = "cpu",
        channels_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        # The whole uint8 set lives on the training device: no per-batch host copies.
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.batch_size = batch_size
        self.train = train
        self.crop_padding = crop_padding if train else 0
        self.hflip = hflip and train
        self.drop_last = drop_last
        self.seed = seed
        self.epoch = 0
        self.channels_last = channels_last
        self.normalize = Normalize(mean, std, self.device)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def batches(self, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield batches from batch index ``start`` (to continue an interrupted epoch)."""
        n = len(self.labels)
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(n, generator=g).to(self.device) if self.train else None
        for b in range(len(self)):
            # Draw this batch's augmentation randomness even when skipping, so that
            # starting at batch ``start`` gives the very batches a full pass gives.
            sel = slice(b * self.batch_size, (b + 1) * self.batch_size)
            idx = order[sel] if order is not None else None
            crop_g = torch.Generator().manual_seed(self.seed * 7_919 + self.epoch * 1_000_003 + b)
            if b < start:
                continue
            x = self.images[idx] if idx is not None else self.images[sel]
            y = self.labels[idx] if idx is not None else self.labels[sel]
            if self.train:
                x = random_crop(x, self.crop_padding, crop_g)
                if self.hflip:
                    x = random_hflip(x, crop_g)
            x = self.normalize(x)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return self.batches()
