"""What a run runs on: the machine in one line, and the header every run prints first."""
from __future__ import annotations

import platform
from pathlib import Path
from typing import Any, Mapping, Protocol, Sized

import torch

from .engine import cpu_native_bf16


class RunView(Protocol):
    """What the run header reads of a run (a ``Trainer`` has it all); runinfo needs no trainer import."""

    cfg: Any
    device: torch.device
    precision: Any
    networks: Mapping[str, Any]
    data: Any
    train_loader: Sized
    dist: Any
    conditions: Any


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_summary(device: torch.device, threads: int | None = None) -> str:
    """The device in words: GPU name, or CPU model, its bf16 capability and the torch threads (``threads``, or
    this process's)."""
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        return f"{device} ({p.name}, {p.total_memory / 2**30:.0f} GiB)"
    native, what = cpu_native_bf16()
    bf16 = f"native bf16 ({what})" if native else f"no native bf16 ({what})"
    return f"cpu ({cpu_model()}, {bf16}, {threads or torch.get_num_threads()} torch threads)"


def machine_summary(device: torch.device | None = None, threads: int | None = None) -> str:
    """One line for results files: the device, torch's version and the OS."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return f"{device_summary(device, threads)}, torch {torch.__version__}, {platform.system()} {platform.machine()}"


def run_header(tr: RunView) -> list[str]:
    """The few lines a run starts with: device, precision and why, networks, data."""
    from ..models import count_parameters

    d = tr.data
    lines = [f"device     {device_summary(tr.device)}, torch {torch.__version__}",
             f"precision  {tr.precision.name} ({tr.precision.reason})"
             + (", channels_last" if tr.cfg.train.channels_last else "")]
    for name, net in tr.networks.items():
        how = "frozen" if net.frozen else f"lr {net.cfg.lr:g} {net.cfg.schedule}"
        lines.append(f"network    {name}: {net.cfg.role} {net.cfg.model}, "
                     f"{count_parameters(net.model) / 1e6:.2f}M params, {how}")
        report = getattr(net, "weights", None)
        if report is not None and not net.cfg.checkpoint_strict:
            lines.append(f"weights    {name}: {report.summary()} (from {net.cfg.checkpoint})")
    lines.append(f"data       {d.name}: {len(d.train_y)} train / {len(d.test_y)} test images, "
                 f"{d.in_chans}x{d.image_size}x{d.image_size}, {d.num_classes} classes"
                 + (f"; {tr.workers_note}" if getattr(tr, "workers_note", "") else ""))
    validation = getattr(tr, "validation", None)
    lines.append(f"selection  {validation.line}" if validation is not None else
                 "selection  no validation split (data.val_split=0): best.pt and the best epoch are a test-set maximum")
    lines += [f"condition  {line}" for line in tr.conditions.lines]
    steps, batch, world = len(tr.train_loader), tr.cfg.train.batch_size, tr.dist.world_size
    size = (f"global batch {batch * world} ({batch} per process)" if world > 1 else f"batch {batch}")
    lines.append(f"method     {tr.cfg.method.name}; {tr.cfg.train.epochs} epochs of {steps} steps ({size}), "
                 f"seed {tr.cfg.train.seed}")
    for name, cache in getattr(tr, "caches", {}).items():
        lines.append(f"cache      {name}: {cache.path} ({cache.meta['dtype'] if not cache.topk else f'top-{cache.topk}'}, "
                     f"{cache.bytes_per_view} B per image per view, {cache.filled_share(cache.meta['views']):.0%} "
                     "filled: the rest is computed live and written)")
    describe = getattr(tr.method, "describe_recipe", None)
    if describe is not None:
        lines.append(f"recipe     {describe().removeprefix('recipe ')}")
    lines += [f"warning    {w}" for w in getattr(tr.method, "recipe_warnings", [])]
    schedule_warnings = getattr(tr.method, "schedule_warnings", None)  # a user's method need not have it
    lines += [f"warning    {w}" for w in (schedule_warnings(tr.cfg.train.epochs, steps) if schedule_warnings else [])]
    if getattr(tr.method, "feature_note", ""):
        lines.append(f"features   {tr.method.feature_note}")
    if world > 1:
        lines.append(f"processes  {world} ({tr.dist.backend}), this is rank {tr.dist.rank}; lr "
                     + (f"scaled x{world} (train.scale_lr)" if tr.cfg.train.scale_lr else "as configured (train.scale_lr=false)")
                     + "; gradients " + ("in DistributedDataParallel (train.ddp)" if tr.cfg.train.ddp
                                         else "by a bucketed all-reduce (train.ddp=false)"))
    return lines
