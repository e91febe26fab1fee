"""SIGTERM and SIGINT end a run cleanly: the current step finishes, a checkpoint is written, and the run
exits with 128 + the signal's number (143 or 130). A second signal stops at once."""
from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any, Callable

from ..errors import SwitokdError


class Interrupted(SwitokdError):
    """The run stopped on a signal after writing a checkpoint; ``exit_code`` is 128 + signum."""

    label = ""  # its message says what happened

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


class StopSignals:
    """Within ``with StopSignals() as stop``, SIGTERM/SIGINT set ``stop.signum`` instead of killing the process."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Callable | int | None] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:  # a second signal: the user wants out now
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> "StopSignals":
        # Handlers can only be set from the main thread; elsewhere (a notebook's worker thread) run without them.
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        self._previous.clear()

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""


class StopControl:
    """When a run stops and checkpoints inside an epoch, agreed by every rank.

    Under several processes the ranks agree every ``every`` steps (one small collective), so that they all
    stop, or all write, at the same step; a signal one rank received stops them all.
    """

    def __init__(self, dist: Any, every: int = 10) -> None:
        self.dist, self.every = dist, every
        self.signals: StopSignals | None = None
        self.resume_hint: str | None = None  # how to continue, where not `switokd train --resume` (a race's trial)

    @property
    def requested(self) -> bool:
        return self.signals is not None and self.signals.signum is not None

    def checkpoint_now(self, due: bool, step: int) -> bool:
        """Whether to write a checkpoint inside the epoch now: it is ``due``, or a signal asks to stop."""
        stop = self.requested
        if not self.dist.enabled:
            return due or stop
        if step % self.every:
            return False
        due, stop = self.dist.any([due, stop])
        if stop:
            self.agree(True)
        return due or stop

    def agree(self, stop: bool | None = None) -> None:
        """Several processes: a signal any rank received stops every rank (at an epoch's end, one collective)."""
        if stop is None:
            if not self.dist.enabled:
                return
            (stop,) = self.dist.any([self.requested])
        if stop and self.signals is not None and self.signals.signum is None:
            self.signals.signum = signal.SIGTERM  # another rank was signalled

    def raise_if_stopped(self, epoch: int, step: int, where: Any) -> None:
        if self.requested:
            assert self.signals is not None
            how = self.resume_hint or (f"switokd train --resume {where}" if where else "")
            raise Interrupted(self.signals.signum, f"stopped by {self.signals.name} at epoch {epoch + 1}, step {step}"
                              + (f"; checkpoint written. Continue with: {how}" if where else ""))
