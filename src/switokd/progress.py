"""Moved to ``switokd.train.progress``; this old import path is the same module."""
import sys

from .train import progress as _module

sys.modules[__name__] = _module
