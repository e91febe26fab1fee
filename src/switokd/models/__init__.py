"""Model registry. Every entry point is ``fn(num_classes, in_chans, image_size) -> nn.Module``.

A model is named by its registry name (``switokd list models``), or by ``package.module:factory``, an
importable callable with the same signature: your own model, with no change to switokd.
"""
from __future__ import annotations

import importlib
import os
import sys
from typing import Any, Callable

import torch  # noqa: F401  (the docstring's example)

from torch import nn

from .registry import MODELS
from . import resnet_cifar, wrn, mobilenet, resnet  # noqa: F401  (register entry points)

ModelFactory = Callable[..., nn.Module]


def register_model(fn: ModelFactory | str | None = None, *, name: str | None = None):
    """Register a model factory ``fn(num_classes, in_chans, image_size) -> nn.Module`` under its name.

    Use as ``@register_model``, ``@register_model("name")`` or ``register_model(fn, name="name")``;
    a name already taken is an error.
    """
    if fn is None or isinstance(fn, str):
        return lambda f: register_model(f, name=fn if isinstance(fn, str) else name)
    MODELS.register(name or fn.__name__)(fn)
    return fn


def resolve_factory(spec: str) -> ModelFactory:
    """``package.module:factory`` to the callable; ``KeyError`` with the reason if it cannot be imported."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise KeyError(f"model {spec!r}: expected package.module:factory")
    try:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            # Like `python -m`, let a module in the working directory be found from the console script too.
            if e.name != module_name.split(".")[0] or os.getcwd() in sys.path:
                raise
            sys.path.insert(0, os.getcwd())
            module = importlib.import_module(module_name)
    except Exception as e:  # an import error or one raised by the module's own code
        raise KeyError(f"model {spec!r}: cannot import {module_name} ({type(e).__name__}: {e})") from None
    fn = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise KeyError(f"model {spec!r}: {module_name} has no attribute {attr!r}")
    if not callable(fn):
        raise KeyError(f"model {spec!r}: {attr} is not callable")
    return fn  # type: ignore[return-value]


def create_model(name: str, /, num_classes: int = 10, in_chans: int = 3, image_size: int = 32,
                 **model_args: Any) -> nn.Module:
    """Build a registered model (or ``package.module:factory``) for ``in_chans`` x ``image_size``^2 inputs.

    Args:
        name: a registered name (``list_models()``) or ``package.module:factory``.
        num_classes, in_chans, image_size: what the data needs; every factory takes them.
        **model_args: further keyword arguments for the factory (``networks.NAME.model_args``), so that one
            factory can wrap a whole model zoo, e.g. ``timm.create_model(name, ...)``.

    Example:
        >>> from switokd import create_model
        >>> create_model("resnet20", num_classes=10, in_chans=1, image_size=28)(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    factory = resolve_factory(name) if ":" in name else MODELS.get(name)
    try:
        model = factory(num_classes=num_classes, in_chans=in_chans, image_size=image_size, **model_args)
    except TypeError as e:
        wants = "num_classes, in_chans and image_size" + (f" and {', '.join(model_args)}" if model_args else "")
        raise KeyError(f"model {name!r} must accept {wants} ({e})") from None
    if not isinstance(model, nn.Module):
        raise KeyError(f"model {name!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def list_models() -> list[str]:
    """The registered models' names (``switokd list models``)."""
    return MODELS.names()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["MODELS", "create_model", "list_models", "count_parameters", "register_model", "resolve_factory"]
