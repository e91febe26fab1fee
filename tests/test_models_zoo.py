"""A model zoo through one factory: networks.NAME.model_args reach the factory, are saved with the run, and
eval/export rebuild the same model. timm cannot be imported on these machines, so a stand-in ``timm`` module
with timm's ``create_model`` signature serves examples/timm_models.py."""
import sys
import types

import pytest
from torch import nn

from switokd import Trainer
from switokd.train.checkpoint import load_training_checkpoint
from switokd.deploy import export

from conftest import tiny_config


def _standin_timm():
    made = []

    def create_model(name, pretrained=False, num_classes=1000, in_chans=3, **kw):
        made.append((name, pretrained, num_classes, in_chans, kw))
        width = {"tiny_cnn": 8, "wide_cnn": 16}[name]
        return nn.Sequential(nn.Conv2d(in_chans, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(kw.get("drop_rate", 0.0)),
                             nn.Linear(width, num_classes))

    mod = types.ModuleType("timm")
    mod.create_model = create_model
    return mod, made


def test_model_args_reach_the_factory_and_travel_with_the_run(tmp_path, splits, monkeypatch):
    timm, made = _standin_timm()
    monkeypatch.setitem(sys.modules, "timm", timm)
    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    over = ["networks.teacher.model=examples.timm_models:timm_model",
            "networks.teacher.model_args={name: wide_cnn, drop_rate: 0.1}", "train.epochs=1"]
    tr = Trainer(tiny_config(tmp_path, overrides=over), data=splits)
    tr.fit()
    assert made[0] == ("wide_cnn", False, splits.num_classes, 1, {"drop_rate": 0.1})
    ckpt = load_training_checkpoint(tr.run_dir / "last.pt")
    assert ckpt["networks"]["teacher"]["model"]["6.weight"].shape == (splits.num_classes, 16)
    assert Trainer.from_checkpoint(tr.run_dir, data=splits, evaluate_only=True).networks["teacher"].model[0].out_channels == 16
    # Export rebuilds the same model from the checkpoint's config (the teacher learned here: online method).
    pytest.importorskip("onnxruntime")
    r = export(tr.run_dir / "last.pt", "teacher", "safetensors", tmp_path / "t.safetensors")
    assert r["max_abs_diff"] == 0.0 and made[-1][0] == "wide_cnn"


def test_a_factory_that_refuses_an_argument_is_one_line(tmp_path, splits):
    from switokd.config import ConfigError
    with pytest.raises(ConfigError, match=r"networks.teacher.model.*must accept num_classes, in_chans and image_size and colour"):
        Trainer(tiny_config(tmp_path, overrides=["networks.teacher.model=resnet20", "networks.teacher.model_args={colour: red}"]),
                data=splits)
