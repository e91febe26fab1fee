"""examples/weight_average.py: a user's method through the open contract (an owned module per network, the input
by feature path, after_step, shipped_module), from a package.module:factory that is a function."""
from pathlib import Path

import torch

from switokd import config as C
from switokd.deploy.export import load_network
from switokd.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]


def test_a_users_weight_average_trains_evaluates_and_exports(tmp_path, splits, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    tr = Trainer(C.load_config(None, ["data.name=synthetic", "train.epochs=2", "train.batch_size=16",
                                      "train.progress=false", "train.precision=fp32", f"train.out_dir={tmp_path}",
                                      "train.run_name=wa", "method.name=examples.weight_average:vanilla_mean",
                                      "networks=[{name: student, model: resnet20, role: student}]"]), data=splits)
    tr.fit()
    mean, live = tr.method.feature_modules["student"]["mean"].eval(), tr.networks["student"].model.eval()
    x = torch.randn(3, 1, 8, 8)
    assert not torch.allclose(mean(x), live(x))  # an average of the iterates, not the last one
    with torch.no_grad():
        hits = sum((mean(xb).argmax(1) == yb).sum().item() for xb, yb in tr.test_loader)
    n = sum(len(yb) for _, yb in tr.test_loader)
    assert abs(tr.evaluate()["student"]["acc"] - 100.0 * hits / n) < 1e-9  # evaluation scores what ships
    plain, _ = load_network(tmp_path / "wa" / "last.pt", "student")  # and export ships it, from a function factory
    torch.testing.assert_close(plain.eval()(x), mean(x))
