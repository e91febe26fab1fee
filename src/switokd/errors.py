"""switokd's one error type. Every error the library raises for bad input or a failed run is a
``SwitokdError``: it carries the command line's exit code and the word its one-line message starts with, so
the CLI catches this one type and an embedding program can too.

Each subclass also derives from the built-in exception of its kind (``ConfigError`` is a ``ValueError``,
``CheckpointError`` a ``RuntimeError``), so that code catching those catches ours.

    exit 2  bad config, data, checkpoint, report input or argument
    exit 3  training diverged; int8 lost more accuracy than allowed
    exit 4  a checkpoint could not be written (the previous one is intact)
    130/143 interrupted by SIGINT/SIGTERM (a checkpoint was written)
"""
from __future__ import annotations


class SwitokdError(Exception):
    """Base of every switokd error. ``exit_code``: the CLI's; ``label``: how its message line starts."""

    exit_code: int = 2
    label: str = "error"


class ConfigError(SwitokdError, ValueError):
    """A configuration key or value is invalid."""


class UsageError(SwitokdError, ValueError):
    """A command-line argument is invalid."""


class DatasetError(SwitokdError, RuntimeError):
    """A data set is missing, unreadable or not in the expected format."""


class CheckpointError(SwitokdError, RuntimeError):
    """A checkpoint is missing, unreadable or does not fit the run."""


class CheckpointWriteError(CheckpointError):
    """A checkpoint could not be written (disk full, I/O error, read-only); the previous one is intact."""

    exit_code = 4


class ReportError(SwitokdError, ValueError):
    """A run directory cannot be read for a report, or a report's dependency is missing."""


class ExportError(SwitokdError, ValueError):
    """A model cannot be exported, or an exported file cannot be read."""


class AccuracyDropError(ExportError):
    """int8 lost more accuracy than allowed; no file was written."""

    exit_code = 3
    label = "refused"


class TrainingDiverged(SwitokdError, RuntimeError):
    """A loss or a parameter became non-finite; the last good checkpoint is kept."""

    exit_code = 3
    label = "diverged"
    run_state = "diverged"  # what status.json records when it ends a run


__all__ = ["SwitokdError", "ConfigError", "UsageError", "DatasetError", "CheckpointError", "CheckpointWriteError",
           "ReportError", "ExportError", "AccuracyDropError", "TrainingDiverged"]
