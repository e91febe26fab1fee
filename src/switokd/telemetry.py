"""Structured metrics: device-side accumulators read at the log interval, JSONL writers."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor


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


def _clean(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


class JsonlWriter:
    """Appends one JSON object per line; flushed each write so a killed run keeps its rows.

    ``truncate_to`` (on resume) drops the rows written after the checkpoint being resumed,
    whose size in bytes ``tell`` gave when it was saved: no row is then duplicated or lost.
    """

    def __init__(self, path: str | Path, truncate_to: int | None = None) -> None:
        self.path = Path(path)
        if truncate_to is not None and self.path.is_file() and self.path.stat().st_size > truncate_to:
            with open(self.path, "r+b") as f:
                f.truncate(truncate_to)
        self.f = open(self.path, "a", encoding="utf-8")

    def write(self, row: dict[str, Any]) -> None:
        self.f.write(json.dumps(_clean(row)) + "\n")
        self.f.flush()

    def tell(self) -> int:
        return self.f.tell()

    def close(self) -> None:
        self.f.close()


class NullWriter:
    """A writer that drops every row (runs that write no files)."""

    def write(self, row: dict[str, Any]) -> None:
        pass

    def tell(self) -> int:
        return 0

    def close(self) -> None:
        pass


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
