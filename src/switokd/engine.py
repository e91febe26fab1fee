"""Moved to ``switokd.train.engine``; this old import path is the same module."""
import sys

from .train import engine as _module

sys.modules[__name__] = _module
