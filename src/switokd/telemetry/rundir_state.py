"""``RUN_DIR/status.json``: where a run is, for ``switokd status``."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Callable, Iterator

from ..runs.files import RUN_STATE, write_atomic
from .sinks import _clean


def write_run_state(run_dir: Path, state: str, **info: Any) -> None:
    """``RUN_DIR/status.json``: running (with this process's pid and host), finished, stopped or diverged, for
    ``switokd status``. Written whole and renamed, so a reader never sees half a file."""
    import os
    import socket
    import time

    row = {"state": state, "time": time.time(), "pid": os.getpid(), "host": socket.gethostname(), **info}
    write_atomic(run_dir / RUN_STATE, json.dumps(_clean(row)))


@contextlib.contextmanager
def recording_state(close: Callable[[str, str], None], done: str = "finished") -> Iterator[None]:
    """Run the body, then ``close(state, reason)``: ``done`` ("finished", or "paused" for a run stopped at an
    epoch it was asked to stop at), or what the exception that ended it says (its ``run_state`` attribute, e.g.
    diverged; stopped otherwise) with its message."""
    state, reason = "stopped", "an error"
    try:
        yield
        state, reason = done, ""
    except BaseException as e:
        state, reason = getattr(e, "run_state", "stopped"), str(e) or type(e).__name__
        raise
    finally:
        close(state, reason)
