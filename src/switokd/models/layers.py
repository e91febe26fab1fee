"""Small building blocks shared by the model families, and each family's reference initialisation.

Every family starts as its reference code starts it (``InitScheme``); the scheme, with the repository and file
it restates, is kept on the model as ``model.init_scheme`` so that a test (and a curious user) can check it.
The schemes differ mostly in the classifier: the WRN and ResNet references keep PyTorch's default
``nn.Linear`` init (weight and bias uniform in ±1/sqrt(fan_in)), MobileNetV2's draws normal(0, 0.01). The
classifier's scale sets the initial logits' scale, and scale-invariant losses (DIST, logit standardization)
have gradients that grow as 1 / that scale, so it matters (docs/method.md, "Initialisation").
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: type[nn.Module] | None = nn.ReLU) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act is not None:
        layers.append(act(inplace=True))
    return nn.Sequential(*layers)


def is_small_input(image_size: int) -> bool:
    """CIFAR-style stems (stride 1, no max-pool) for images up to 64 px."""
    return image_size <= 64


@dataclass(frozen=True)
class InitScheme:
    """How a family's reference code initialises its weights.

    Args:
        conv: ``"kaiming_fan_out"`` (He normal over fan-out, for ReLU: std sqrt(2 / (k*k*out_channels)), which
            is also the references' ``normal_(0, sqrt(2/n))``) or ``"default"`` (PyTorch's own Conv2d init).
        linear_weight: ``"default"`` (PyTorch's: uniform in ±1/sqrt(fan_in)) or ``"normal_0.01"``.
        linear_bias: ``"default"`` (uniform in ±1/sqrt(fan_in)) or ``"zero"``.
        reference: the repository and file whose init this restates.
    """

    conv: str
    linear_weight: str
    linear_bias: str
    reference: str

    def apply(self, model: nn.Module) -> None:
        """Initialise ``model``'s freshly built layers (weights loaded later replace them: a resumed or
        fine-tuned run is not affected)."""
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                if self.conv == "kaiming_fan_out":
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
                # "default": as nn.Conv2d built it.
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                if self.linear_weight == "normal_0.01":
                    nn.init.normal_(m.weight, 0, 0.01)
                if self.linear_bias == "zero" and m.bias is not None:
                    nn.init.zeros_(m.bias)
        model.init_scheme = self  # type: ignore[assignment]


# The families' schemes, each restated from the reference file it names (docs/method.md, "Initialisation", quotes them).
WRN_INIT = InitScheme("kaiming_fan_out", "default", "zero", "megvii-research/mdistiller mdistiller/models/cifar/wrn.py "
                      "(the same code in RepDistiller models/wrn.py, DIST's image_classification_sota "
                      "lib/models/cifar/wrn.py and UniOKD's models/wrn.py)")
CIFAR_RESNET_INIT = InitScheme("kaiming_fan_out", "default", "default", "megvii-research/mdistiller "
                               "mdistiller/models/cifar/resnet.py (the same in torchdistill's ResNet4Cifar and "
                               "RepDistiller models/resnet.py)")
RESNET_INIT = InitScheme("kaiming_fan_out", "default", "default", "pytorch/vision torchvision/models/resnet.py "
                         "(zero_init_residual=False, its default)")
MOBILENETV2_INIT = InitScheme("kaiming_fan_out", "normal_0.01", "zero", "pytorch/vision "
                              "torchvision/models/mobilenetv2.py (the same classifier in mdistiller "
                              "mdistiller/models/cifar/mobilenetv2.py)")
MOBILENET_INIT = InitScheme("default", "default", "default", "megvii-research/mdistiller "
                            "mdistiller/models/imagenet/mobilenetv1.py (no init of its own: PyTorch's defaults)")


class Classifier(nn.Module):
    """features -> global average pool -> linear: the head every family ends with, initialised by ``init``
    (default: torchvision's ResNet scheme, ``RESNET_INIT``)."""

    def __init__(self, features: nn.Module, width: int, num_classes: int, init: InitScheme | None = None) -> None:
        super().__init__()
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)
        (init or RESNET_INIT).apply(self)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))

    def sequence(self) -> list[tuple[str, nn.Module]]:
        """The forward as a plain sequence of (path, module), for splitting into a trunk and branches."""
        return [("features", self.features), ("pool", self.pool), ("flatten", nn.Flatten(1)), ("fc", self.fc)]
