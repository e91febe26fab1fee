"""The engineering under the training loop: device, precision, optimizers, schedules."""
from __future__ import annotations

import contextlib
import math
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
from torch import nn

from ..config import NetworkConfig
from ..errors import ConfigError, TrainingDiverged


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """``train.device``: auto (CUDA if present, else CPU), cpu, cuda or cuda:N. Under torchrun
    (``local_rank`` given) auto and cuda mean this process's own GPU, cuda:LOCAL_RANK."""
    from ..config import ConfigError

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"config key 'train.device': {name!r} is not a device (auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"config key 'train.device': {name!r} but CUDA is not available; use train.device=cpu")
        if local_rank is not None and dev.index is None:
            dev = torch.device("cuda", local_rank % torch.cuda.device_count())
    return dev


def cpu_native_bf16() -> tuple[bool, str]:
    """Whether this CPU computes bf16 natively (AVX512_BF16 or AMX on x86, BF16 on Arm), and what it has.

    Without it PyTorch emulates bf16, which on an AVX2-only CPU is many times slower than fp32.
    """
    caps: dict[str, Any] = {}
    try:
        caps = dict(torch.cpu.get_capabilities())
    except Exception:  # older torch: no capability query; fall back to the kernel's CPU flags
        try:
            flags = next((ln.split(":", 1)[1].split() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                          if ln.startswith(("flags", "Features"))), [])
            caps = {f: True for f in flags}
        except OSError:
            pass
    native = [k for k in ("amx_bf16", "avx512_bf16", "bf16", "sve_bf16") if caps.get(k)]
    isa = [k for k in ("avx512_f", "avx512f", "avx2", "neon", "asimd") if caps.get(k)]
    what = "+".join(native) if native else (isa[0] if isa else "no SIMD flags found")
    return bool(native), what


def resolve_precision(requested: str, device: torch.device) -> tuple[str, str]:
    """The precision to train in and why. ``auto``: bf16 where the device computes it natively, else fp32."""
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
        name = torch.cuda.get_device_name(device)
        if requested == "auto":
            return ("bf16", f"auto: {name} supports bf16") if supported else ("fp32", f"auto: {name} has no bf16")
        return requested, "set by train.precision"
    if device.type != "cpu":
        return ("fp32", f"auto: fp32 on {device.type}") if requested == "auto" else (requested, "set by train.precision")
    native, what = cpu_native_bf16()
    if requested == "auto":
        if native:
            return "bf16", f"auto: the CPU has native bf16 ({what})"
        return "fp32", f"auto: the CPU has no native bf16 ({what}), so bf16 would be emulated and slow"
    if requested == "bf16" and not native:
        warnings.warn(f"train.precision=bf16 on a CPU without native bf16 ({what}): bf16 is emulated and can be "
                      "10x slower than fp32 here. Use train.precision=auto or fp32.", RuntimeWarning, stacklevel=2)
        return requested, f"set by train.precision; emulated on this CPU ({what}): slow"
    return requested, "set by train.precision"


class Precision:
    """Autocast for fp32/bf16/fp16 (``auto`` resolved per device) and one GradScaler (active for fp16 only).

    With fp16 the scaler unscales and steps only the optimizers of the networks
    that step this batch, then updates once.
    """

    DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}

    def __init__(self, precision: str, device: torch.device) -> None:
        self.requested = precision
        self.name, self.reason = resolve_precision(precision, device)
        self.dtype = self.DTYPES[self.name]
        self.device_type = device.type
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.name == "fp16")

    @property
    def logits_dtype(self) -> torch.dtype:
        """The dtype a network's logits have in this precision (a Linear's output under autocast)."""
        return self.dtype or torch.float32

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


def param_groups(params: Iterable[nn.Parameter], cfg: NetworkConfig) -> list[dict[str, Any]]:
    """The trainable ``params`` as optimizer groups: one, or with ``decay_norm_bias`` false two, the second
    (every 1-D parameter: norms' weights, biases) without weight decay."""
    params = list(dict.fromkeys(p for p in params if p.requires_grad))
    if cfg.decay_norm_bias:
        return [{"params": params}] if params else []
    groups = [{"params": [p for p in params if p.ndim > 1]}, {"params": [p for p in params if p.ndim <= 1],
                                                               "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, cfg: NetworkConfig) -> torch.optim.Optimizer:
    """``networks.NAME.optimizer`` over the model's parameter groups (``param_groups``): SGD (fused: one kernel per
    step, and with a GradScaler no host sync for the inf check) or AdamW. A method's modules that serve this
    network join it later (``add_modules``)."""
    groups = param_groups(model.parameters(), cfg)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.base_lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                               weight_decay=cfg.weight_decay, fused=True)
    if cfg.optimizer == "adamw":
        if len(cfg.betas) != 2 or not all(0.0 <= b < 1.0 for b in cfg.betas):
            raise ConfigError(f"config key 'networks.{cfg.name}.betas': two numbers in [0, 1), got {cfg.betas}")
        return torch.optim.AdamW(groups, lr=cfg.base_lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    raise ConfigError(f"config key 'networks.{cfg.name}.optimizer': {cfg.optimizer!r} is not one of sgd, adamw")


def add_modules(optimizer: torch.optim.Optimizer, module: nn.Module, cfg: NetworkConfig) -> None:
    """Put a method's module (connectors, regressors) in the optimizer of the network it serves: its learning
    rate, schedule and weight decay (mdistiller's ``get_learnable_parameters``)."""
    parts = [m for m in module.modules() if getattr(type(m), "param_group", None)]  # their own settings
    own = {id(p) for m in parts for p in m.parameters()}
    rest = [p for p in module.parameters() if id(p) not in own]
    for group in param_groups(rest, cfg):
        optimizer.add_param_group(group)
    for m in parts:
        for group in param_groups(m.parameters(), cfg):
            optimizer.add_param_group({**group, **type(m).param_group})


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


def set_lr(opt: torch.optim.Optimizer, cfg: NetworkConfig, step: int, steps_per_epoch: int, epochs: int,
           scale: float = 1.0) -> float:
    """Set the learning rate for batch ``step``. The schedule is a pure function of the
    step count (checkpointed), so it needs no state of its own, and every network's
    schedule advances with the step, a paused teacher's too. ``scale`` multiplies the
    base rate (``train.scale_lr`` under several processes)."""
    lr = cfg.base_lr * scale * lr_factor(cfg, step, steps_per_epoch, epochs)
    for g in opt.param_groups:
        g["lr"] = lr
    return lr


def check_finite_losses(means: dict[str, float], step: int) -> None:
    """Raise ``TrainingDiverged`` when a logged loss mean (``loss/...``) is NaN or infinite."""
    bad = [k for k, v in means.items() if k.startswith("loss/") and not math.isfinite(v)]
    if bad:
        raise TrainingDiverged(f"non-finite loss at step {step} ({', '.join(bad)}); "
                               "the last good checkpoint is kept. Lower the learning rate or use fp32.")


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
