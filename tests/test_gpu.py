"""GPU checks (skipped without CUDA): precision paths and the pause semantics on the device."""
import pytest
import torch

from switokd.trainer import Trainer

from conftest import tiny_config

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_gpu_train_and_pause(tmp_path, splits, precision):
    cfg = tiny_config(tmp_path, overrides=["train.device=cuda", f"train.precision={precision}",
                                           "train.channels_last=true", "method.force_mode=expert"])
    tr = Trainer(cfg, data=splits, writable=False)
    before = {k: v.clone() for k, v in tr.networks["teacher"].model.named_parameters()}
    tr.train_loader.set_epoch(0)
    for _, (x, y) in zip(range(3), tr.train_loader):
        assert x.is_cuda and tr.train_step(x, y).stepping == ("student",)
    assert all(torch.equal(v, before[k]) for k, v in tr.networks["teacher"].model.named_parameters())
    tr.method.force_mode = None
    assert set(tr.evaluate()) == {"teacher", "student"}
