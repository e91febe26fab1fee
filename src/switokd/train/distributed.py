"""Several processes (torchrun): process group, gradient and statistics reduction, agreement between ranks.

``torchrun --nproc_per_node=N -m switokd train ...`` starts N processes; each trains on its own shard of
every global batch (``train.batch_size`` per process, so the global batch is N times that).

Two gradient reductions, which tie on 2 gloo CPU processes (docs/distributed.md, benchmarks/ddp_throughput.py).
By default networks run as plain modules: after the one backward of the stepping networks, their gradients
are all-reduced here in flat buckets, weighted by each rank's examples (no all-reduce, and no backward, for a
paused teacher). With ``train.ddp`` each learning network has its own ``DistributedDataParallel``, whose
all-reduce overlaps the backward; the trainer scales each rank's loss by its share of the global batch, so
that DDP's plain mean is the same weighted mean. A paused teacher's forward with no backward leaves its
reducer idle. Either way the decision is made on all-reduced sums, so every rank takes the same mode: a
rank stepping a teacher that another rank pauses cannot happen.
"""
from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

BUCKET_BYTES = 25 * 2**20  # as DDP's default bucket size


@dataclass
class Distributed:
    """This process's place in the job; a single process is rank 0 of 1 and every collective is a no-op."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> "Distributed":
        """Rank and world size from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK); 0 of 1 without it."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        return cls(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))

    def init(self, device: torch.device) -> None:
        """Join the process group: NCCL on CUDA, gloo on the CPU."""
        if not self.enabled or dist.is_initialized():
            self.backend = dist.get_backend() if self.enabled else ""
            return
        self.backend = "nccl" if device.type == "cuda" else "gloo"
        # Imported after the group exists (as the first optimizer does), torch._dynamo keeps a reference to
        # it (torch 2.13): destroy_process_group then leaves gloo's threads running to race the interpreter's
        # exit (see _destroy_at_exit). Imported first, it holds none.
        import torch._dynamo  # noqa: F401
        if device.type == "cuda":
            torch.cuda.set_device(device)
            dist.init_process_group(self.backend, device_id=device)
        else:
            dist.init_process_group(self.backend)
        atexit.register(_destroy_at_exit)

    def close(self) -> None:
        """Leave the process group once every rank has finished (call only after a run that ended well).

        Rank 0 writes the report and the last checkpoint after the final collective; the barrier keeps the
        other ranks from tearing their gloo connections down meanwhile. Without a ``close`` (an error, a
        signal), the group is still destroyed at interpreter exit (see ``_destroy_at_exit``).
        """
        if self.enabled and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()

    # ------------------------------------------------------------------ collectives

    def sum(self, t: Tensor) -> Tensor:
        """All-reduce (sum) in place; returns ``t``. The identity in one process."""
        if self.enabled:
            dist.all_reduce(t)
        return t

    def mean(self, t: Tensor) -> Tensor:
        if self.enabled:
            dist.all_reduce(t)
            t.div_(self.world_size)
        return t

    def any(self, flags: list[bool]) -> list[bool]:
        """Element-wise OR of host flags over ranks (one small collective)."""
        if not self.enabled:
            return flags
        t = torch.tensor([float(f) for f in flags], device=_collective_device(self))
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return [bool(v) for v in t.tolist()]

    def same_on_all_ranks(self, t: Tensor) -> bool:
        """Whether every rank holds the same integer tensor ``t`` (an exact position-weighted checksum)."""
        if not self.enabled:
            return True
        pos = torch.arange(1, t.numel() + 1, dtype=torch.int64)
        check = (t.flatten().cpu().to(torch.int64) * pos).sum() + t.numel()
        both = torch.stack([check, -check]).to(_collective_device(self))
        dist.all_reduce(both, op=dist.ReduceOp.MAX)  # max and -min: equal everywhere iff max == min
        return both[0].item() == -both[1].item()

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def broadcast_module(self, module: nn.Module) -> None:
        """Make every rank's parameters and buffers rank 0's (as DDP does when it wraps a module)."""
        if not self.enabled:
            return
        with torch.no_grad():
            for t in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(t.data, 0)

    def average_buffers(self, module: nn.Module) -> None:
        """Average floating-point buffers (BatchNorm running statistics) over ranks."""
        if not self.enabled:
            return
        bufs = [b for b in module.buffers() if b.is_floating_point()]
        if bufs:
            flat = _flatten_dense_tensors(bufs)
            self.mean(flat)
            for b, v in zip(bufs, _unflatten_dense_tensors(flat, bufs)):
                b.copy_(v)

    def sync_state(self, modules: Iterable[nn.Module], sums: Iterable[Tensor]) -> None:
        """Average the modules' BatchNorm statistics and the metric sums over ranks, so that every rank holds
        the state rank 0 saves."""
        if not self.enabled:
            return
        for m in modules:
            self.average_buffers(m)
        for t in sums:
            self.mean(t)

    def average_grads(self, params: Iterable[nn.Parameter]) -> None:
        """The plain mean of each gradient over the processes (a method's modules beside DDP, whose loss is
        already weighted by each rank's share of the global batch)."""
        if not self.enabled:
            return
        grads = [p.grad for p in params if p.grad is not None]
        if grads:
            flat = _flatten_dense_tensors(grads)
            dist.all_reduce(flat)
            flat.div_(self.world_size)
            for g, synced in zip(grads, _unflatten_dense_tensors(flat, grads)):
                g.copy_(synced)

    def reduce_grads(self, params: Iterable[nn.Parameter], local_count: int) -> None:
        """Make each gradient the mean over the global batch: sum_r n_r g_r / sum_r n_r, in flat buckets.

        ``local_count`` is this rank's number of examples; weighting by it keeps an uneven last batch exact.
        """
        if not self.enabled:
            return
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        buckets, current, size = [], [], 0
        for g in grads:
            current.append(g)
            size += g.numel() * g.element_size()
            if size >= BUCKET_BYTES:
                buckets.append(current)
                current, size = [], 0
        if current:
            buckets.append(current)
        # A 1 rides at the front of the first bucket: scaled by n_r and summed, it arrives as the global count.
        one = torch.ones(1, device=grads[0].device, dtype=grads[0].dtype)
        total = one
        for i, bucket in enumerate(buckets):
            flat = _flatten_dense_tensors([one, *bucket] if i == 0 else bucket).mul_(float(local_count))
            dist.all_reduce(flat)
            if i == 0:
                total, flat = flat[:1].clone(), flat[1:]
            flat.div_(total)
            for g, v in zip(bucket, _unflatten_dense_tensors(flat, bucket)):
                g.copy_(v)


def _collective_device(d: Distributed) -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if d.backend == "nccl" else torch.device("cpu")


def _destroy_at_exit() -> None:
    """Destroy a process group still open when the interpreter exits (registered by ``Distributed.init``).

    Left open, gloo's worker threads outlive the main thread: a thread that drops the last reference to a
    finished all-reduce frees its tensors, which needs the GIL, and a thread taking the GIL while the
    interpreter finalizes is ended with a forced unwind through a noexcept destructor: std::terminate, a
    SIGABRT ("terminate called without an active exception") after the script's last line (torch 2.13;
    seen in gdb: ``ProcessGroupGloo::runLoop`` > ``~AsyncAllreduceWork`` > ``take_gil`` >
    ``PyThread_exit_thread``). Destroying the group joins those threads first. atexit runs before the
    interpreter starts finalizing. No barrier: after an error the other ranks may be gone.
    """
    if dist.is_initialized():  # registered only once a group was created, so torch.distributed is available
        dist.destroy_process_group()
