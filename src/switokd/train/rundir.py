"""A run directory's lifecycle: created with ``config.yaml``, its sinks opened (at the checkpoint's position
on resume), ``status.json`` while it runs and when it ends, checkpoints written atomically, ``report.json``.
Only rank 0 writes; the other ranks hold a ``RunDirectory`` that writes nothing."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from .. import config as C
from .checkpoint import save_atomic
from ..errors import CheckpointError
from ..runs import files as F
from ..telemetry import RunWriters, write_run_state


class RunDirectory:
    """Where a run writes. ``path`` None: ``train.out_dir/train.run_name`` (default ``<method>-<data>-<time>``)."""

    def __init__(self, path: str | Path | None, writable: bool) -> None:
        self.path = Path(path) if path else None
        self.writable = writable
        self.logs = RunWriters()
        # Called before every write; raises when this process may no longer write here (a race worker whose
        # segment was given to another after a missed lease), so that nothing it writes lands beside the other's.
        self.guard: Callable[[], None] | None = None

    def _check(self) -> None:
        if self.guard is not None:
            self.guard()

    def open(self, cfg: C.Config, loggers: list[str], offsets: dict[str, Any] | None, facts: dict[str, int]) -> None:
        """Create the directory and open its sinks; ``offsets`` (resume) cuts the logs back to the checkpoint."""
        if not self.writable:
            return
        self._check()
        if self.path is None:
            name = cfg.train.run_name or f"{cfg.method.name}-{cfg.data.name}-{time.strftime('%Y%m%d-%H%M%S')}"
            self.path = Path(cfg.train.out_dir) / name
            if (self.path / F.LAST).exists() and offsets is None:
                raise CheckpointError(
                    f"run directory {self.path} already holds a checkpoint; continue it with "
                    f"`switokd train --resume {self.path}` or choose another train.run_name")
        self.path.mkdir(parents=True, exist_ok=True)
        C.dump_yaml(cfg, self.path / F.CONFIG)
        # On resume, rows written after the checkpoint (before a kill) are dropped: they will be written again.
        self.logs = RunWriters(self.path, offsets, loggers, C.yaml_text(cfg))
        write_run_state(self.path, "running", **facts)

    def step(self, row: dict[str, Any]) -> None:
        self._check()
        self.logs.step(row)

    def epoch(self, row: dict[str, Any], step: int) -> None:
        self._check()
        self.logs.epoch(row, step)

    def close(self, state: str, reason: str, facts: dict[str, int]) -> None:
        self.logs.close()
        self.logs = RunWriters()
        try:
            self._check()
        except Exception:  # no longer this process's directory: its status is the new owner's to write
            return
        if self.writable and self.path is not None and self.path.is_dir():
            write_run_state(self.path, state, reason=reason, **facts)

    def save_checkpoint(self, state: dict[str, Any], best: bool) -> Path | None:
        if not self.writable or self.path is None:
            return None
        self._check()
        path = self.path / F.LAST
        save_atomic(state, path)
        if best:
            save_atomic(state, self.path / F.BEST)
        return path

    def write_report(self, report: dict[str, Any]) -> None:
        if self.writable and self.path is not None:
            self._check()
            (self.path / F.REPORT).write_text(json.dumps(report, indent=2))
