"""Any timm model as a switokd network, through one factory and ``networks.NAME.model_args``.

    switokd train --config configs/fashion_mnist.yaml \
        networks.teacher.model=examples.timm_models:timm_model \
        "networks.teacher.model_args={name: resnet26d, pretrained: false}"

The arguments are saved with the run (config.yaml, the checkpoint), so ``switokd eval``, ``export`` and
``predict`` rebuild the same model. ``pretrained: true`` makes timm read its weights from its cache; it cannot
download them on a machine without network access, so put them in the cache first.

Install timm with torch pinned: an unpinned ``pip install timm`` pulls a torchvision that needs another torch
and replaces the one you have (on this project's CPU machines PyPI's torchvision for torch 2.13 is a CUDA
build that fails at import, so timm cannot be imported there at all; its tests use a stand-in zoo).
"""
from __future__ import annotations

from typing import Any

from torch import nn


def timm_model(num_classes: int, in_chans: int, image_size: int, *, name: str, pretrained: bool = False,
               **kwargs: Any) -> nn.Module:
    """``timm.create_model(name, ...)`` for switokd's data: its class count and input channels.

    Args:
        num_classes, in_chans, image_size: given by switokd from the data (timm's models adapt to the size).
        name: the timm model's name (``timm.list_models()``).
        pretrained: load timm's pretrained weights (timm adapts the stem and the head to in_chans and num_classes).
        **kwargs: any other ``timm.create_model`` argument (``drop_rate``, ``global_pool``, ...).
    """
    import timm

    return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans, **kwargs)
