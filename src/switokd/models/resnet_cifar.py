"""CIFAR-style ResNet-(6n+2) (He et al. 2016): 16/32/64 channels, basic blocks.

Initialised as mdistiller's ``mdistiller/models/cifar/resnet.py`` (megvii-research/mdistiller; torchdistill's
``ResNet4Cifar`` and RepDistiller's ``models/resnet.py`` are the same): He-normal convolutions over fan-out,
BatchNorm 1 and 0, and PyTorch's default ``nn.Linear`` weight and bias (``layers.CIFAR_RESNET_INIT``).
"""
from __future__ import annotations

from torch import nn

from .features import name_stages
from .layers import CIFAR_RESNET_INIT, Classifier, conv_bn
from .registry import MODELS


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = conv_bn(cin, cout, 3, stride)
        self.conv2 = conv_bn(cout, cout, 3, 1, act=None)
        self.shortcut = (
            conv_bn(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else nn.Identity()
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


def make_stages(cin: int, widths: list[int], blocks: list[int], strides: list[int], block=BasicBlock) -> tuple[nn.Sequential, int]:
    layers = []
    for w, n, s in zip(widths, blocks, strides):
        for i in range(n):
            layers.append(block(cin, w, s if i == 0 else 1))
            cin = w
    return nn.Sequential(*layers), cin


def resnet_cifar(depth: int, num_classes: int, in_chans: int) -> nn.Module:
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
    n = (depth - 2) // 6
    stages, width = make_stages(16, [16, 32, 64], [n] * 3, [1, 2, 2])
    names = {"stem": "features.0", "pool": "pool"}
    for k in range(1, 4):  # a stage's ":pre": its last block's residual sum, before that block's in-place ReLU
        names[f"stage{k}"] = f"features.1.{k * n - 1}"
        names[f"stage{k}:pre"] = f"features.1.{k * n - 1}.relu:input"
        names[f"stage{k}:bn"] = f"features.1.{k * n - 1}.conv2.1"  # the BN before the residual sum (OFD's margin)
        names[f"stage{k}:act"] = names[f"stage{k}"]  # post-activation blocks: the output is already activated
    model = Classifier(nn.Sequential(conv_bn(in_chans, 16), stages), width, num_classes, CIFAR_RESNET_INIT)
    return name_stages(model, names)


@MODELS.register()
def resnet20(num_classes: int = 10, in_chans: int = 3, image_size: int = 32) -> nn.Module:
    """ResNet-20 (CIFAR style)."""
    return resnet_cifar(20, num_classes, in_chans)


@MODELS.register()
def resnet32(num_classes: int = 10, in_chans: int = 3, image_size: int = 32) -> nn.Module:
    """ResNet-32 (CIFAR style)."""
    return resnet_cifar(32, num_classes, in_chans)


@MODELS.register()
def resnet56(num_classes: int = 10, in_chans: int = 3, image_size: int = 32) -> nn.Module:
    """ResNet-56 (CIFAR style)."""
    return resnet_cifar(56, num_classes, in_chans)
