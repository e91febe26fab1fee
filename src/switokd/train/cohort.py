"""The cohort's networks: each built from its config entry, with its initial weights and its optimizer."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from .. import config as C
from .checkpoint import WeightsReport, extract_state_dict, load_weights
from .engine import build_optimizer
from ..models.branches import build_backbone


@dataclass
class Network:
    """One network of the cohort and what trains it (no optimizer if frozen)."""

    cfg: C.NetworkConfig
    model: nn.Module
    optimizer: torch.optim.Optimizer | None
    weights: WeightsReport | None = None  # what networks.NAME.checkpoint loaded (None: none given)
    ddp: nn.Module | None = None  # the model in torch's DistributedDataParallel (train.ddp), for training forwards

    @property
    def train_module(self) -> nn.Module:
        """What a training forward calls: the DDP wrapper under ``train.ddp``, else the model itself."""
        return self.ddp if self.ddp is not None else self.model

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def frozen(self) -> bool:
        return self.optimizer is None


def build_network(n: C.NetworkConfig, cfg: C.Config, data, *, frozen: bool, device: torch.device, dist,
                  initial_weights: bool = True) -> Network:
    """Build ``networks.NAME``: the model for the data's classes and shape, its ``checkpoint`` weights, SyncBN
    under several CUDA processes, rank 0's weights on every rank, and an optimizer unless ``frozen``."""
    try:
        model = build_backbone(n, data.num_classes, data.in_chans, data.image_size)
    except KeyError as e:
        raise C.ConfigError(f"config key 'networks.{n.name}.model': {e.args[0]}") from None
    report = None
    if n.checkpoint and initial_weights:
        sd = extract_state_dict(n.checkpoint, n.checkpoint_network or n.name)
        report = load_weights(model, sd, f"{n.checkpoint} for networks.{n.name} ({n.model})", strict=n.checkpoint_strict)
    elif frozen and initial_weights:
        raise C.ConfigError(
            f"method {cfg.method.name!r} keeps networks.{n.name} frozen, so it needs trained weights: "
            f"set networks.{n.name}.checkpoint=PATH (for example a vanilla run's last.pt)")
    if dist.enabled and (n.sync_bn or cfg.train.sync_bn):
        if device.type != "cuda":
            raise C.ConfigError(f"config key 'networks.{n.name}.sync_bn' (or train.sync_bn): PyTorch's "
                                "SyncBatchNorm runs on GPUs only; turn it off for CPU (gloo) training")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)
    dist.broadcast_module(model)  # every rank starts from rank 0's weights
    if frozen:
        model.eval().requires_grad_(False)
        return Network(n, model, None, report)
    ddp = None
    if dist.enabled and cfg.train.ddp:
        # One wrapper per network, so that a paused teacher (a forward with no backward) leaves the other
        # networks' reducers alone. Buffers are not broadcast at every forward: they are averaged at the
        # epoch ends and checkpoints, as without DDP, so both paths keep the same BatchNorm statistics.
        from torch.nn.parallel import DistributedDataParallel
        ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                      forward_sync_buffers=False)
    return Network(n, model, build_optimizer(model, n), report, ddp)


@contextlib.contextmanager
def ddp_errors(name: str, ddp: nn.Module | None) -> Iterator[None]:
    """Under ``train.ddp``: DDP's error for parameters that got no gradient, as one line naming the network."""
    try:
        yield
    except RuntimeError as e:
        if ddp is None or "finished reduction in the prior iteration" not in str(e):
            raise
        raise C.ConfigError(
            f"config key 'train.ddp': networks.{name} has parameters that got no gradient in the last step, and "
            "DistributedDataParallel needs one for every parameter; set train.ddp=false (the bucketed "
            "all-reduce skips them) or make every parameter take part in the loss") from None
