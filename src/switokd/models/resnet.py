"""ImageNet-style ResNet-18/34 (He et al. 2016); CIFAR-style stem for images up to 64 px."""
from __future__ import annotations

from torch import nn

from .layers import Classifier, conv_bn, is_small_input
from .registry import MODELS
from .resnet_cifar import make_stages


def resnet_imagenet(blocks: list[int], num_classes: int, in_chans: int, image_size: int) -> nn.Module:
    if is_small_input(image_size):
        stem = conv_bn(in_chans, 64, 3, 1)
    else:
        stem = nn.Sequential(conv_bn(in_chans, 64, 7, 2), nn.MaxPool2d(3, 2, 1))
    stages, width = make_stages(64, [64, 128, 256, 512], blocks, [1, 2, 2, 2])
    return Classifier(nn.Sequential(stem, stages), width, num_classes)


@MODELS.register()
def resnet18(num_classes: int = 1000, in_chans: int = 3, image_size: int = 224) -> nn.Module:
    """ResNet-18."""
    return resnet_imagenet([2, 2, 2, 2], num_classes, in_chans, image_size)


@MODELS.register()
def resnet34(num_classes: int = 1000, in_chans: int = 3, image_size: int = 224) -> nn.Module:
    """ResNet-34."""
    return resnet_imagenet([3, 4, 6, 3], num_classes, in_chans, image_size)
