"""switokd's output: every line the library prints (run header, epoch lines, progress lines) goes to the
``logging`` logger ``"switokd"``.

By default that logger has one handler that writes the bare message to the current ``sys.stderr``, so a
script that embeds the trainer prints what the CLI prints. An embedding program routes the output elsewhere
with ``route``:

    >>> import logging, switokd.log
    >>> switokd.log.route()  # from now on "switokd" propagates to the program's own logging config
    >>> switokd.log.route(logging.FileHandler("train.log"))  # doctest: +SKIP

and silences it with ``logging.getLogger("switokd").setLevel(logging.WARNING)``. Warnings (an emulated
precision, for example) still go through ``warnings.warn``.
"""
from __future__ import annotations

import logging
import sys

logger = logging.getLogger("switokd")


class ConsoleHandler(logging.Handler):
    """The bare message to whatever ``sys.stderr`` is when the record is emitted (so pytest's capture, a
    redirected stream or a notebook all see it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:  # a closed stream must not stop training
            self.handleError(record)


def _install() -> None:
    if not any(isinstance(h, ConsoleHandler) for h in logger.handlers):
        logger.addHandler(ConsoleHandler())
    logger.propagate = False
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)


def route(handler: logging.Handler | None = None) -> None:
    """Send switokd's output to ``handler``, or (None) to the program's own logging configuration.

    Removes the default stderr handler; ``console()`` puts it back.
    """
    for h in [h for h in logger.handlers if isinstance(h, ConsoleHandler)]:
        logger.removeHandler(h)
    if handler is not None:
        logger.addHandler(handler)
        logger.propagate = False
    else:
        logger.propagate = True


def console() -> None:
    """Print switokd's output to stderr again (the default)."""
    _install()


_install()

__all__ = ["logger", "route", "console", "ConsoleHandler"]
