"""Moved to ``switokd.train.checkpoint``; this old import path is the same module."""
import sys

from .train import checkpoint as _module

sys.modules[__name__] = _module
