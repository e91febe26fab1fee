"""Moved to ``switokd.train.runinfo``; this old import path is the same module."""
import sys

from .train import runinfo as _module

sys.modules[__name__] = _module
