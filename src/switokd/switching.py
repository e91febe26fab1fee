"""Moved to ``switokd.core.switching``; this old import path is the same module."""
import sys

from .core import switching as _module

sys.modules[__name__] = _module
