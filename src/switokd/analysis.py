"""Moved to ``switokd.runs.analysis``; this old import path is the same module."""
import sys

from .runs import analysis as _module

sys.modules[__name__] = _module
