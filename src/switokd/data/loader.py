"""An in-memory batch loader: shuffle, augment and normalise whole batches as tensor ops."""
from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor

from .shards import rank_slice, shard_bounds
from .transforms import Normalize, crop_at, flip_where


def epoch_order(n: int, g: torch.Generator, stream, epoch: int) -> Tensor:
    """The epoch's training order: a permutation of the ``n`` examples from ``g`` or, under drift, the same
    permutation of the stream's ``n`` examples for this epoch (``g`` is drawn from identically either way)."""
    order = torch.randperm(n, generator=g)
    return order if stream is None else stream.epoch_indices(epoch)[order]


class TensorLoader:
    """Iterates (images, labels) batches from uint8 tensors already in memory.

    Randomness comes from a generator seeded by ``(seed, epoch)``, so an epoch's
    order and augmentation are reproducible without saving any loader state:
    call ``set_epoch`` before iterating, as with a DistributedSampler.

    With ``world_size`` processes each global batch holds ``batch_size * world_size``
    examples of the epoch's order and ``rank`` takes its contiguous part: the ranks'
    batches put together are the batch one process would draw with the global size.
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
        rank: int = 0,
        world_size: int = 1,
        stream=None,
        augment_seed: int | None = None,
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
        self.rank, self.world_size = rank, world_size
        self.normalize = Normalize(mean, std, self.device)
        self.bounds = shard_bounds(len(self.labels), batch_size, world_size, drop_last)
        self.stream = stream  # a DriftStream (data.drift_phases): which examples make up each epoch
        # data.augment_seed: each image's crop and flip at an epoch drawn from a seed of their own (the same
        # whatever train.seed and the order), so that a teacher cache's views are every run's views.
        self.augment_seed = augment_seed
        # Independent augmented views of each training image per batch ([N, views, C, H, W]), as PCL gives
        # each branch its own; 1 is the plain [N, C, H, W]. Set by the trainer from the method.
        self.views = 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.bounds)

    def epoch_randomness(self) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        """This epoch's order, crop offsets and flips, drawn on the CPU from (seed, epoch).

        They go to the device in one copy per epoch, so iterating needs no
        per-batch host-device transfer or synchronisation.
        """
        if not self.train:
            return None, None, None
        n = len(self.labels)
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = epoch_order(n, g, self.stream, self.epoch)
        per_view = []
        for v in range(self.views):  # view 0 draws as a single-view loader does, the others after it
            if self.augment_seed is not None:
                offsets, flips = self.image_views(self.epoch, v)
            else:
                offsets = (torch.randint(0, 2 * self.crop_padding + 1, (n, 2), generator=g)
                           if self.crop_padding > 0 else None)
                flips = torch.rand(n, generator=g) < 0.5 if self.hflip else None
            per_view.append((offsets, flips))
        if self.views > 1:
            offsets = torch.stack([o for o, _ in per_view]) if per_view[0][0] is not None else None
            flips = torch.stack([f for _, f in per_view]) if per_view[0][1] is not None else None
        else:
            offsets, flips = per_view[0]
        return tuple(t.to(self.device) if t is not None else None for t in (order, offsets, flips))  # type: ignore[return-value]

    def image_views(self, epoch: int, view: int = 0) -> tuple[Tensor | None, Tensor | None]:
        """Every image's crop offset and flip at ``epoch``, indexed by image, from ``augment_seed`` alone."""
        n = len(self.labels)
        g = torch.Generator().manual_seed((self.augment_seed * 100_003 + epoch) * 1_000_033 + 17 + 7_919 * view)
        offsets = torch.randint(0, 2 * self.crop_padding + 1, (n, 2), generator=g) if self.crop_padding > 0 else None
        flips = torch.rand(n, generator=g) < 0.5 if self.hflip else None
        return offsets, flips

    def image_indices(self, b: int) -> Tensor:
        """The images (indices into the training set) of this rank's part of batch ``b`` of the current epoch
        (the epoch's order is drawn once per epoch and kept)."""
        sel = rank_slice(*self.bounds[b], self.rank, self.world_size)
        if not self.train:
            return torch.arange(sel.start, sel.stop)
        if getattr(self, "_order_epoch", None) != self.epoch:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            self._order, self._order_epoch = epoch_order(len(self.labels), g, self.stream, self.epoch), self.epoch
        return self._order[sel]

    def view(self, indices: Tensor, epoch: int) -> Tensor:
        """The normalised images ``indices`` as training sees them at ``epoch`` (with ``augment_seed``), for
        filling a teacher cache ahead of training."""
        idx = indices.to(self.device)
        x = self.images[idx]
        if self.train and (self.crop_padding > 0 or self.hflip):
            if self.augment_seed is None:
                raise ValueError("TensorLoader.view: the views follow the training order unless augment_seed is set")
            offsets, flips = self.image_views(epoch)
            if offsets is not None:
                x = crop_at(x, self.crop_padding, offsets.to(self.device)[idx])
            if flips is not None:
                x = flip_where(x, flips.to(self.device)[idx])
        x = self.normalize(x)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def batches(self, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield batches from batch index ``start`` (to continue an interrupted epoch)."""
        order, offsets, flips = self.epoch_randomness()
        for b in range(start, len(self)):
            sel = rank_slice(*self.bounds[b], self.rank, self.world_size)
            if order is not None:
                idx = order[sel]
                x, y = self.images[idx], self.labels[idx]
            else:
                x, y = self.images[sel], self.labels[sel]
            # Augmentation follows the example's position in the epoch's order, or with augment_seed the image.
            at = idx if self.augment_seed is not None and order is not None else sel
            if order is not None and self.views > 1:
                yield torch.stack([self._augment(x, None if offsets is None else offsets[v][at],
                                                 None if flips is None else flips[v][at])
                                   for v in range(self.views)], 1), y
            else:
                yield self._augment(x, None if offsets is None else offsets[at],
                                    None if flips is None else flips[at]), y

    def _augment(self, x: Tensor, offsets: Tensor | None, flips: Tensor | None) -> Tensor:
        if offsets is not None:
            x = crop_at(x, self.crop_padding, offsets)
        if flips is not None:
            x = flip_where(x, flips)
        x = self.normalize(x)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return self.batches()
