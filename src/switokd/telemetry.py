"""Structured metrics: device-side accumulators read at the log interval, JSONL writers."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor


class Meter:
    """Sums of 0-d tensors kept on their device; ``read`` syncs once for all of them."""

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, key: str, value: Tensor) -> None:
        v = value.detach().float()
        if key in self.sums:
            self.sums[key] += v
            self.counts[key] += 1
        else:
            self.sums[key] = v.clone()
            self.counts[key] = 1

    def read(self) -> dict[str, float]:
        """Means per key (one host synchronisation), then reset."""
        if not self.sums:
            return {}
        keys = list(self.sums)
        values = torch.stack([self.sums[k] for k in keys]).tolist()
        out = {k: v / self.counts[k] for k, v in zip(keys, values)}
        self.sums.clear()
        self.counts.clear()
        return out


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
    """Appends one JSON object per line; flushed each write so a killed run keeps its rows."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.f = open(self.path, "a", encoding="utf-8")

    def write(self, row: dict[str, Any]) -> None:
        self.f.write(json.dumps(_clean(row)) + "\n")
        self.f.flush()

    def close(self) -> None:
        self.f.close()


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
