"""The engineering under the training loop: device, precision, optimizers, schedules, checkpoints."""
from __future__ import annotations

import contextlib
import math
import os
import random
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from .config import NetworkConfig


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or does not fit the run."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device={name!r} but CUDA is not available; use train.device=cpu")
    return dev


class Precision:
    """Autocast for fp32/bf16/fp16 and one GradScaler (active for fp16 only).

    With fp16 the scaler unscales and steps only the optimizers of the networks
    that step this batch, then updates once.
    """

    DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}

    def __init__(self, precision: str, device: torch.device) -> None:
        self.name = precision
        self.dtype = self.DTYPES[precision]
        self.device_type = device.type
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def step(self, optimizers: list[torch.optim.Optimizer]) -> None:
        for opt in optimizers:
            self.scaler.step(opt)
        self.scaler.update()


def build_optimizer(model: nn.Module, cfg: NetworkConfig) -> torch.optim.Optimizer:
    """SGD, fused: one kernel per step, and with a GradScaler no host sync for the inf check."""
    return torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
        weight_decay=cfg.weight_decay, fused=True,
    )


def lr_factor(cfg: NetworkConfig, step: int, steps_per_epoch: int, epochs: int) -> float:
    """The learning-rate multiplier after ``step`` batches.

    multistep: x gamma at each milestone epoch (exactly the per-epoch MultiStepLR);
    cosine: annealed per batch to 0 at the last batch, so that short runs end at a
    low learning rate; constant: 1.
    """
    if cfg.schedule == "multistep":
        epoch = step // steps_per_epoch
        return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    if cfg.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(step / (epochs * steps_per_epoch), 1.0)))
    return 1.0


def set_lr(opt: torch.optim.Optimizer, cfg: NetworkConfig, step: int, steps_per_epoch: int, epochs: int) -> float:
    """Set the learning rate for batch ``step``. The schedule is a pure function of the
    step count (checkpointed), so it needs no state of its own, and every network's
    schedule advances with the step, a paused teacher's too."""
    lr = cfg.lr * lr_factor(cfg, step, steps_per_epoch, epochs)
    for g in opt.param_groups:
        g["lr"] = lr
    return lr


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomic(obj: Any, path: str | Path) -> None:
    """Write to a temporary file, then rename: a crash never leaves a half-written checkpoint."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(e).__name__}: {e})") from None
    return ckpt


def extract_state_dict(path: str | Path, network: str) -> dict[str, torch.Tensor]:
    """A network's weights from a switokd checkpoint, or a plain state_dict file."""
    ckpt = load_checkpoint(path)
    if isinstance(ckpt, dict) and "networks" in ckpt:
        nets = ckpt["networks"]
        if network not in nets:
            raise CheckpointError(f"checkpoint {path} has no network {network!r} (it has {sorted(nets)})")
        return nets[network]["model"]
    if isinstance(ckpt, dict) and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return ckpt
    raise CheckpointError(f"{path} is neither a switokd checkpoint nor a state_dict")


def all_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


@contextlib.contextmanager
def frozen_batchnorm_stats(model: nn.Module, restore: Any) -> Iterator[None]:
    """Snapshot BatchNorm running statistics; put them back if ``restore()`` is true at exit."""
    bufs = [(m, {k: getattr(m, k).clone() for k in ("running_mean", "running_var", "num_batches_tracked")
                 if getattr(m, k, None) is not None})
            for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    yield
    if restore():
        with torch.no_grad():
            for m, saved in bufs:
                for k, v in saved.items():
                    getattr(m, k).copy_(v)
