"""ImageNet-style ResNet-18/34 (He et al. 2016) under torchvision's parameter names, so that a torchvision or
timm ResNet state_dict loads as it is; a CIFAR-style stem (3x3, stride 1, no max-pool) for images up to 64 px.

Checkpoints written before these names (``features.0.0.0.weight`` ...) hold the same tensors in the same
order; ``upgrade_state_dict`` renames them by position, so they still load.

Initialised as torchvision's ``torchvision/models/resnet.py`` (pytorch/vision) with its default
``zero_init_residual=False``: He-normal convolutions over fan-out, BatchNorm 1 and 0, PyTorch's default
``nn.Linear`` weight and bias (``layers.RESNET_INIT``).
"""
from __future__ import annotations

from typing import Mapping

from torch import Tensor, nn

from .layers import RESNET_INIT, is_small_input
from .registry import MODELS


class BasicBlock(nn.Module):
    """torchvision's BasicBlock: conv1-bn1-relu, conv2-bn2, plus the (downsampled) input, relu."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    """conv1, bn1, relu, maxpool, layer1-4, avgpool, fc: torchvision's module names."""

    def __init__(self, blocks: list[int], num_classes: int, in_chans: int, image_size: int) -> None:
        super().__init__()
        self.small_input = is_small_input(image_size)
        k, stride = (3, 1) if self.small_input else (7, 2)
        self.conv1 = nn.Conv2d(in_chans, 64, k, stride, k // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity() if self.small_input else nn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, (w, n, s) in enumerate(zip([64, 128, 256, 512], blocks, [1, 2, 2, 2]), start=1):
            layer = []
            for j in range(n):
                layer.append(BasicBlock(cin, w, s if j == 0 else 1))
                cin = w
            setattr(self, f"layer{i}", nn.Sequential(*layer))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        RESNET_INIT.apply(self)
        # A stage's ":pre" is its last block's residual sum, read before the block's in-place ReLU rectifies it.
        self.feature_stages = {"stem": "maxpool", "pool": "avgpool",
                               **{f"stage{i}": f"layer{i}" for i in range(1, 5)},
                               **{f"stage{i}:act": f"layer{i}" for i in range(1, 5)},
                               **{f"stage{i}:pre": f"layer{i}.{n - 1}.relu:input" for i, n in enumerate(blocks, 1)},
                               **{f"stage{i}:bn": f"layer{i}.{n - 1}.bn2" for i, n in enumerate(blocks, 1)}}

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))

    def sequence(self) -> list[tuple[str, nn.Module]]:
        """The forward as a plain sequence of (path, module), for splitting into a trunk and branches."""
        return [(n, getattr(self, n)) for n in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3",
                                                "layer4", "avgpool")] + [("flatten", nn.Flatten(1)), ("fc", self.fc)]

    def upgrade_state_dict(self, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """A state_dict of switokd's earlier layout (``features.*``, ``fc.*``), renamed by position; any other
        state_dict as it is."""
        if not any(k.startswith("features.") for k in state):
            return dict(state)
        own = list(self.state_dict())
        old = list(state)
        if len(old) != len(own):
            return dict(state)  # not that layout after all: let the loader name what does not fit
        return {new: state[k] for new, k in zip(own, old)}

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # type: ignore[override]
        return super().load_state_dict(self.upgrade_state_dict(state_dict), strict=strict, assign=assign)


@MODELS.register()
def resnet18(num_classes: int = 1000, in_chans: int = 3, image_size: int = 224) -> nn.Module:
    """ResNet-18 (torchvision's names)."""
    return ResNet([2, 2, 2, 2], num_classes, in_chans, image_size)


@MODELS.register()
def resnet34(num_classes: int = 1000, in_chans: int = 3, image_size: int = 224) -> nn.Module:
    """ResNet-34 (torchvision's names)."""
    return ResNet([3, 4, 6, 3], num_classes, in_chans, image_size)
