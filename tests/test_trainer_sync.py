"""A training step reads tensor values on the host at most once: the switching decision.

On a GPU every such read is a synchronisation that stalls the host from queuing work. On the
CPU the same reads are counted by wrapping the Tensor methods that copy a value to Python.
"""
import warnings

import pytest
import torch

from switokd import config as C
from switokd.train.trainer import Trainer

from conftest import tiny_config

READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "numpy", "cpu")


def count_reads(monkeypatch) -> list[str]:
    """From now on, record the name of every Tensor method called that hands a value to the host."""
    calls: list[str] = []
    for name in READS:
        orig = getattr(torch.Tensor, name)

        def wrapped(self, *a, _orig=orig, _name=name, **k):
            calls.append(_name)
            return _orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, wrapped)
    return calls


def cohort(n_teachers: int, n_students: int) -> list[C.NetworkConfig]:
    nets = [C.NetworkConfig(name=f"t{i}", model="resnet20", role="teacher") for i in range(n_teachers)]
    return nets + [C.NetworkConfig(name=f"s{i}", model="wrn16_1", role="student") for i in range(n_students)]


def steps(tr: Trainer, n: int):
    tr.train_loader.set_epoch(0)
    return [b for _, b in zip(range(n), tr.train_loader)]


@pytest.mark.parametrize("method,networks,reads", [
    ("vanilla", None, 0), ("dml", None, 0), ("kdcl", None, 0), ("switokd", None, 1),
    ("switokd", cohort(2, 2), 1), ("dml", cohort(1, 2), 0),
])
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_host_reads_per_step(tmp_path, splits, monkeypatch, method, networks, reads, precision):
    tr = Trainer(tiny_config(tmp_path, method, [f"train.precision={precision}"], networks), data=splits, writable=False)
    batches = steps(tr, 3)
    tr.meters.record(tr.train_step(*batches[0]))  # the first step may set things up lazily
    calls = count_reads(monkeypatch)
    for x, y in batches[1:]:
        tr._set_lrs()
        tr.meters.record(tr.train_step(x, y))
        tr.step += 1
    assert len(calls) == reads * 2, calls


def test_logged_statistics_are_read_once_per_log_interval(tmp_path, splits, monkeypatch):
    tr = Trainer(tiny_config(tmp_path, "switokd"), data=splits, writable=False)
    batches = steps(tr, 4)
    tr.meters.record(tr.train_step(*batches[0]))
    calls = count_reads(monkeypatch)
    for x, y in batches[1:]:
        tr.meters.record(tr.train_step(x, y))
    tr._log_steps()
    # One decision per step, then one read of all the interval's sums.
    assert len(calls) == 3 + 1 and calls[-1] == "tolist", calls


@pytest.mark.gpu
@pytest.mark.parametrize("method,reads", [("vanilla", 0), ("switokd", 1)])
def test_cuda_synchronisations_per_step(tmp_path, splits, method, reads):
    tr = Trainer(tiny_config(tmp_path, method, ["train.device=cuda", "train.precision=bf16"]), data=splits,
                 writable=False)
    batches = steps(tr, 3)
    tr.meters.record(tr.train_step(*batches[0]))
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for x, y in batches[1:]:
                tr.meters.record(tr.train_step(x, y))
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
    assert len(syncs) == reads * 2, [str(w.message) for w in syncs]
