"""Moved to ``switokd.train.signals``; this old import path is the same module."""
import sys

from .train import signals as _module

sys.modules[__name__] = _module
