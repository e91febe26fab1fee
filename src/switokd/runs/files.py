"""A run directory's files: their names (the one place they are spelled), and reading them back.

Everything under ``switokd.runs`` reads finished or running run directories; none of it imports torch or
the training runtime, so a report, a status check or a results table runs anywhere the logs are.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Mapping

from ..errors import ReportError

CONFIG = "config.yaml"  # the resolved config, run conditions in its first comment line
STEPS = "steps.jsonl"  # a row every train.log_interval steps
EPOCHS = "epochs.jsonl"  # a row per epoch
REPORT = "report.json"  # written when the run finishes
RUN_STATE = "status.json"  # running / finished / stopped / diverged, for switokd status
LAST = "last.pt"  # the whole training state, for --resume
BEST = "best.pt"  # the same at the students' best test accuracy
TENSORBOARD = "tensorboard"  # event files (train.tensorboard)
REPORT_DIR = "report"  # switokd report's HTML page and figures


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Every row of a JSON-lines file."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@dataclass
class RunLogs:
    """One run's logs, as written by the trainer."""

    name: str
    path: Path
    epochs: list[dict[str, Any]]
    steps: list[dict[str, Any]]
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def pairs(self) -> list[str]:
        return sorted({p for row in self.steps for p in row.get("pair", {})})

    @property
    def networks(self) -> list[str]:
        nets = list(self.report.get("networks", {}))
        for e in self.epochs:
            nets += [n for n in e.get("test", {}) if n not in nets]
        return nets


def read_run(path: str | Path) -> RunLogs:
    """A run directory's logs; ``ReportError`` if it has none."""
    path = Path(path)
    if not path.is_dir():
        raise ReportError(f"{path} is not a run directory")
    if not (path / EPOCHS).is_file():
        raise ReportError(f"{path} has no {EPOCHS}: not a switokd run directory, or no epoch finished yet")
    try:
        epochs = read_jsonl(path / EPOCHS)
        steps = read_jsonl(path / STEPS) if (path / STEPS).is_file() else []
        report = json.loads((path / REPORT).read_text()) if (path / REPORT).is_file() else {}
    except (OSError, ValueError) as e:
        raise ReportError(f"{path}: unreadable log ({e})") from None
    return RunLogs(path.name, path, epochs, steps, report)


def pair_means(epochs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Each pair's logged statistics averaged over a run's epochs, weighted by their steps (report.json's
    ``switch_stats``; the same from ``epochs.jsonl`` for a run that has no report yet)."""
    sums: dict[str, dict[str, float]] = {}
    weights: dict[str, float] = {}
    for h in epochs:
        w = h.get("steps", 1)
        for p, stats in h.get("train", {}).get("pair", {}).items():
            acc = sums.setdefault(p, {})
            for k, v in stats.items():
                acc[k] = acc.get(k, 0.0) + w * v
            weights[p] = weights.get(p, 0.0) + w
    return {p: {k: v / weights[p] for k, v in acc.items()} for p, acc in sums.items()}


def write_atomic(path: str | Path, content: str | bytes | Callable[[IO[bytes]], None], *, sync: bool = False) -> None:
    """Write ``content`` (text, bytes, or a function writing into the open binary file) to a temporary file
    beside ``path``, then rename it over ``path``: a reader, and a crash, never see half a file. ``sync``
    flushes it to disk before the rename (checkpoints). The temporary name carries the process id, so that
    several writers (machines sharing a directory) never share one. On an ``OSError`` the temporary file is
    removed and the error raised; ``path`` is as it was."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content.encode("utf-8") if isinstance(content, str) else content)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise


def students_mean(accs: Mapping[str, float | None], roles: Mapping[str, str]) -> float | None:
    """The students' mean of per-network accuracies (every network's, where none is a student); None when one
    of them was not measured. The one definition behind best.pt, the race's rungs and its ranking."""
    nets = [n for n in accs if roles.get(n) == "student"] or list(accs)
    values = [accs[n] for n in nets]
    if not values or any(v is None for v in values):
        return None
    return sum(values) / len(values)  # type: ignore[arg-type]


__all__ = ["write_atomic", "students_mean", "CONFIG", "STEPS", "EPOCHS", "REPORT", "RUN_STATE", "LAST", "BEST", "TENSORBOARD", "REPORT_DIR",
           "read_jsonl", "RunLogs", "read_run", "pair_means", "ReportError"]
