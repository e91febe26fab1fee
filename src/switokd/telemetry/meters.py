"""Device-side metric sums read at the log interval, the run's switching counts and shares."""
from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any, Callable, Iterable

import torch
from torch import Tensor

if TYPE_CHECKING:
    from ..methods import StepOutput


class Meter:
    """Running sums of 0-d tensors kept on their device; ``read`` syncs once for all of them.

    ``add`` stacks a step's values into one vector and adds it to the sum for that
    set of keys: two kernels per step however many statistics are logged.
    """

    def __init__(self) -> None:
        self.sums: dict[tuple[str, ...], Tensor] = {}
        self.counts: dict[tuple[str, ...], int] = {}

    def add(self, values: dict[str, Tensor]) -> None:
        if not values:
            return
        keys = tuple(values)
        v = torch.stack([t.detach().float() for t in values.values()])
        if keys in self.sums:
            self.sums[keys] += v
            self.counts[keys] += 1
        else:
            self.sums[keys] = v
            self.counts[keys] = 1

    def read(self, reduce: Callable[[Tensor], Tensor] | None = None) -> dict[str, float]:
        """Means per key over the steps that logged it (one host synchronisation), then reset.

        ``reduce`` (e.g. a mean over processes) is applied to the sums before they are read."""
        means = self.peek(reduce)
        self.sums.clear()
        self.counts.clear()
        return means

    def peek(self, reduce: Callable[[Tensor], Tensor] | None = None) -> dict[str, float]:
        """Means per key so far, without resetting (one host synchronisation)."""
        if not self.sums:
            return {}
        groups = list(self.sums)
        flat = torch.cat([self.sums[k] for k in groups])
        flat = (reduce(flat) if reduce else flat).tolist()
        totals: dict[str, float] = {}
        counts: dict[str, int] = {}
        i = 0
        for keys in groups:
            for k in keys:
                totals[k] = totals.get(k, 0.0) + flat[i]
                counts[k] = counts.get(k, 0) + self.counts[keys]
                i += 1
        return {k: totals[k] / counts[k] for k in totals}

    def state_dict(self) -> list[dict[str, Any]]:
        """The running sums as plain data (for a checkpoint inside an epoch)."""
        return [{"keys": list(k), "sum": self.sums[k].detach().cpu(), "count": self.counts[k]} for k in self.sums]

    def load_state_dict(self, state: list[dict[str, Any]], device: torch.device | str = "cpu") -> None:
        self.sums = {tuple(g["keys"]): g["sum"].to(device) for g in state}
        self.counts = {tuple(g["keys"]): int(g["count"]) for g in state}


def shares(counts: dict[str, int]) -> dict[str, dict[str, float]]:
    """Expert-mode share per pair and paused share per teacher over the counted steps."""
    steps = max(counts.get("steps", 0), 1)
    out: dict[str, dict[str, float]] = {}
    for k, v in counts.items():
        if k != "steps":
            kind, name = k.split("/", 1)
            out.setdefault(f"{kind}_share", {})[name] = v / steps
    return out


class RunMeters:
    """What a run logs of its steps: device-side sums of every loss and switching statistic (since the last
    ``steps.jsonl`` row, and this epoch), host-side counts of expert and paused steps, and the run's totals.

    Recording a step reads nothing on the host; the sums are read at the log interval (one sync).
    """

    def __init__(self, pausable: Iterable[str]) -> None:
        self.pausable = tuple(pausable)
        self.step, self.epoch = Meter(), Meter()
        self.step_counts: Counter[str] = Counter()
        self.epoch_counts: Counter[str] = Counter()
        self.totals: Counter[str] = Counter()  # the whole run's: checkpointed
        self.last_expert: dict[str, bool] = {}

    def record(self, out: "StepOutput") -> None:
        values = {f"loss/{n}/{k}": v for n, terms in out.losses.items() for k, v in terms.items()}
        for p, s in out.switches.items():
            for k in s.LOGGED:
                values[f"pair/{p}/{k}"] = getattr(s, k)
        self.step.add(values)
        self.epoch.add(values)
        self.last_expert = out.expert
        counts = Counter({"steps": 1})
        for p, e in out.expert.items():
            counts[f"expert/{p}"] += int(e)
        for t in self.pausable:
            counts[f"paused/{t}"] += int(t not in out.stepping)
        for c in (self.step_counts, self.epoch_counts, self.totals):
            c.update(counts)

    def read_interval(self, reduce: Callable[[Tensor], Tensor] | None = None) -> tuple[dict[str, float], dict[str, Any]]:
        """The means and shares since the last row, and the last step's modes; resets the interval."""
        means, counts = self.step.read(reduce), dict(self.step_counts)
        self.step_counts.clear()
        return means, {**shares(counts), "mode": {p: ("expert" if e else "learning") for p, e in self.last_expert.items()}}

    def read_epoch(self, reduce: Callable[[Tensor], Tensor] | None = None) -> tuple[dict[str, float], dict[str, int]]:
        """The epoch's means and counts; resets the epoch."""
        means, counts = self.epoch.read(reduce), dict(self.epoch_counts)
        self.epoch_counts.clear()
        return means, counts

    def progress(self, order: Iterable[str]) -> str:
        """Each network's mean loss and each pair's expert share so far this epoch (one host read)."""
        losses = nest(self.epoch.peek()).get("loss", {})
        parts = ["loss " + " ".join(f"{n} {losses[n]['loss']:.3f}" for n in order if "loss" in losses.get(n, {}))]
        steps = max(self.epoch_counts.get("steps", 0), 1)
        parts += [f"expert {k.split('/', 1)[1]} {v / steps:.1%}" for k, v in self.epoch_counts.items()
                  if k.startswith("expert/")]
        return "  ".join(parts)

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step.state_dict(), "epoch": self.epoch.state_dict(), "step_counts": dict(self.step_counts),
                "epoch_counts": dict(self.epoch_counts), "last_expert": dict(self.last_expert)}

    def load_state_dict(self, state: dict[str, Any], totals: dict[str, int], device: torch.device | str = "cpu") -> None:
        """Restore a checkpoint's sums and counts (v1 checkpoints have only the run totals)."""
        self.totals = Counter(totals)
        self.step.load_state_dict(state.get("step", []), device)
        self.epoch.load_state_dict(state.get("epoch", []), device)
        self.step_counts, self.epoch_counts = Counter(state.get("step_counts", {})), Counter(state.get("epoch_counts", {}))
        self.last_expert = dict(state.get("last_expert", {}))


def nest(flat: dict[str, float], sep: str = "/") -> dict[str, Any]:
    """{"loss/student/ce": 1.0} -> {"loss": {"student": {"ce": 1.0}}}."""
    out: dict[str, Any] = {}
    for k, v in flat.items():
        node = out
        *head, last = k.split(sep)
        for h in head:
            node = node.setdefault(h, {})
        node[last] = v
    return out
