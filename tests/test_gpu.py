"""GPU checks (skipped without CUDA): precision paths and the pause semantics on the device."""
import pytest
import torch

from switokd.train.trainer import Trainer

from conftest import tiny_config

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_gpu_train_and_pause(tmp_path, splits, precision):
    cfg = tiny_config(tmp_path, overrides=["train.device=cuda", f"train.precision={precision}",
                                           "train.channels_last=true", "method.options.force_mode=expert"])
    tr = Trainer(cfg, data=splits, writable=False)
    before = {k: v.clone() for k, v in tr.networks["teacher"].model.named_parameters()}
    tr.train_loader.set_epoch(0)
    for _, (x, y) in zip(range(3), tr.train_loader):
        assert x.is_cuda and tr.train_step(x, y).stepping == ("student",)
    assert all(torch.equal(v, before[k]) for k, v in tr.networks["teacher"].model.named_parameters())
    tr.method.force_mode = None
    assert set(tr.evaluate()) == {"teacher", "student"}


def test_gpu_streaming_loader(tmp_path):
    """One CUDA process trains from an image folder streamed from disk (pinned memory, non-blocking copies)."""
    from test_data_stream import write_folder
    root = write_folder(tmp_path / "imgs", n_per_class=(20, 5), classes=("a", "b"))
    cfg = tiny_config(tmp_path, overrides=["train.device=cuda", "data.name=image_folder", f"data.dir={root}",
                                           "data.in_memory=false", "data.workers=2", "train.batch_size=8"])
    tr = Trainer(cfg)
    assert tr.fit()["epochs"] == 1


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_torchrun_nccl(tmp_path):
    import subprocess
    import sys
    from pathlib import Path
    from test_data import make_mnist_dir
    from conftest import free_port
    root = Path(__file__).resolve().parents[1]
    (tmp_path / "data").mkdir()
    data = make_mnist_dir(tmp_path / "data", n_train=64, n_test=32)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port",
                        str(free_port()), "-m", "switokd", "train", "--config", str(root / "configs" / "fashion_mnist.yaml"),
                        "data.name=mnist", f"data.dir={data}", "train.epochs=1", "train.batch_size=8",
                        "train.sync_bn=true", f"train.out_dir={tmp_path}", "train.run_name=r"],
                       capture_output=True, text=True, cwd=root, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "processes  2 (nccl)" in r.stderr

