"""A method's own modules under several processes: two gloo ranks train VID's regressors and variances (and the
networks), and a branch network's trunk, branches and the branch method's own modules (OKDDip's projections, PCL's
ensemble head and temporal mean), to the weights one process reaches over the same global batch."""
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from conftest import free_port, rank_env, synthetic_splits

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")


def plain_net(num_classes, in_chans, image_size):
    """A network without BatchNorm, so that one process and two see the same statistics of a batch."""
    from torch import nn
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(in_chans, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))


def branch_net(num_classes, in_chans, image_size):
    """plain_net as a trunk (its first two layers) and three branches (the rest)."""
    from switokd.models.branches import BranchNet
    net = plain_net(num_classes, in_chans, image_size)
    return BranchNet.from_parts(net[:2], net[2:], branches=3)


FEATURE = ["method.feature_loss=vid", "method.feature_options={student_paths: ['3'], teacher_paths: ['3']}"]


def _overrides(out, ddp, world, method):
    # train.batch_size is per process: 8 on each of two ranks is the global batch of 16 that one process draws.
    common = ["data.name=synthetic", "train.epochs=2", f"train.batch_size={16 // world}", "train.progress=false",
              "train.precision=fp32", "train.threads=1", f"train.out_dir={out}", f"train.run_name=run{world}",
              f"train.ddp={str(ddp).lower()}", "data.augment=false"]
    if method == "crd":
        return [*common, "method.name=dml", "method.feature_loss=crd", f"networks.teacher.model={__name__}:plain_net",
                "method.feature_options={student_paths: ['4'], teacher_paths: ['4'], feat_dim: 8}",
                f"networks.student.model={__name__}:plain_net"]
    if method == "vid":
        return [*common, "method.name=dml", *FEATURE, f"networks.teacher.model={__name__}:plain_net",
                f"networks.student.model={__name__}:plain_net"]
    return [*common, f"method.name={method}", f"networks=[{{name: student, model: '{__name__}:branch_net', role: student}}]"]


def _state(tr):
    return {"student": {k: v.detach().clone() for k, v in tr.networks["student"].model.state_dict().items()},
            "method": {k: v.detach().clone() for k, v in tr.method.feature_modules.state_dict().items()}}


def _worker(rank, world, port, out, splits, ddp, method="vid"):
    import sys
    sys.path.insert(0, str(Path(__file__).parent))
    if world > 1:
        rank_env(rank, world, port)
    from switokd import config as C
    from switokd.train.trainer import Trainer
    tr = Trainer(C.load_config(None, _overrides(out, ddp, world, method)), data=splits)
    tr.fit()
    torch.save(_state(tr), Path(out) / f"state{rank}-{world}.pt")
    tr.dist.close()


def _same(tmp_path, splits, ddp, method):
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path), splits, ddp, method), nprocs=2, join=True)
    mp.spawn(_worker, args=(1, 0, str(tmp_path), splits, ddp, method), nprocs=1, join=True)
    two = [torch.load(tmp_path / f"state{r}-2.pt", weights_only=True) for r in (0, 1)]
    one = torch.load(tmp_path / "state0-1.pt", weights_only=True)
    for part in ("student", "method"):
        for k, v in one[part].items():
            assert torch.equal(two[0][part][k], two[1][part][k]), (part, k)  # the ranks agree exactly
            torch.testing.assert_close(two[0][part][k], v, rtol=1e-5, atol=1e-6, msg=f"{part} {k}")
    return one


@pytest.mark.parametrize("ddp", [False, True], ids=["bucketed", "ddp"])
def test_two_processes_train_a_connector_as_one_process_over_the_same_batch(tmp_path, ddp):
    one = _same(tmp_path, synthetic_splits(n_train=64, n_test=16), ddp, "vid")
    assert any(k.endswith("log_scales.0") for k in one["method"])


@pytest.mark.parametrize("method,ddp", [("okddip", False), ("pcl", True)], ids=["okddip-bucketed", "pcl-ddp"])
def test_two_processes_train_a_branch_network_as_one_process(tmp_path, method, ddp):
    one = _same(tmp_path, synthetic_splits(n_train=64, n_test=16), ddp, method)
    assert any(k.startswith("trunk.") for k in one["student"]) and any(k.startswith("branches.2.") for k in one["student"])
    assert any("query" in k for k in one["method"]) if method == "okddip" else any("mean" in k for k in one["method"])


def test_crds_memory_is_one_memory_across_processes(tmp_path):
    """Each process updates CRD's memory with every process's batch (and the first batches set one pair of
    constants), so the processes hold the same memory; before, each updated only its own shard's rows."""
    splits = synthetic_splits(n_train=64, n_test=16)
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path), splits, False, "crd"), nprocs=2, join=True)
    two = [torch.load(tmp_path / f"state{r}-2.pt", weights_only=True)["method"] for r in (0, 1)]
    for k in ("memory_s", "memory_t", "z"):
        key = next(x for x in two[0] if x.endswith(k))
        assert torch.equal(two[0][key], two[1][key]), key
    mem = two[0][next(x for x in two[0] if x.endswith("memory_s"))]
    torch.testing.assert_close(mem.norm(dim=1), torch.ones(64))  # every row written (and normalised) by the updates


def test_a_methods_own_batchnorm_statistics_agree_across_processes(tmp_path):
    """ONE's gate has a BatchNorm of its own: its running statistics are averaged over the ranks with the
    networks' at the end of each epoch, so every rank holds what rank 0 saves (before, each kept its own)."""
    splits = synthetic_splits(n_train=64, n_test=16)
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path), splits, False, "one"), nprocs=2, join=True)
    two = [torch.load(tmp_path / f"state{r}-2.pt", weights_only=True)["method"] for r in (0, 1)]
    stats = [k for k in two[0] if k.endswith(("running_mean", "running_var"))]
    assert stats
    for k in stats:
        assert torch.equal(two[0][k], two[1][k]), k
