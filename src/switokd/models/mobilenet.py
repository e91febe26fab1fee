"""MobileNet (v1, Howard et al. 2017) and MobileNetV2 (Sandler et al. 2018) with a width multiplier.

MobileNetV2 is initialised as torchvision's ``torchvision/models/mobilenetv2.py`` (pytorch/vision; mdistiller's
``mdistiller/models/cifar/mobilenetv2.py`` has the same classifier): He-normal convolutions over fan-out,
BatchNorm 1 and 0, the classifier normal(0, 0.01) with a zero bias (``layers.MOBILENETV2_INIT``). MobileNet v1
has no torchvision reference; it is initialised as mdistiller's ``mdistiller/models/imagenet/mobilenetv1.py``
(the MobileNet of DKD's ResNet-50 -> MobileNet pair), which keeps PyTorch's defaults throughout
(``layers.MOBILENET_INIT``).
"""
from __future__ import annotations

from torch import nn

from .features import name_stages
from .layers import MOBILENET_INIT, MOBILENETV2_INIT, Classifier, conv_bn, is_small_input
from .registry import MODELS


def _divisible(v: float, divisor: int = 8) -> int:
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn(cin, hidden, 1, act=nn.ReLU6))
        layers += [
            conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
            conv_bn(hidden, cout, 1, act=None),
        ]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.block(x) if self.residual else self.block(x)


def _stride(m: nn.Module) -> int:
    """The largest stride of a layer's convolutions (2 where it downsamples)."""
    return max((c.stride[0] for c in m.modules() if isinstance(c, nn.Conv2d)), default=1)


def resolution_stages(features: nn.Sequential, pre) -> dict[str, str]:
    """Stage names for a plain sequence of layers: ``stem`` (layer 0), then a stage per resolution, each ending
    at the last layer before the next downsampling (and the last layer), and ``pool``."""
    layers = list(features)
    ends = [i for i in range(1, len(layers)) if i == len(layers) - 1 or _stride(layers[i + 1]) > 1]
    names = {"stem": "features.0", "pool": "pool"}
    for k, i in enumerate(ends, 1):
        names[f"stage{k}"] = f"features.{i}"
        names[f"stage{k}:pre"] = pre(i, layers[i])
        if names[f"stage{k}:pre"].endswith(".2:input"):  # a conv-BN-activation stage: its BN (OFD's margin)
            names[f"stage{k}:bn"] = f"features.{i}.1"
    return names


# (expansion t, channels c, repeats n, stride s) from the MobileNetV2 paper.
_V2_CFG = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def mobilenet_v2(width: float, num_classes: int, in_chans: int, image_size: int) -> nn.Module:
    small = is_small_input(image_size)
    cin = _divisible(32 * width)
    # Small images: stride-1 stem and stride-1 second stage (the common CIFAR adaptation).
    layers: list[nn.Module] = [conv_bn(in_chans, cin, 3, 1 if small else 2, act=nn.ReLU6)]
    for i, (t, c, n, s) in enumerate(_V2_CFG):
        cout = _divisible(c * width)
        if small and i == 1:
            s = 1
        for j in range(n):
            layers.append(InvertedResidual(cin, cout, s if j == 0 else 1, t))
            cin = cout
    last = _divisible(1280 * max(1.0, width))
    layers.append(conv_bn(cin, last, 1, act=nn.ReLU6))
    model = Classifier(nn.Sequential(*layers), last, num_classes, MOBILENETV2_INIT)
    # The inverted residuals end linearly: a stage ending in one is its own pre-activation; a conv-BN-ReLU6
    # stage's is its activation's input (the BN's output is rectified in place).
    return name_stages(model, resolution_stages(model.features, pre=lambda i, m: f"features.{i}"
                                                if isinstance(m, InvertedResidual) else f"features.{i}.2:input"))


def mobilenet_v1(width: float, num_classes: int, in_chans: int, image_size: int) -> nn.Module:
    small = is_small_input(image_size)
    # (channels, stride) of each depthwise-separable block.
    cfg = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
    cin = int(32 * width)
    layers: list[nn.Module] = [conv_bn(in_chans, cin, 3, 1 if small else 2)]
    for c, s in cfg:
        cout = int(c * width)
        layers += [conv_bn(cin, cin, 3, s, groups=cin), conv_bn(cin, cout, 1)]
        cin = cout
    model = Classifier(nn.Sequential(*layers), cin, num_classes, MOBILENET_INIT)
    return name_stages(model, resolution_stages(model.features, pre=lambda i, m: f"features.{i}.2:input"))


def _v2(width: float):
    def fn(num_classes: int = 10, in_chans: int = 3, image_size: int = 32) -> nn.Module:
        return mobilenet_v2(width, num_classes, in_chans, image_size)

    fn.__doc__ = f"MobileNetV2 x{width}."
    return fn


for _w in (0.5, 0.75, 1.0, 1.4):
    MODELS.register(f"mobilenetv2_x{_w}")(_v2(_w))


@MODELS.register()
def mobilenet(num_classes: int = 10, in_chans: int = 3, image_size: int = 32) -> nn.Module:
    """MobileNet (v1) x1.0."""
    return mobilenet_v1(1.0, num_classes, in_chans, image_size)


@MODELS.register()
def mobilenet_x0_5(num_classes: int = 10, in_chans: int = 3, image_size: int = 32) -> nn.Module:
    """MobileNet (v1) x0.5."""
    return mobilenet_v1(0.5, num_classes, in_chans, image_size)
