"""Every registered model starts as its family's reference code starts it (models/layers.py, InitScheme).

The expected scheme per family is written out here, apart from the models' code, and each model's weights are
checked against the reference formula: the classifier's weight std and bounds, its bias, and the convolutions'
std (He normal over fan-out, or PyTorch's default).
"""
import math

import pytest
import torch
from torch import nn

from switokd import create_model, list_models
from switokd.models.layers import InitScheme


def expected(name: str) -> tuple[str, str, str, str]:
    """(conv, linear weight, linear bias, the reference's repository) for a registered model's family."""
    if name.startswith("wrn"):
        return "kaiming_fan_out", "default", "zero", "mdistiller/models/cifar/wrn.py"
    if name in ("resnet20", "resnet32", "resnet56"):
        return "kaiming_fan_out", "default", "default", "mdistiller/models/cifar/resnet.py"
    if name in ("resnet18", "resnet34"):
        return "kaiming_fan_out", "default", "default", "torchvision/models/resnet.py"
    if name.startswith("mobilenetv2"):
        return "kaiming_fan_out", "normal_0.01", "zero", "torchvision/models/mobilenetv2.py"
    if name.startswith("mobilenet"):
        return "default", "default", "default", "mdistiller/models/imagenet/mobilenetv1.py"
    raise AssertionError(f"no reference init written down for {name!r}: add its family here")


def _close(value: float, target: float, rel: float, what: str) -> None:
    assert abs(value - target) <= rel * target, f"{what}: {value:.5f}, expected {target:.5f} ± {rel:.0%}"


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_has_its_familys_reference_init(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=100, in_chans=3, image_size=32)
    conv, weight, bias, reference = expected(name)
    scheme = model.init_scheme
    assert isinstance(scheme, InitScheme)
    assert (scheme.conv, scheme.linear_weight, scheme.linear_bias) == (conv, weight, bias)
    assert reference in scheme.reference
    fc = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    fan_in = fc.in_features
    w, b = fc.weight.detach(), fc.bias.detach()
    if weight == "default":  # kaiming_uniform_(a=sqrt(5)): uniform in ±1/sqrt(fan_in), std 1/sqrt(3 fan_in)
        assert w.abs().max() <= 1 / math.sqrt(fan_in) + 1e-7
        _close(w.std().item(), 1 / math.sqrt(3 * fan_in), 0.1, f"{name} classifier weight std")
    else:
        _close(w.std().item(), 0.01, 0.1, f"{name} classifier weight std")
    if bias == "zero":
        assert torch.count_nonzero(b) == 0
    else:  # uniform in ±1/sqrt(fan_in)
        assert b.abs().max() <= 1 / math.sqrt(fan_in) + 1e-7 and torch.count_nonzero(b) == len(b)
    # The largest convolution has the most samples for its std.
    c = max((m for m in model.modules() if isinstance(m, nn.Conv2d)), key=lambda m: m.weight.numel())
    k = c.kernel_size[0] * c.kernel_size[1]
    if conv == "kaiming_fan_out":
        target = math.sqrt(2.0 / (k * c.out_channels))
    else:  # PyTorch's Conv2d default: kaiming_uniform_(a=sqrt(5)) over fan-in
        target = 1 / math.sqrt(3 * k * c.in_channels // c.groups)
    _close(c.weight.detach().std().item(), target, 0.05, f"{name} conv weight std")
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)


def test_the_default_pair_starts_with_logits_at_the_references_scale():
    """The measurement behind the change (issue 28): with normal(0, 0.01) classifiers the default pair's initial
    logits had a std of 0.03-0.07; the references' init gives several times that."""
    torch.manual_seed(0)
    x = torch.randn(256, 1, 28, 28)
    for name in ("wrn16_1", "wrn16_2", "resnet20"):
        model = create_model(name, num_classes=10, in_chans=1, image_size=28).eval()
        with torch.no_grad():
            std = model(x).std(dim=1).mean().item()
        assert std > 0.12, f"{name}: initial logit std {std:.3f}"


def test_loaded_weights_replace_the_init(tmp_path):
    """Init touches fresh weights only: a state_dict saved under another init loads as it was."""
    torch.manual_seed(0)
    old = create_model("wrn16_1", num_classes=10, in_chans=1, image_size=28)
    nn.init.normal_(old.fc.weight, 0, 0.01)  # the former classifier init
    torch.manual_seed(1)
    new = create_model("wrn16_1", num_classes=10, in_chans=1, image_size=28)
    new.load_state_dict(old.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(old.state_dict().values(), new.state_dict().values()))
