"""A run's data, from its config: the splits with the run conditions applied, the loaders and the diagnostics.

Kept out of the trainer: it only needs the result (``RunData``), whatever the data set and conditions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from .conditions import Conditions, Memorisation, Validation, apply_conditions, split_validation
from .datasets import DataSplits, eval_loader, load_dataset, make_loaders
from .readers import DatasetError
from ..hardware import usable_cores


def capped_workers(requested: int) -> tuple[int, str]:
    """``data.workers`` capped to the usable cores (more worker processes than cores only contend, and torch's
    DataLoader warns about it), and a note for the run header when it was capped ("" otherwise)."""
    cores = usable_cores()
    if requested > cores:
        return cores, f"data.workers={requested} capped to this machine's {cores} cores"
    return requested, ""


@dataclass
class RunData:
    data: DataSplits  # the splits the run trains and tests on (conditions applied)
    conditions: Conditions
    train_loader: Any  # TensorLoader or StreamingLoader: this rank's shard of each global batch
    test_loader: Any
    validation: Validation | None = None  # the held-out split (data.val_split), None without one
    val_loader: Any = None  # its loader (this rank's shard), None without one
    workers_note: str = ""  # why data.workers was capped, for the run header ("" if it was not)


def build_run_data(cfg: Any, data: DataSplits | None, device: torch.device, rank: int = 0, world_size: int = 1,
                   same_on_all_ranks: Callable[[Tensor], bool] = lambda t: True) -> RunData:
    """Load ``cfg.data`` (unless ``data`` is given), hold out the validation split (``data.val_split``), apply
    noise, few labels and drift to the rest (the same on every rank: checked with ``same_on_all_ranks``), and
    build the training, validation and test loaders of this rank."""
    d, t = cfg.data, cfg.train
    from .stream import StreamSplits
    if data is not None and not isinstance(data, (DataSplits, StreamSplits)):
        hint = (" wrap your datasets: switokd.data.DatasetSplits(train, test, name=...)"
                if hasattr(data, "__getitem__") and hasattr(data, "__len__") else "")
        raise DatasetError(f"Trainer(data=...) takes DataSplits (uint8 tensors) or DatasetSplits (any map-style "
                           f"torch Dataset), got {type(data).__name__};{hint}")
    if data is None:
        data = load_dataset(d.name, d.dir, d.image_size, d.limit_train, d.limit_test, d.channels, d.in_memory)
    data, validation = split_validation(data, d.val_split, d.split_seed)
    data, conditions = apply_conditions(data, d, t.epochs)
    if not same_on_all_ranks(data.train_y):
        raise DatasetError(f"rank {rank}: the training labels differ between processes; every rank must read the "
                           "same files with the same data.* keys (data.split_seed included)")
    pad = (data.crop_padding if d.crop_padding is None else d.crop_padding) if d.augment else 0
    workers, workers_note = capped_workers(d.workers)
    workers_note = workers_note if getattr(data, "streaming", False) else ""  # in-memory data uses no workers
    common = dict(mean=data.mean, std=data.std, device=device, channels_last=t.channels_last, seed=t.seed,
                  rank=rank, world_size=world_size)
    train_loader, test_loader = make_loaders(
        data, batch_size=t.batch_size, eval_batch_size=t.eval_batch_size, crop_padding=pad,
        hflip=d.augment and d.hflip, drop_last=t.drop_last, workers=workers, stream=conditions.drift,
        augment_seed=d.augment_seed, **common)
    conditions.memorisation = Memorisation.build(
        data, conditions, lambda x, y: eval_loader(data, x, y, t.eval_batch_size, workers, **common), device)
    val_loader = (eval_loader(data, validation.images, validation.labels, t.eval_batch_size, workers, **common)
                  if validation is not None else None)
    return RunData(data, conditions, train_loader, test_loader, validation, val_loader, workers_note)
