"""Online branch methods: any backbone split into a trunk and branches, ONE against its official code restated
(Lan1991Xu/ONE_NeurIPS2018 54afde3), the ramps (and PCL's reference bug), resume and export of the deployed branch."""
import math

import pytest
import torch
import torch.nn.functional as F

from switokd import config as C
from switokd.core.branch_losses import consistency_ramp, soft_kl
from switokd.methods.branch import one_loss
from switokd.models import create_model
from switokd.models.branches import BranchNet
from switokd.train.trainer import Trainer


def ref_kl_loss(output_batch, teacher_outputs, T=3):
    """Official ONE loss/kl_loss.py KLLoss (and FFL's utils.KLLoss)."""
    output_batch = F.log_softmax(output_batch / T, dim=1)
    teacher_outputs = F.softmax(teacher_outputs / T, dim=1) + 10 ** (-7)
    loss = T * T * torch.sum(torch.mul(teacher_outputs, torch.log(teacher_outputs) - output_batch))
    return loss / output_batch.size(0)


def ref_sigmoid_rampup(current, rampup_length):
    """Official ONE utils/ramps.py sigmoid_rampup."""
    if rampup_length == 0:
        return 1.0
    current = max(0.0, min(float(current), rampup_length))
    phase = 1.0 - current / rampup_length
    return float(math.exp(-5.0 * phase * phase))


def ref_pcl_ramp(epoch, lambd=1.0, alpha=80):
    """shaoeric's PCL controller.py compute_rampup_weight, bug included (divides by lambd, not alpha)."""
    if epoch > alpha:
        return lambd
    return lambd * math.exp(-5 * (1 - epoch / lambd) ** 2)


def test_the_ramp_is_the_references_and_pcls_bug_is_not_copied():
    for e in (0, 1, 10, 40, 79, 80, 120):
        assert consistency_ramp(e, 80) == pytest.approx(ref_sigmoid_rampup(e, 80), abs=1e-15)
    assert consistency_ramp(0) == pytest.approx(0.0067379, abs=1e-7) and consistency_ramp(40) == pytest.approx(0.2865, abs=1e-4)
    # The reference's PCL ramp is 1 at epoch 1, zero from epoch 3 to 80, 1 again after; ours ramps smoothly.
    assert ref_pcl_ramp(1) == 1.0 and ref_pcl_ramp(40) == 0.0 and ref_pcl_ramp(81) == 1.0
    assert consistency_ramp(1) < 0.01 < consistency_ramp(40) < 1.0


