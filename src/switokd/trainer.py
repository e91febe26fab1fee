"""Moved to ``switokd.train.trainer``; this old import path is the same module."""
import sys

from .train import trainer as _module

sys.modules[__name__] = _module
