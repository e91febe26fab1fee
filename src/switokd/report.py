"""Moved to ``switokd.runs.report``; this old import path is the same module."""
import sys

from .runs import report as _module

sys.modules[__name__] = _module
