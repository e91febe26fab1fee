"""Moved to ``switokd.train.distributed``; this old import path is the same module."""
import sys

from .train import distributed as _module

sys.modules[__name__] = _module
