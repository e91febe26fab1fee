"""SwitOKD (or any switokd method) inside PyTorch Lightning, with manual optimisation.

    python examples/lightning_module.py          # a tiny run on random data, on CPU, in seconds

What a LightningModule must do, and why:

- ``automatic_optimization = False``: the method decides per batch which networks step; Lightning's
  automatic loop would step every optimizer.
- Each network has its own optimizer. Only the networks in ``out.stepping`` step: a paused teacher takes no
  backward pass and no optimizer step.
- The learning rates follow the **batch count** (``self.batches``, checkpointed), set directly on each
  optimizer. Lightning's ``global_step`` counts optimizer steps, 2 per learning batch and 1 per expert batch,
  so it is no clock for a schedule. And a scheduler stepped for a paused teacher would warn that it ran
  before its optimizer.
- Under DDP, ``method.reduce`` must be a **sum** all-reduce, so that every rank decides on the global batch
  and takes the same mode (``setup`` sets it). Wrap each network on its own, or pass
  ``DDPStrategy(find_unused_parameters=True)``: a paused teacher's parameters get no gradient.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

import lightning as L

from switokd import create_method


class DistillModule(L.LightningModule):
    """A cohort of networks trained by one switokd method.

    Args:
        networks: name -> network; ``roles`` gives each one's role.
        roles: name -> ``"teacher"`` or ``"student"``.
        method: a switokd method (``switokd``, ``uniokd``, ``dml``, ...), with ``method_options``.
        lr: each network's SGD learning rate, cosine-annealed to 0 over ``total_batches``.
    """

    def __init__(self, networks: dict[str, nn.Module], roles: dict[str, str], method: str = "switokd", *,
                 lr: float = 0.1, total_batches: int = 100, **method_options: Any) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.nets = nn.ModuleDict(networks)
        self.names = list(networks)
        self.method = create_method(method, roles, **method_options)
        self.lr, self.total_batches = lr, total_batches
        self.batches = 0  # batches seen: the clock of the schedule (not global_step)
        self.decisions: list[dict[str, bool]] = []  # each batch's modes, for inspection and the tests

    def setup(self, stage: str) -> None:
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            def reduce(t: torch.Tensor) -> torch.Tensor:
                t = t.clone()
                dist.all_reduce(t, op=dist.ReduceOp.SUM)  # a sum: the statistics are sums over the batch
                return t
            self.method.reduce = reduce

    def configure_optimizers(self):
        return [torch.optim.SGD(self.nets[n].parameters(), lr=self.lr, momentum=0.9, weight_decay=5e-4)
                for n in self.names]

    def _lr(self) -> float:
        return 0.5 * self.lr * (1 + math.cos(math.pi * min(self.batches / self.total_batches, 1.0)))

    def training_step(self, batch, batch_idx):
        x, y = batch
        opts = dict(zip(self.names, self.optimizers()))
        for opt in opts.values():  # every network's schedule advances, paused or not
            for group in opt.param_groups:
                group["lr"] = self._lr()
        out = self.method.step({n: self.nets[n](x) for n in self.names}, y)
        self.decisions.append(dict(out.expert))
        loss = sum(out.losses[n]["loss"] for n in out.stepping)
        for n in out.stepping:
            opts[n].zero_grad()
        self.manual_backward(loss)
        for n in out.stepping:
            opts[n].step()
        self.batches += 1
        for pair, expert in out.expert.items():
            self.log(f"expert/{pair}", float(expert), on_step=True, prog_bar=False)
        self.log("loss", loss.detach(), on_step=True, prog_bar=True)
        return loss.detach()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["switokd_batches"] = self.batches

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.batches = checkpoint.get("switokd_batches", 0)


def tiny_cnn(width: int, classes: int = 4) -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, classes))


def main(batches: int = 12, seed: int = 0) -> DistillModule:
    torch.manual_seed(seed)
    x = torch.randn(batches * 16, 1, 8, 8)
    y = torch.randint(0, 4, (batches * 16,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    module = DistillModule({"teacher": tiny_cnn(32), "student": tiny_cnn(4)},
                           {"teacher": "teacher", "student": "student"}, "switokd", total_batches=batches)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, loader)
    experts = sum(d["teacher->student"] for d in module.decisions)
    print(f"{module.batches} batches, {experts} in expert mode; Lightning's global_step {trainer.global_step} "
          "(optimizer steps, not batches)")
    return module


if __name__ == "__main__":
    main()