def test_one_loss_matches_the_official_code():
    g = torch.Generator().manual_seed(0)
    z = [torch.randn(6, 5, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    gate = F.softmax(torch.randn(6, 3, generator=g, dtype=torch.float64), 1)
    y = torch.randint(0, 5, (6,), generator=g)
    ens = sum(gate[:, k:k + 1] * z[k] for k in range(3))
    ramp = consistency_ramp(10)
    # cifar_one.py: loss_cross = sum CE(branch) + CE(ensemble); loss_kl = sum KLLoss(branch, ensemble), x ramp
    want = sum(F.cross_entropy(zk, y) for zk in z) + F.cross_entropy(ens, y) + ramp * sum(
        ref_kl_loss(zk, ens.detach()) for zk in z)
    got = one_loss(z, gate, y, ramp)
    torch.testing.assert_close(got["loss"], want, rtol=1e-7, atol=1e-7)  # core cross_entropy computes in fp32
    torch.testing.assert_close(soft_kl(z[0], z[1]), ref_kl_loss(z[0], z[1].detach()), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name,split", [("resnet20", "stage3"), ("wrn16_1", "stage3"), ("resnet18", "layer4"),
                                        ("resnet18", "layer3")])
def test_any_backbone_splits_and_branch_0_is_the_backbone(name, split):
    model = create_model(name, 10, 3, 32).eval()
    net = BranchNet(model, split, branches=3).eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(net(x), model(x))
    assert not torch.equal(net.branches[1](net.trunk(x)), net.branches[0](net.trunk(x)))  # drawn anew
    plain = net.deployed()
    assert type(plain) is type(model) and plain.state_dict().keys() == model.state_dict().keys()


def test_a_model_whose_forward_is_not_a_sequence_is_one_line():
    from torch import nn

    class Odd(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(C.ConfigError, match="forward is not a plain sequence"):
        BranchNet(Odd(), "stage3", 3)
    with pytest.raises(C.ConfigError, match="'networks.model.split': 'layer9' is not a module"):
        BranchNet(create_model("resnet18", 10, 3, 32), "layer9", 3)


def _cfg(tmp_path, *extra):
    return C.load_config(None, ["data.name=synthetic", "train.epochs=3", "train.batch_size=16", "train.progress=false",
                                "train.precision=fp32", "train.threads=1", f"train.out_dir={tmp_path}", "method.name=one",
                                "networks=[{name: student, model: resnet20, role: student, branches: 3, "
                                "deployed_branch: 1}]", *extra])


def test_one_trains_resumes_bit_exactly_and_exports_the_deployed_branch(tmp_path, splits):
    whole = Trainer(_cfg(tmp_path, "train.run_name=whole"), data=splits)
    whole.fit()
    part = Trainer(_cfg(tmp_path, "train.run_name=part"), data=splits)
    part.fit(stop_after=1)
    resumed = Trainer.from_checkpoint(tmp_path / "part", data=splits)
    resumed.fit()
    a, b = whole.networks["student"].model.state_dict(), resumed.networks["student"].model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    ga, gb = whole.method.feature_modules.state_dict(), resumed.method.feature_modules.state_dict()
    assert any("gate" in k for k in ga) and all(torch.equal(ga[k], gb[k]) for k in ga)
    from switokd.runs.files import read_jsonl
    row = read_jsonl(tmp_path / "whole" / "epochs.jsonl")[-1]["test"]["student"]
    assert set(row["parts"]) == {"branch0", "branch1", "branch2", "ensemble"}
    assert row["acc"] == row["parts"]["branch1"]  # the deployed branch's
    report = __import__("json").loads((tmp_path / "whole" / "report.json").read_text())
    assert report["networks"]["student"]["last_parts"] == row["parts"]
    from switokd.runs.status import run_status, status_lines
    from switokd.telemetry.sinks import flat_scalars
    status = run_status(tmp_path / "whole")
    assert status["test_parts"]["student"] == row["parts"]
    line = next(x for x in status_lines(status) if "test acc" in x)
    assert f"ensemble {row['parts']['ensemble']:.2f}" in line and f"branch2 {row['parts']['branch2']:.2f}" in line
    assert "test/student/parts/ensemble" in flat_scalars({"test": {"student": row}})  # what TensorBoard and MLflow log
    from switokd.deploy.export import load_network
    plain, info = load_network(tmp_path / "whole" / "last.pt", "student")
    assert type(plain).__name__ == "Classifier" and info.model == "resnet20"
    net = whole.networks["student"].model.eval()
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(plain(x), net(x))  # the deployed branch (1), as the run evaluated it


def ref_kl_loss_keep_grad(output_batch, teacher_outputs, T=3):
    """DefangChen/OKDDip utils.py KL_Loss: the target keeps its gradient."""
    output_batch = F.log_softmax(output_batch / T, dim=1)
    teacher_outputs = F.softmax(teacher_outputs / T, dim=1) + 10 ** (-7)
    return T * T * torch.nn.KLDivLoss(reduction="batchmean")(output_batch, teacher_outputs)


def test_okddip_loss_matches_train_gl_and_trains_the_projections():
    from torch import nn
    from switokd.methods.branch import okddip_loss
    torch.manual_seed(0)
    B, C, P, d = 4, 6, 3, 16
    peers = [torch.randn(B, C, dtype=torch.float64, requires_grad=True) for _ in range(P)]
    h = torch.randn(B, P, d, dtype=torch.float64)
    leader = torch.randn(B, C, dtype=torch.float64, requires_grad=True)
    q, k = nn.Linear(d, d // 8, bias=False).double(), nn.Linear(d, d // 8, bias=False).double()
    y = torch.randint(0, C, (B,))
    ramp = consistency_ramp(5)
    # resnet_GL.py forward and train_GL.py's loss, restated
    pro = torch.stack(peers, 2)
    attn = F.softmax(torch.bmm(q(h), k(h).permute(0, 2, 1)), dim=-1)
    x_m = torch.bmm(pro, attn.permute(0, 2, 1))
    loss_true = sum(F.cross_entropy(pro[:, :, i], y) for i in range(P))
    loss_group = sum(ref_kl_loss_keep_grad(pro[:, :, i], x_m[:, :, i]) for i in range(P))
    want = loss_true + F.cross_entropy(leader, y) + ramp * (loss_group + ref_kl_loss_keep_grad(leader, pro.mean(2)))
    got = okddip_loss(peers, h, leader, q, k, y, ramp)
    torch.testing.assert_close(got["loss"], want, rtol=1e-7, atol=1e-7)
    got["loss"].backward()
    assert q.weight.grad is not None and q.weight.grad.abs().sum() > 0  # learns through the targets


def test_ffl_loss_matches_train_ffl_and_the_fusion_has_its_own_decay(tmp_path, splits):
    from switokd.methods.branch import ffl_loss
    g = torch.Generator().manual_seed(1)
    z1, z2, zf = (torch.randn(5, 4, generator=g, dtype=torch.float64) for _ in range(3))
    y = torch.randint(0, 4, (5,), generator=g)
    ramp = consistency_ramp(20)
    ens = (z1 + z2) / 2  # train_FFL.py: MKD between the sub-networks and the fused classifier
    want = (F.cross_entropy(z1, y) + F.cross_entropy(z2, y) + F.cross_entropy(zf, y)
            + ramp * (ref_kl_loss(z1, zf) + ref_kl_loss(z2, zf) + ref_kl_loss(zf, ens)))
    torch.testing.assert_close(ffl_loss([z1, z2], zf, y, ramp)["loss"], want, rtol=1e-7, atol=1e-7)
    tr = Trainer(C.load_config(None, ["data.name=synthetic", "train.epochs=1", "train.batch_size=16",
                                      "train.progress=false", "train.precision=fp32", f"train.out_dir={tmp_path}",
                                      "method.name=ffl", "networks=[{name: student, model: resnet20, role: student, "
                                      "branches: 2}]"]), data=splits)
    groups = tr.networks["student"].optimizer.param_groups
    fusion = {id(p) for p in tr.method.feature_modules["student"]["fusion"].parameters()}
    assert [g["weight_decay"] for g in groups] == [5e-4, 1e-5] and {id(p) for p in groups[1]["params"]} == fusion
    tr.fit()


def test_pcl_temporal_mean_is_an_average_and_ships(tmp_path, splits):
    from torch import nn
    from switokd.methods.branch import ema_update, pcl_loss
    mean, model = nn.Linear(2, 2), nn.Linear(2, 2)
    iterates = []
    for step in range(1, 5):  # the mean of the iterates at first (1 - 1/step), not a copy (OKDPH's global_step=0)
        with torch.no_grad():
            model.weight.add_(1.0)
        iterates.append(model.weight.detach().clone())
        ema_update(mean, model, step)
    torch.testing.assert_close(mean.weight, torch.stack(iterates).mean(0))
    g = torch.Generator().manual_seed(2)
    z = [torch.randn(4, 5, generator=g, dtype=torch.float64) for _ in range(3)]
    zt = [torch.randn(4, 5, generator=g, dtype=torch.float64) for _ in range(3)]
    ens = torch.randn(4, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (4,), generator=g)

    def kd(s, t, T=3.0):  # shaoeric's kd_loss.py KDLoss
        return T * T * F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction="batchmean")
    want = F.cross_entropy(ens, y) + sum(F.cross_entropy(z[i], y) + 0.5 * kd(z[i], ens)
                                         + 0.5 * sum(kd(z[i], zt[j]) for j in range(3) if j != i) / 2 for i in range(3))
    torch.testing.assert_close(pcl_loss(z, ens, zt, y, 0.5)["loss"], want, rtol=1e-7, atol=1e-7)
    tr = Trainer(C.load_config(None, ["data.name=synthetic", "train.epochs=2", "train.batch_size=16",
                                      "train.progress=false", "train.precision=fp32", f"train.out_dir={tmp_path}",
                                      "train.run_name=pcl", "method.name=pcl",
                                      "networks=[{name: student, model: resnet20, role: student, branches: 3}]"]),
                 data=splits)
    tr.fit()
    from switokd.deploy.export import load_network
    plain, _ = load_network(tmp_path / "pcl" / "last.pt", "student")
    mean = tr.method.feature_modules["student"]["mean"].eval()
    x = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(plain.eval()(x), mean(x))  # the temporal mean's deployed branch ships
    # The checkpoint records what ships (Method.shipped_module); one written before it did is read through the
    # method's class, and a method export cannot import is one error naming it, never the live network instead.
    from switokd.deploy.export import ExportError
    ck = torch.load(tmp_path / "pcl" / "last.pt", weights_only=False)
    assert ck["shipped_modules"] == {"student": "mean"}
    del ck["shipped_modules"]
    ck["config"]["method"]["name"] = "no_such_pkg.methods:factory"
    torch.save(ck, tmp_path / "unknown.pt")
    with pytest.raises(ExportError, match="no_such_pkg.methods:factory"):
        load_network(tmp_path / "unknown.pt", "student")
    student = tr.networks["student"].model.eval()
    assert not torch.allclose(plain(x), student(x))
    # Evaluation scores what ships (the mean's deployed branch); the network's own branches stay its parts.
    res = tr.evaluate()["student"]
    with torch.no_grad():
        hits = [(sum((m(xb).argmax(1) == yb).sum().item() for xb, yb in tr.test_loader)) for m in (mean, student)]
    n = sum(len(yb) for _, yb in tr.test_loader)
    assert res["acc"] == pytest.approx(100.0 * hits[0] / n) and res["parts"]["branch0"] == pytest.approx(100.0 * hits[1] / n)
    again = Trainer.from_checkpoint(tmp_path / "pcl", data=splits, evaluate_only=True).evaluate()["student"]
    assert again["acc"] == pytest.approx(res["acc"]) and again["parts"] == pytest.approx(res["parts"])  # switokd eval
    # The run header says which of the authors' options this run's length defeats, and what to set instead.
    from switokd.train.runinfo import run_header
    steps = 2 * len(tr.train_loader)
    warned = [line for line in run_header(tr) if line.startswith("warning")]
    assert len(warned) == 2 and "ramp_epochs=80 epochs but the run has 2" in warned[0] and "ramp_epochs=1" in warned[0]
    assert f"averages about 1000 steps but the run has {steps}" in warned[1] and "ema_decay=" in warned[1]
    assert tr.method.schedule_warnings(300, 391) == [] and tr.method.schedule_warnings(30, 8)[-1].endswith(
        "method.options.ema_decay=0.95 (a window of a twelfth of the run)")


def parts_factory(num_classes=10, in_chans=3, image_size=32):
    """A user's trunk and branch, for a model whose forward is not a plain sequence."""
    from torch import nn
    trunk = nn.Sequential(nn.Conv2d(in_chans, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
    branch = nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                           nn.Flatten(), nn.Linear(16, num_classes))
    return BranchNet.from_parts(trunk, branch, branches=2)


def test_user_given_trunk_and_branch_train_with_ffl(tmp_path, splits):
    tr = Trainer(C.load_config(None, ["data.name=synthetic", "train.epochs=1", "train.batch_size=16",
                                      "train.progress=false", "train.precision=fp32", f"train.out_dir={tmp_path}",
                                      "method.name=ffl",
                                      "networks=[{name: student, model: 'test_branches:parts_factory', role: student}]"]),
                 data=splits)
    report = tr.fit()
    assert set(report["networks"]["student"]["last_parts"]) == {"branch0", "branch1", "ensemble"}


def test_pcl_gives_each_branch_its_own_view(tmp_path, splits):
    """As the authors' loader does: m independently augmented views per image ([N, m, C, H, W]), the trunk run
    per view, branch k and the temporal mean's branch k on view k; view 0 is the single-view loader's."""
    tr = Trainer(C.load_config(None, ["data.name=synthetic", "train.epochs=1", "train.batch_size=16",
                                      "train.progress=false", "train.precision=fp32", f"train.out_dir={tmp_path}",
                                      "train.run_name=pcl", "method.name=pcl", "data.crop_padding=2",
                                      "networks=[{name: student, model: resnet20, role: student, branches: 3}]"]),
                 data=splits)
    loader = tr.train_loader
    assert loader.views == 3 and tr.test_loader.views == 1
    x, y = next(loader.batches())
    assert x.shape[:2] == (16, 3) and not torch.equal(x[:, 0], x[:, 1])
    loader.views = 1
    one, _ = next(loader.batches())
    torch.testing.assert_close(one, x[:, 0])  # view 0 is what a single-view loader draws
    loader.views = 3
    seen = []
    net = tr.networks["student"].model
    hook = net.trunk.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    tr.fit()
    hook.remove()
    assert len(seen) >= 3 * len(loader) and seen[0].dim() == 4  # one trunk pass per view
    # A race's rung re-estimates BatchNorm statistics from these views: the network takes them as in training,
    # the shipped temporal mean view 0 (it failed on the 5-D batch before).
    from switokd.train.evaluation import refreshed_batchnorm
    with refreshed_batchnorm(tr) as count:
        assert count > 0 and tr.evaluate()["student"]["acc"] >= 0.0
    shared = C.load_config(None, ["data.name=synthetic", "train.epochs=1", "train.batch_size=16", "train.progress=false",
                                  f"train.out_dir={tmp_path}", "train.run_name=shared", "method.name=pcl",
                                  "method.options={views: false}",
                                  "networks=[{name: student, model: resnet20, role: student, branches: 3}]"])
    assert Trainer(shared, data=splits).train_loader.views == 1


def test_pcl_views_need_branch_networks_of_one_size(tmp_path, splits):
    cfg = C.load_config(None, ["data.name=synthetic", "train.epochs=1", "train.progress=false", f"train.out_dir={tmp_path}",
                               "method.name=pcl", "networks=[{name: a, model: resnet20, role: student, branches: 3}, "
                               "{name: b, model: resnet20, role: student}]"])
    with pytest.raises(C.ConfigError, match="config key 'method.options.views': pcl gives each branch its own"):
        Trainer(cfg, data=splits)
