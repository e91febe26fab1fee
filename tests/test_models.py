import pytest
import torch

from switokd.models import MODELS, create_model
from switokd.registry import Registry

SHAPES = [(1, 28), (3, 32), (3, 64)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}x{s[1]}")
@pytest.mark.parametrize("name", MODELS.names())
def test_output_shape(name, shape):
    c, s = shape
    torch.manual_seed(0)
    m = create_model(name, num_classes=7, in_chans=c, image_size=s).eval()
    with torch.no_grad():
        out = m(torch.randn(2, c, s, s))
    assert out.shape == (2, 7) and torch.isfinite(out).all()


def test_large_input_stem():
    m = create_model("resnet18", 5, 3, 224).eval()
    with torch.no_grad():
        assert m(torch.randn(1, 3, 224, 224)).shape == (1, 5)


def test_known_parameter_counts():
    # Published sizes (10 classes): WRN-16-2 0.69M, ResNet-20 0.27M, WRN-16-8 11.0M.
    count = lambda n: sum(p.numel() for p in create_model(n, 10, 3, 32).parameters())  # noqa: E731
    assert round(count("wrn16_2") / 1e6, 2) == 0.69
    assert round(count("resnet20") / 1e6, 2) == 0.27
    assert round(count("wrn16_8") / 1e6, 1) == 11.0


def test_registry_rejects_duplicates_and_suggests():
    reg = Registry("thing")
    reg.register("a")(lambda: 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(lambda: 2)
    with pytest.raises(KeyError, match="wrn16_2"):
        MODELS.get("wrn16-2")
