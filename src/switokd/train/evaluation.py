"""Evaluation of every network of a run on its test or validation split, over all processes' shards."""
from __future__ import annotations

from typing import Any

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


__all__ = ["evaluate"]
