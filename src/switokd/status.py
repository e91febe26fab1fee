"""Moved to ``switokd.runs.status``; this old import path is the same module."""
import sys

from .runs import status as _module

sys.modules[__name__] = _module
