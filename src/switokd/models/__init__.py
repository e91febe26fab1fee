"""Model registry. Every entry point is ``fn(num_classes, in_chans, image_size) -> nn.Module``."""
from __future__ import annotations

from torch import nn

from .registry import MODELS
from . import resnet_cifar, wrn, mobilenet, resnet  # noqa: F401  (register entry points)


def create_model(name: str, num_classes: int = 10, in_chans: int = 3, image_size: int = 32) -> nn.Module:
    """Build a registered model for inputs of ``in_chans`` x ``image_size`` x ``image_size``."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    return MODELS.get(name)(num_classes=num_classes, in_chans=in_chans, image_size=image_size)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["MODELS", "create_model", "count_parameters"]
