import os
from pathlib import Path

import pytest
import torch

from switokd import config as C
from switokd.data import DataSplits

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = str(ROOT / "configs" / "fashion_mnist.yaml")


def synthetic_splits(n_train=64, n_test=32, classes=4, chans=1, size=8, seed=0) -> DataSplits:
    """Tiny learnable data: each class is a different bright square."""
    g = torch.Generator().manual_seed(seed)

    def make(n):
        y = torch.randint(0, classes, (n,), generator=g)
        x = torch.randint(0, 60, (n, chans, size, size), generator=g, dtype=torch.uint8)
        for i in range(n):
            c = int(y[i])
            x[i, :, (c * 2) % size:(c * 2) % size + 2, :] = 250
        return x, y

    tx, ty = make(n_train)
    vx, vy = make(n_test)
    return DataSplits("synthetic", tx, ty, vx, vy, classes, (0.3,) * chans, (0.3,) * chans, 1)


def tiny_config(tmp_path, method="switokd", overrides=(), networks=None) -> C.Config:
    cfg = C.load_config(None, [
        f"method.name={method}", "train.epochs=1", "train.batch_size=16", "train.eval_batch_size=32",
        "train.progress=false", "train.log_interval=2", f"train.out_dir={tmp_path}", "train.run_name=run",
        "train.threads=1", *overrides])
    if networks is not None:
        cfg.networks = networks
        C.validate(cfg)
    return cfg


def assert_same_networks(ref, other) -> None:
    """Every network of two trainers holds the same weights, optimizer hyper-parameters and momentum buffers."""
    for n in ref.networks:
        a, b = ref.networks[n], other.networks[n]
        assert all(torch.equal(v, b.model.state_dict()[k]) for k, v in a.model.state_dict().items()), n
        sa, sb = a.optimizer.state_dict(), b.optimizer.state_dict()
        assert sa["param_groups"] == sb["param_groups"], n
        assert all(torch.equal(sa["state"][i]["momentum_buffer"], sb["state"][i]["momentum_buffer"])
                   for i in sa["state"]), n


def free_port() -> int:
    """A free TCP port on the loopback interface (for a gloo or NCCL rendezvous)."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_env(rank, world, port):
    """This process as rank ``rank`` of ``world`` (torchrun's variables), one torch thread."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)


def killed_after_an_older_checkpoint(tmp_path, splits, monkeypatch, overrides):
    """Two runs of ``overrides``: ``ref`` uninterrupted, and ``cut`` interrupted after step 13 whose last.pt is
    the checkpoint of step 9 (as if killed before the checkpoint of step 13): its logs reach further than its
    checkpoint, which a resume must cut back. Returns (ref, cut) with ref finished and cut to be resumed."""
    import shutil
    from switokd.train.signals import Interrupted
    from switokd.train.trainer import Trainer
    from test_checkpoint import _interrupt_after
    ref = Trainer(tiny_config(tmp_path / "ref", overrides=overrides), data=splits)
    ref.fit()
    real_save = Trainer.save_checkpoint

    def save(self, *a, **k):  # keep a copy of the checkpoint written at step 9
        path = real_save(self, *a, **k)
        if self.step == 9:
            shutil.copy(path, path.with_name("step9.pt"))
        return path

    monkeypatch.setattr(Trainer, "save_checkpoint", save)
    _interrupt_after(monkeypatch, 13)
    cut = Trainer(tiny_config(tmp_path / "cut", overrides=[*overrides, "train.checkpoint_every=3"]), data=splits)
    with pytest.raises(Interrupted):
        cut.fit()
    monkeypatch.undo()
    shutil.move(cut.run_dir / "step9.pt", cut.run_dir / "last.pt")
    return ref, cut


@pytest.fixture
def splits():
    return synthetic_splits()


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


torch.set_num_threads(min(2, os.cpu_count() or 1))
