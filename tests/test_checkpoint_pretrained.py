"""Pretrained weights: torchvision's (and timm's) ResNet names load strictly; non-strict loading leaves a new
head at its initialisation and adapts the stem to 1-channel images, and says so; switokd checkpoints of the
earlier layout still load, to the same logits."""
from pathlib import Path

import pytest
import torch
from torch import nn

from switokd.train.checkpoint import CheckpointError, adapt_input_conv, load_weights
from switokd.models import create_model

FIXTURES = Path(__file__).parent / "fixtures"


def torchvision_state(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under torchvision's names and shapes (tests/fixtures), as torchvision's resnet writes them."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for line in (FIXTURES / f"torchvision_{name}_keys.txt").read_text().splitlines():
        if line.startswith("#"):
            continue
        key, _, shape = line.partition(" ")
        dims = tuple(int(d) for d in shape.split(",")) if shape else ()
        out[key] = torch.tensor(7) if key.endswith("num_batches_tracked") else torch.randn(dims, generator=g) * 0.05
        if key.endswith("running_var"):
            out[key] = out[key].abs() + 1.0
    return out


@pytest.mark.parametrize("name", ["resnet18", "resnet34"])
def test_torchvision_names_load_strictly(name):
    state = torchvision_state(name)
    model = create_model(name, 1000, 3, 224)
    report = load_weights(model, state, "torchvision file")
    assert report.left == [] and report.adapted == [] and len(report.loaded) == len(state)
    assert list(model.state_dict()) == list(state)  # the same names in the same order
    assert torch.equal(model.state_dict()["layer2.0.downsample.0.weight"], state["layer2.0.downsample.0.weight"])


def test_a_1000_class_rgb_file_into_a_10_class_gray_model():
    state = torchvision_state("resnet18")
    model = create_model("resnet18", 10, 1, 224)
    head = model.fc.weight.detach().clone()
    with pytest.raises(CheckpointError, match="checkpoint_strict=false"):
        load_weights(model, state, "torchvision file")
    report = load_weights(model, state, "torchvision file", strict=False)
    assert report.left == ["fc.weight", "fc.bias"] and report.adapted == ["conv1.weight: 3 -> 1 input channels"]
    assert len(report.loaded) == 122 - 3 and report.unused == []
    assert torch.equal(model.fc.weight, head)  # the new head stays at its initialisation
    torch.testing.assert_close(model.conv1.weight, state["conv1.weight"].sum(dim=1, keepdim=True))
    assert "119 of 122 tensors loaded; 1 adapted" in report.summary() and "fc.weight, fc.bias" in report.summary()


def test_small_images_use_the_cifar_stem_and_say_so():
    model = create_model("resnet18", 10, 1, 28)
    report = load_weights(model, torchvision_state("resnet18"), "torchvision file", strict=False)
    assert "conv1.weight" in report.left and any("CIFAR stem" in n for n in report.notes)


def test_adapt_input_conv_keeps_the_response():
    w = torch.randn(8, 3, 3, 3)
    gray = torch.rand(1, 1, 9, 9)
    conv = lambda weight, x: nn.functional.conv2d(x, weight)  # noqa: E731
    # A gray image is three equal colour planes: the summed weight on it answers as the RGB weight does.
    torch.testing.assert_close(conv(adapt_input_conv(w, 1), gray), conv(w, gray.repeat(1, 3, 1, 1)))
    assert adapt_input_conv(w, 5).shape == (8, 5, 3, 3)
    # Six channels are the colours twice, halved: equal planes answer as they do with RGB.
    six = adapt_input_conv(w, 6)
    torch.testing.assert_close(conv(six, gray.repeat(1, 6, 1, 1)), conv(w, gray.repeat(1, 3, 1, 1)))


def _old_layout(blocks, num_classes, in_chans, image_size):
    """switokd's ResNet-18/34 before torchvision's names (features.0 = stem, features.1 = stages)."""
    from switokd.models.layers import Classifier, conv_bn, is_small_input
    from switokd.models.resnet_cifar import make_stages
    stem = conv_bn(in_chans, 64, 3, 1) if is_small_input(image_size) else \
        nn.Sequential(conv_bn(in_chans, 64, 7, 2), nn.MaxPool2d(3, 2, 1))
    stages, width = make_stages(64, [64, 128, 256, 512], blocks, [1, 2, 2, 2])
    return Classifier(nn.Sequential(stem, stages), width, num_classes)


@pytest.mark.parametrize("name,blocks,size", [("resnet18", [2, 2, 2, 2], 64), ("resnet34", [3, 4, 6, 3], 96)])
def test_checkpoints_of_the_earlier_layout_still_load(name, blocks, size):
    torch.manual_seed(0)
    old = _old_layout(blocks, 10, 3, size).eval()
    new = create_model(name, 10, 3, size).eval()
    state = old.state_dict()
    assert next(iter(state)).startswith("features.")
    load_weights(new, state, "old checkpoint")
    new.load_state_dict(state)  # plain torch loading renames too
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert torch.equal(old(x), new(x))


def test_the_trainer_header_gives_the_account(tmp_path, splits):
    from switokd import Trainer
    from switokd.train.runinfo import run_header
    from conftest import tiny_config
    file = tmp_path / "tv.pt"
    torch.save(torchvision_state("resnet18"), file)
    cfg = tiny_config(tmp_path, overrides=["networks.teacher.model=resnet18", f"networks.teacher.checkpoint={file}",
                                           "networks.teacher.checkpoint_strict=false"])
    tr = Trainer(cfg, data=splits, writable=False)
    line = next(ln for ln in run_header(tr) if ln.startswith("weights    teacher"))
    assert "adapted (conv1.weight: 3 -> 1 input channels)" in line or "left at their initialisation" in line
    assert "fc.weight, fc.bias" in line and str(file) in line
