"""SIGTERM and SIGINT end a run cleanly: the current step finishes, a checkpoint is written, and the run
exits with 128 + the signal's number (143 or 130). A second signal stops at once."""
from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Callable

from .errors import SwitokdError


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
