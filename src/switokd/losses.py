"""Moved to ``switokd.core.losses``; this old import path is the same module."""
import sys

from .core import losses as _module

sys.modules[__name__] = _module
