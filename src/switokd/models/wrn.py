"""Wide ResNet WRN-d-k (Zagoruyko & Komodakis 2016), pre-activation blocks.

Initialised as mdistiller's ``mdistiller/models/cifar/wrn.py`` (megvii-research/mdistiller), which RepDistiller,
DIST's and UniOKD's repositories share: He-normal convolutions over fan-out, BatchNorm 1 and 0, PyTorch's
default ``nn.Linear`` weight with a zero bias (``layers.WRN_INIT``).
"""
from __future__ import annotations


import torch.nn.functional as F
from torch import nn

from .features import name_stages
from .layers import WRN_INIT, Classifier
from .registry import MODELS


class PreActBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.dropout = dropout
        self.shortcut = None if cin == cout and stride == 1 else nn.Conv2d(cin, cout, 1, stride, 0, bias=False)
        self.act1 = nn.ReLU()  # a module (no parameters) so that a hook can read the block's activated input

    def forward(self, x):
        o = self.act1(self.bn1(x))
        # The projection shortcut sees the pre-activated input, as in the reference WRN.
        shortcut = x if self.shortcut is None else self.shortcut(o)
        o = self.conv1(o)
        o = F.relu(self.bn2(o))
        if self.dropout:
            o = F.dropout(o, self.dropout, self.training)
        return self.conv2(o) + shortcut


def wide_resnet(depth: int, widen: int, num_classes: int, in_chans: int, dropout: float = 0.0) -> nn.Module:
    if (depth - 4) % 6:
        raise ValueError(f"WRN depth must be 6n+4, got {depth}")
    n = (depth - 4) // 6
    widths = [16 * widen, 32 * widen, 64 * widen]
    layers: list[nn.Module] = [nn.Conv2d(in_chans, 16, 3, 1, 1, bias=False)]
    cin = 16
    for w, s in zip(widths, [1, 2, 2]):
        for i in range(n):
            layers.append(PreActBlock(cin, w, s if i == 0 else 1, dropout))
            cin = w
    layers += [nn.BatchNorm2d(cin), nn.ReLU(inplace=True)]
    # Stage outputs are the blocks' raw residual sums (pre-activation blocks), as mdistiller's feats; a stage's
    # ":pre" is the BN that comes before the next ReLU (the next block's bn1, or the final BN), as its
    # preact_feats; ":act" is that ReLU's output, what the next stage sees (a post-activation family's stageK).
    stages = {"stem": "features.0", "pool": "pool"}
    for k in range(1, 4):
        stages[f"stage{k}"] = f"features.{k * n}"
        # The last BN's output is rectified in place by the final ReLU: its ":pre" is that ReLU's input.
        stages[f"stage{k}:pre"] = f"features.{k * n + 1}.bn1" if k < 3 else f"features.{3 * n + 2}:input"
        stages[f"stage{k}:bn"] = f"features.{k * n + 1}.bn1" if k < 3 else f"features.{3 * n + 1}"
        stages[f"stage{k}:act"] = f"features.{k * n + 1}.act1" if k < 3 else f"features.{3 * n + 2}"
    return name_stages(Classifier(nn.Sequential(*layers), cin, num_classes, WRN_INIT), stages)


def _entry(depth: int, widen: int):
    def fn(num_classes: int = 10, in_chans: int = 3, image_size: int = 32) -> nn.Module:
        return wide_resnet(depth, widen, num_classes, in_chans)

    fn.__doc__ = f"WRN-{depth}-{widen}."
    return fn


for _d, _k in [(16, 1), (16, 2), (16, 4), (16, 8), (16, 10), (28, 10), (40, 1), (40, 2), (40, 4)]:
    MODELS.register(f"wrn{_d}_{_k}")(_entry(_d, _k))
