"""Evaluation of every network of a run on its test or validation split, over all processes' shards."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch import nn

from .hooks import Evaluation


@torch.no_grad()
def evaluate(tr: Any, split: str = "test") -> Evaluation:
    """Evaluate every network of the trainer ``tr`` on the test split (or ``"val"``): accuracy, loss and per-class hits (all ranks'
    shards)."""
    if split not in ("test", "val"):
        raise ValueError(f"evaluate_split: split must be 'test' or 'val', got {split!r}")
    loader = tr.test_loader if split == "test" else tr.val_loader
    if loader is None:
        raise ValueError("evaluate_split('val'): this run has no validation split (set data.val_split)")
    tr.eval_mode()
    classes, names = tr.data.num_classes, list(tr.networks)
    hits = {n: torch.zeros(classes, device=tr.device) for n in names}
    loss = {n: torch.zeros((), device=tr.device) for n in names}
    seen = torch.zeros(classes, device=tr.device)
    branched = {n: net.model for n, net in tr.networks.items() if hasattr(net.model, "keep_outputs")}
    # A network that ships another model (PCL's temporal mean) is scored by that model; its own branches stay parts.
    shipped = {n: m.eval() for n in names if (m := tr.method.shipped(n)) is not None}
    extra: dict[str, torch.Tensor] = {}  # "net/branchK", "net/ensemble": correct predictions of a BranchNet's parts
    for m in branched.values():
        m.keep_outputs = True
    for x, y in loader:  # this rank's shard of the split
        logits = tr.predict(x)
        if shipped:
            with tr.precision.autocast():
                logits.update({n: m(x) for n, m in shipped.items()})
        for n, z in logits.items():
            hits[n] += torch.bincount(y[z.argmax(1) == y], minlength=classes)
            loss[n] += nn.functional.cross_entropy(z.float(), y, reduction="sum")
            if n in branched:
                outs = branched[n].outputs
                parts = {**{f"{n}/branch{k}": o for k, o in enumerate(outs)},
                         f"{n}/ensemble": torch.stack([o.float() for o in outs]).mean(0)}
                for key, o in parts.items():
                    extra[key] = extra.get(key, torch.zeros((), device=tr.device)) + (o.argmax(1) == y).sum()
        seen += torch.bincount(y, minlength=classes)
    for m in branched.values():
        m.keep_outputs, m.outputs = False, []
    sums = tr.dist.sum(torch.cat([torch.stack([hits[n] for n in names]).flatten(),
                                    torch.stack([loss[n] for n in names]), seen]).float())
    per_class = sums[:len(names) * classes].view(len(names), classes)
    total = sums[-classes:].sum().item()
    correct, losses = per_class.sum(1).tolist(), sums[len(names) * classes:-classes].tolist()
    results = {n: {"acc": 100.0 * correct[i] / total, "loss": losses[i] / total} for i, n in enumerate(names)}
    if extra:  # each branch's accuracy, the branches' mean ensemble's, beside the deployed one's ("acc")
        keys = sorted(extra)
        parts = tr.dist.sum(torch.stack([extra[k].float() for k in keys])).tolist()
        for k, v in zip(keys, parts):
            net, part = k.split("/")
            results[net].setdefault("parts", {})[part] = 100.0 * v / total
    return Evaluation(results, {n: per_class[i] for i, n in enumerate(names)}, sums[-classes:])


@contextlib.contextmanager
def refreshed_batchnorm(tr: Any) -> Iterator[int]:
    """Within: every learning network (and the model it ships, PCL's mean) has BatchNorm statistics
    re-estimated on this process's training split (one pass in train mode, no gradients, the plain average of
    the batches' statistics, as ``torch.optim.swa_utils.update_bn``). On exit the running statistics, the
    momenta and the modules' modes are restored, and the global RNG is as before: training goes on exactly as
    without. Yields how many BatchNorm layers were re-estimated.

    Why: with a large learning rate the running statistics lag the weights; a race's early rung read that lag
    rather than the learning (few50, epoch 4 of 40: ONE, OKDDip and FFL scored 10-15% (seed 0) on validation with their
    running statistics and 48-53% with re-estimated ones; benchmarks/results/race/README.md)."""
    learning = [net.model for net in tr.networks.values() if not net.frozen]
    shipped = [m for n in tr.networks if (m := tr.method.shipped(n)) is not None]
    models = learning + shipped
    bns = [m for model in models for m in model.modules()
           if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [(m, m.momentum, {k: b.clone() for k, b in m.named_buffers(recurse=False)}) for m in bns]
    modes = [(m, m.training) for model in models for m in model.modules()]
    devices = [tr.device] if tr.device.type == "cuda" else []
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            for m in bns:
                m.reset_running_stats()
                m.momentum = None  # cumulative: every batch weighs the same
            for model in models:
                model.train()
            for x, _ in tr.train_loader.batches():
                with tr.precision.autocast():
                    for model in learning:  # a network takes its views as in training
                        model(x)
                    # A shipped model reads one image per example (PCL's loader draws a view per branch: view 0
                    # is the single-view loader's).
                    one = x[:, 0] if x.dim() == 5 else x
                    for model in shipped:
                        model(one)
            if getattr(tr, "taps", None):
                tr.pop_features()  # the feature taps recorded these forwards: nothing is kept
        yield len(bns)
    finally:
        with torch.no_grad():
            for m, momentum, buffers in saved:
                m.momentum = momentum
                for k, b in buffers.items():
                    getattr(m, k).copy_(b)
        for m, training in modes:
            m.training = training


__all__ = ["evaluate", "refreshed_batchnorm"]
