"""Feature distillation: features by module path on any model, the losses against their references restated
(mdistiller a08d46f, RepDistiller b84f547), methods that own modules, optimizers from parameter groups."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from switokd import config as C
from switokd.core import feature_losses as FL
from switokd.methods import create_method
from switokd.methods.features import FEATURE_LOSSES, create_feature_loss
from switokd.models import create_model
from switokd.models.features import FeatureTap
from switokd.train.trainer import Trainer

torch.set_default_dtype(torch.float32)


def _g(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64)


# ------------------------------------------------------------------ the references, restated

def ref_at(fs, ft, p=2):
    """mdistiller AT.py: single_stage_at_loss, summed over stages."""
    def at(f):
        return F.normalize(f.pow(p).mean(1).reshape(f.size(0), -1))
    total = 0
    for s, t in zip(fs, ft):
        sh, th = s.shape[2], t.shape[2]
        if sh > th:
            s = F.adaptive_avg_pool2d(s, (th, th))
        elif sh < th:
            t = F.adaptive_avg_pool2d(t, (sh, sh))
        total = total + (at(s) - at(t)).pow(2).mean()
    return total


def ref_nst(fs, ft):
    """mdistiller NST.py: nst_loss with the broadcast polynomial kernel."""
    def poly(a, b):
        return (a.unsqueeze(1) * b.unsqueeze(2)).sum(-1).pow(2)
    total = 0
    for s, t in zip(fs, ft):
        sh, th = s.shape[2], t.shape[2]
        if sh > th:
            s = F.adaptive_avg_pool2d(s, (th, th))
        elif sh < th:
            t = F.adaptive_avg_pool2d(t, (sh, sh))
        s = F.normalize(s.view(s.shape[0], s.shape[1], -1), dim=2)
        t = F.normalize(t.view(t.shape[0], t.shape[1], -1), dim=2)
        total = total + poly(t, t).mean().detach() + poly(s, s).mean() - 2 * poly(s, t).mean()
    return total


def ref_pkt(fs, ft, eps=1e-7):
    """mdistiller PKT.py: cosine_similarity_loss."""
    on = fs / (torch.sqrt(torch.sum(fs ** 2, dim=1, keepdim=True)) + eps)
    on[on != on] = 0
    tn = ft / (torch.sqrt(torch.sum(ft ** 2, dim=1, keepdim=True)) + eps)
    tn[tn != tn] = 0
    ms = (torch.mm(on, on.transpose(0, 1)) + 1.0) / 2.0
    mt = (torch.mm(tn, tn.transpose(0, 1)) + 1.0) / 2.0
    ms = ms / torch.sum(ms, dim=1, keepdim=True)
    mt = mt / torch.sum(mt, dim=1, keepdim=True)
    return torch.mean(mt * torch.log((mt + eps) / (ms + eps)))


def ref_rkd(s, t, wd=25, wa=50, eps=1e-12):
    """mdistiller RKD.py: _pdist and rkd_loss."""
    def pdist(e):
        e_square = e.pow(2).sum(dim=1)
        prod = e @ e.t()
        res = (e_square.unsqueeze(1) + e_square.unsqueeze(0) - 2 * prod).clamp(min=eps).sqrt()
        res = res.clone()
        res[range(len(e)), range(len(e))] = 0
        return res
    with torch.no_grad():
        t_d = pdist(t)
        t_d = t_d / t_d[t_d > 0].mean()
    d = pdist(s)
    d = d / d[d > 0].mean()
    loss_d = F.smooth_l1_loss(d, t_d)
    with torch.no_grad():
        td = t.unsqueeze(0) - t.unsqueeze(1)
        t_angle = torch.bmm(F.normalize(td, p=2, dim=2), F.normalize(td, p=2, dim=2).transpose(1, 2)).view(-1)
    sd = s.unsqueeze(0) - s.unsqueeze(1)
    s_angle = torch.bmm(F.normalize(sd, p=2, dim=2), F.normalize(sd, p=2, dim=2).transpose(1, 2)).view(-1)
    return wd * loss_d + wa * F.smooth_l1_loss(s_angle, t_angle)


def ref_sp(fs, ft):
    """mdistiller SP.py: sp_loss."""
    bsz = fs.shape[0]
    gs = F.normalize(torch.mm(fs.view(bsz, -1), fs.view(bsz, -1).t()))
    gt = F.normalize(torch.mm(ft.view(bsz, -1), ft.view(bsz, -1).t()))
    return ((gt - gs) * (gt - gs)).view(-1, 1).sum(0)[0] / (bsz * bsz)


def ref_vid(mu, t, log_scale, eps=1e-5):
    """RepDistiller VID.py: VIDLoss.forward, after the regressor."""
    pred_var = torch.log(1.0 + torch.exp(log_scale)) + eps
    pred_var = pred_var.view(1, -1, 1, 1)
    return torch.mean(0.5 * ((mu - t) ** 2 / pred_var + torch.log(pred_var)))


# ------------------------------------------------------------------ golden tests

STAGE_S = [(4, 8, 8, 8), (4, 16, 4, 4), (4, 16, 2, 2)]
STAGE_T = [(4, 12, 8, 8), (4, 24, 8, 8), (4, 32, 2, 2)]  # the second: a larger teacher map (pooled to 4x4)


def test_at_and_nst_match_their_references():
    fs = [_g(*s, seed=i) for i, s in enumerate(STAGE_S)]
    ft = [_g(*s, seed=10 + i) for i, s in enumerate(STAGE_T)]
    torch.testing.assert_close(FL.at_loss(fs, ft), ref_at(fs, ft), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(FL.nst_loss(fs, ft), ref_nst(fs, ft), rtol=1e-10, atol=1e-12)
    assert float(FL.at_loss(ft, ft)) == 0.0


def test_pkt_rkd_sp_match_their_references():
    s, t = _g(6, 10), _g(6, 14, seed=1)
    torch.testing.assert_close(FL.pkt_loss(s, t), ref_pkt(s, t), rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(FL.rkd_loss(s, t), ref_rkd(s, t), rtol=1e-10, atol=1e-12)
    ms, mt = _g(6, 8, 3, 3, seed=2), _g(6, 16, 3, 3, seed=3)
    torch.testing.assert_close(FL.sp_loss(ms, mt), ref_sp(ms, mt), rtol=1e-10, atol=1e-14)


def test_vid_matches_its_reference_and_starts_at_the_variance_5():
    mu, t = _g(4, 6, 3, 3), _g(4, 6, 3, 3, seed=1)
    log_scale = torch.full((6,), FL.vid_log_scale_init(5.0), dtype=torch.float64)
    torch.testing.assert_close(FL.vid_nll(mu, t, log_scale), ref_vid(mu, t, log_scale), rtol=1e-12, atol=1e-14)
    assert math.isclose(float(F.softplus(log_scale[0]) + 1e-5), 5.0, rel_tol=1e-12)
    want = torch.mean(0.5 * ((mu - t) ** 2 / 5.0 + math.log(5.0)))
    torch.testing.assert_close(FL.vid_nll(mu, t, log_scale), want, rtol=1e-9, atol=1e-12)


def test_fitnet_regressor_is_mdistillers_conv_reg():
    loss = create_feature_loss("fitnet")
    loss.build([torch.Size((2, 8, 16, 16))], [torch.Size((2, 12, 8, 8))])
    conv, bn, relu = loss.regressors[0]
    assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3) and conv.stride == (2, 2) and conv.bias is not None
    assert isinstance(bn, nn.BatchNorm2d) and isinstance(relu, nn.ReLU)
    same = create_feature_loss("fitnet")
    same.build([torch.Size((2, 8, 8, 8))], [torch.Size((2, 12, 8, 8))])
    assert same.regressors[0][0].kernel_size == (1, 1)
    s, t = torch.randn(2, 8, 8, 8), torch.randn(2, 12, 8, 8)
    torch.testing.assert_close(same([s], [t]), F.mse_loss(same.regressors[0](s), t))


def test_recipe_weights_are_the_authors():
    assert {n: FEATURE_LOSSES.get(n).weight for n in FEATURE_LOSSES.names()} == {
        "at": 1000.0, "fitnet": 100.0, "nst": 50.0, "pkt": 30000.0, "rkd": 1.0, "sp": 3000.0, "vid": 1.0, "crd": 0.8,
        "ofd": 0.001, "reviewkd": 5.0}
    m = create_method("at", {"teacher": "teacher", "student": "student"})
    assert (m.weights.ce_weight, m.weights.kl_weight, m.feature_weight) == (1.0, 0.0, 1000.0)
    with pytest.raises(ValueError, match="no option 'q'"):
        create_feature_loss("at", q=3)


# ------------------------------------------------------------------ features by module path

def test_stage_names_and_paths_on_every_family():
    x = torch.randn(2, 3, 32, 32)
    for name in ("wrn16_1", "resnet20", "mobilenetv2_x0.5", "resnet18"):
        net = create_model(name, 10, 3, 32).eval()
        with FeatureTap(net, ["stage1", "stage3", "pool"], name) as tap:
            net(x)
            f = tap.pop()
        assert set(f) == {"stage1", "stage3", "pool"} and f["pool"].shape[-1] == 1
        assert tap.pop() == {}  # nothing held past the step


def test_pre_activation_is_read_before_the_in_place_relu_on_resnet18():
    net = create_model("resnet18", 10, 3, 32).eval()
    with FeatureTap(net, ["layer4.1.relu:input", "layer4", "stage4:pre"], "teacher") as tap:
        net(torch.randn(2, 3, 32, 32))
        f = tap.pop()
    pre, post = f["layer4.1.relu:input"], f["layer4"]
    assert (pre < 0).any() and not (post < 0).any()  # the residual sum, not the rectified output
    torch.testing.assert_close(pre.clamp(min=0), post)
    torch.testing.assert_close(f["stage4:pre"], pre)


def test_every_familys_pre_is_signed_and_its_act_rectified():
    """``stageK:pre`` is a real pre-activation on every family (WRN's last stage and MobileNet's conv-BN-ReLU6
    stages end in an in-place activation, so theirs is that activation's input), and ``stageK:act`` is what the
    next stage sees (a WRN's ``stageK`` is a raw residual sum; a ResNet's is already activated)."""
    torch.manual_seed(0)
    x = torch.randn(4, 3, 32, 32)
    for name in ("wrn16_1", "resnet20", "mobilenetv2_x0.5", "resnet18"):
        net = create_model(name, 10, 3, 32).eval()
        pre = [p for p in net.feature_stages if p.endswith(":pre")]
        act = [p for p in net.feature_stages if p.endswith(":act")]
        with FeatureTap(net, pre + act, name) as tap:
            net(x)
            f = tap.pop()
        last = max(pre)
        assert (f[last] < 0).any(), (name, last)
        for p in act:
            assert not (f[p] < 0).any(), (name, p)
            if name == "wrn16_1":
                torch.testing.assert_close(f[p], f[p.replace(":act", ":pre")].clamp(min=0))


def test_default_stages_read_like_for_like_across_families():
    """A ResNet's stages are activated and a WRN's are raw residual sums: at its default stages a feature loss
    reads both at ``stageK:act``; same-family pairs and paths a user gives are left as they are."""
    roles = {"teacher": "teacher", "student": "student"}

    def bound(name, teacher, student, **options):
        m = create_method(name, roles, **options)
        m.bind({"teacher": create_model(teacher, 10, 3, 32), "student": create_model(student, 10, 3, 32)})
        return m.feature_template, m.feature_note

    t, note = bound("at", "resnet20", "wrn16_1")
    assert t.student_paths == t.teacher_paths == ["stage1:act", "stage2:act", "stage3:act"] and "at reads" in note
    assert bound("sp", "wrn16_2", "resnet20")[0].student_paths == ["stage3:act"]
    assert bound("sp", "wrn16_2", "wrn16_1")[0].student_paths == ["stage3"]  # as mdistiller's WRN -> WRN
    assert bound("at", "resnet56", "resnet20")[0].student_paths == ["stage1", "stage2", "stage3"]
    assert bound("ofd", "resnet20", "wrn16_1")[0].student_paths == ["stage1:pre", "stage2:pre", "stage3:pre"]
    given = bound("at", "resnet20", "wrn16_1", feature_options={"student_paths": ["stage3"]})
    assert given[0].student_paths == ["stage3"] and given[1] == ""
    assert bound("pkt", "resnet20", "wrn16_1")[0].student_paths == ["pool"]
    # crd's queue carries its caveat into the run header; the memory bank has none
    assert "queue is not yet usable" in bound("crd", "wrn16_2", "wrn16_1", feature_options={"queue": True})[1]
    assert bound("crd", "wrn16_2", "wrn16_1")[1] == ""


def test_an_output_changed_in_place_after_its_hook_is_an_error():
    from torch import nn
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(inplace=True)).eval()
    with FeatureTap(net, ["1"], "teacher") as tap:
        net(torch.randn(2, 3, 8, 8))
        with pytest.raises(ValueError, match="network 'teacher': the output of '1' was changed in place.*:input"):
            tap.pop()
    with FeatureTap(net, ["2:input"], "teacher") as tap:
        net(torch.randn(2, 3, 8, 8))
        assert (tap.pop()["2:input"] < 0).any()

    class Dict(nn.Module):  # a Hugging Face-style output: no version counter to check, still recorded
        def forward(self, x):
            return {"hidden": x * 2}
    wrapped = nn.Sequential(Dict())
    with FeatureTap(wrapped, ["0"]) as tap, torch.inference_mode():
        wrapped(torch.ones(1))
        assert tap.pop()["0"]["hidden"].item() == 2.0


def test_an_unknown_path_names_the_network_and_the_nearest():
    net = create_model("resnet18", 10, 3, 32)
    with pytest.raises(C.ConfigError, match=r"network 'teacher' has no module 'layer5'; nearest: layer"):
        FeatureTap(net, ["layer5"], "teacher")


# ------------------------------------------------------------------ in the trainer

def _cfg(tmp_path, method, *extra):
    return C.load_config(None, ["data.name=synthetic", "train.epochs=2", "train.batch_size=16", "train.progress=false",
                                "train.precision=fp32", "train.threads=1", f"train.out_dir={tmp_path}",
                                f"method.name={method}", "networks.teacher.model=resnet20",
                                "networks.student.model=wrn16_1", *extra])


@pytest.fixture
def teacher(tmp_path, splits):
    Trainer(_cfg(tmp_path, "vanilla", "train.run_name=t", "train.epochs=1"), data=splits).fit()
    return str(tmp_path / "t" / "last.pt")


def test_vid_variances_are_trained_saved_and_resumed(tmp_path, splits, teacher):
    tr = Trainer(_cfg(tmp_path, "vid", "train.run_name=vid", f"networks.teacher.checkpoint={teacher}"), data=splits)
    vid = tr.method.feature_modules["student"]["teacher"]
    before = [p.detach().clone() for p in vid.log_scales]
    ids = {id(p) for g in tr.networks["student"].optimizer.param_groups for p in g["params"]}
    assert all(id(p) in ids for p in vid.parameters())  # in the student's optimizer
    tr.fit()
    assert any(not torch.equal(a, b) for a, b in zip(before, vid.log_scales))  # trained (mdistiller's are not)
    ck = torch.load(tmp_path / "vid" / "last.pt", map_location="cpu", weights_only=True)
    saved = ck["method_modules"]["student"]
    assert any(k.startswith("teacher.log_scales.") for k in saved)
    assert not any("regressors" in k or "log_scales" in k for k in ck["networks"]["student"]["model"])


def test_a_run_with_a_connector_resumes_bit_exactly(tmp_path, splits, teacher):
    over = ["train.epochs=3", "train.eval_epochs=[1]", f"networks.teacher.checkpoint={teacher}"]
    whole = Trainer(_cfg(tmp_path, "fitnet", "train.run_name=whole", *over), data=splits)
    whole.fit()
    part = Trainer(_cfg(tmp_path, "fitnet", "train.run_name=part", *over), data=splits)
    part.fit(stop_after=1)
    resumed = Trainer.from_checkpoint(tmp_path / "part", data=splits)
    resumed.fit()
    a, b = whole.method.feature_modules.state_dict(), resumed.method.feature_modules.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sa, sb = whole.networks["student"].model.state_dict(), resumed.networks["student"].model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_feature_loss_composes_with_online_and_offline_methods(tmp_path, splits, teacher):
    kd_at = Trainer(_cfg(tmp_path, "kd", "train.run_name=kdat", "method.feature_loss=at", "train.epochs=1",
                         f"networks.teacher.checkpoint={teacher}"), data=splits)
    kd_at.fit()
    row = kd_at.history[-1]["train"]["loss"]["student"]
    assert {"ce", "kl", "at", "loss"} <= set(row)
    dml = Trainer(_cfg(tmp_path, "switokd", "train.run_name=sw", "method.feature_loss=sp", "train.epochs=1"),
                  data=splits)
    dml.fit()
    assert "sp" in dml.history[-1]["train"]["loss"]["student"]


def test_adamw_and_no_decay_groups(tmp_path, splits):
    tr = Trainer(_cfg(tmp_path, "vanilla", "train.run_name=adamw", "networks.student.optimizer=adamw",
                      "networks.student.decay_norm_bias=false", "networks.student.lr=0.001"), data=splits)
    opt = tr.networks["student"].optimizer
    assert isinstance(opt, torch.optim.AdamW) and [g["weight_decay"] for g in opt.param_groups] == [5e-4, 0.0]
    assert all(p.ndim <= 1 for p in opt.param_groups[1]["params"])
    with pytest.raises(C.ConfigError, match="networks.student.optimizer.*'adam' is not one of sgd, adamw"):
        Trainer(_cfg(tmp_path, "vanilla", "train.run_name=x", "networks.student.optimizer=adam"), data=splits)


def test_a_cached_teacher_cannot_hand_over_features(tmp_path, splits, teacher):
    with pytest.raises(C.ConfigError, match="the cache holds teacher's logits only"):
        Trainer(_cfg(tmp_path, "at", "train.run_name=c", f"networks.teacher.checkpoint={teacher}",
                     f"networks.teacher.cache={tmp_path / 'cache'}", "data.augment_seed=0"), data=splits)


def ref_crd(v1, v2, memory_v1, memory_v2, y, idx, n_data, T=0.07, momentum=0.5, z=(-1.0, -1.0)):
    """RepDistiller crd/memory.py ContrastMemory.forward and crd/criterion.py ContrastLoss, restated: v1 the
    student's embedding, v2 the teacher's; returns the loss, the updated memories and the constants."""
    K = idx.size(1) - 1
    bs, d = v1.shape
    weight_v1 = torch.index_select(memory_v1, 0, idx.view(-1)).detach().view(bs, K + 1, d)
    out_v2 = torch.exp(torch.div(torch.bmm(weight_v1, v2.view(bs, d, 1)), T))
    weight_v2 = torch.index_select(memory_v2, 0, idx.view(-1)).detach().view(bs, K + 1, d)
    out_v1 = torch.exp(torch.div(torch.bmm(weight_v2, v1.view(bs, d, 1)), T))
    z_v1 = out_v1.mean().item() * n_data if z[0] < 0 else z[0]
    z_v2 = out_v2.mean().item() * n_data if z[1] < 0 else z[1]
    out_v1, out_v2 = torch.div(out_v1, z_v1).contiguous(), torch.div(out_v2, z_v2).contiguous()

    def contrast(x, eps=1e-7):
        bsz, m = x.shape[0], x.size(1) - 1
        pn = 1.0 / n_data
        p_pos = x.select(1, 0)
        log_d1 = torch.div(p_pos, p_pos.add(m * pn + eps)).log_()
        p_neg = x.narrow(1, 1, m)
        log_d0 = torch.div(p_neg.clone().fill_(m * pn), p_neg.add(m * pn + eps)).log_()
        return -(log_d1.sum(0) + log_d0.view(-1, 1).sum(0)) / bsz

    loss = contrast(out_v1) + contrast(out_v2)
    with torch.no_grad():
        m1, m2 = memory_v1.clone(), memory_v2.clone()
        pos = torch.index_select(m1, 0, y.view(-1)).mul_(momentum).add_(torch.mul(v1, 1 - momentum))
        m1.index_copy_(0, y, pos.div(pos.pow(2).sum(1, keepdim=True).pow(0.5)))
        pos = torch.index_select(m2, 0, y.view(-1)).mul_(momentum).add_(torch.mul(v2, 1 - momentum))
        m2.index_copy_(0, y, pos.div(pos.pow(2).sum(1, keepdim=True).pow(0.5)))
    return loss.squeeze(), m1, m2, (z_v1, z_v2)


def test_crd_matches_repdistiller_with_its_memory_and_negatives():
    torch.manual_seed(0)
    labels = torch.arange(40) % 4
    crd = create_feature_loss("crd", feat_dim=8, nce_k=6).double()
    crd.context = {"labels": labels}
    crd.build([torch.Size((5, 12, 1, 1))], [torch.Size((5, 20, 1, 1))])
    crd.double()
    assert crd.k == 6 and crd.memory_s.shape == (40, 8)
    index = torch.tensor([3, 17, 22, 8, 31])
    neg = crd.negatives(index)
    assert neg.shape == (5, 6) and bool((labels[neg] != labels[index].unsqueeze(1)).all())  # other classes only
    idx = torch.cat([index.unsqueeze(1), neg], 1)
    crd.negatives = lambda i: neg  # the same negatives for the reference
    fs, ft = _g(5, 12, 1, 1), _g(5, 20, 1, 1, seed=1)
    m1, m2 = crd.memory_s.clone(), crd.memory_t.clone()
    v1, v2 = crd.embed_s(fs), crd.embed_t(ft)
    want, w1, w2, z = ref_crd(v1, v2, m1, m2, index, idx, 40)
    got = crd([fs], [ft], index)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(crd.memory_s, w1) and torch.testing.assert_close(crd.memory_t, w2)
    torch.testing.assert_close(crd.z, torch.tensor(z, dtype=torch.float64))
    # The second batch keeps the constants of the first.
    want2, *_ = ref_crd(crd.embed_s(fs), crd.embed_t(ft), crd.memory_s.clone(), crd.memory_t.clone(), index, idx, 40,
                        z=z)
    torch.testing.assert_close(crd([fs], [ft], index), want2, rtol=1e-10, atol=1e-12)


def test_crd_queue_memory_does_not_grow_with_the_data():
    crd = create_feature_loss("crd", feat_dim=16, nce_k=32, queue=True)
    crd.context = {"labels": torch.arange(60000) % 10}
    crd.build([torch.Size((4, 64, 1, 1))], [torch.Size((4, 128, 1, 1))])
    assert crd.memory_s.shape == (32, 16) and not hasattr(crd, "order")
    loss = crd([torch.randn(4, 64, 1, 1)], [torch.randn(4, 128, 1, 1)])
    assert torch.isfinite(loss) and int(crd.ptr) == 4
    short = create_feature_loss("crd", feat_dim=4, nce_k=3, queue=True)  # a batch longer than the queue
    short.context = {"labels": torch.arange(60) % 10}
    short.build([torch.Size((5, 8, 1, 1))], [torch.Size((5, 8, 1, 1))])
    fs = torch.randn(5, 8, 1, 1)
    short([fs], [torch.randn(5, 8, 1, 1)])
    v = short.embed_s(fs).detach()  # the last 3 of the 5 rows, in order, ending where the pointer now stands
    assert int(short.ptr) == 2
    torch.testing.assert_close(short.memory_s[[2, 0, 1]], v[2:])
    long = create_feature_loss("crd", feat_dim=16, nce_k=4096, queue=True)
    long.context = {"labels": torch.arange(2000) % 10}
    with pytest.raises(ValueError, match="nce_k 4096 .* at most a tenth of the 2000 training images"):
        long.build([torch.Size((4, 64, 1, 1))], [torch.Size((4, 128, 1, 1))])


USER_STUDENT = '''
from torch import nn


class Student(nn.Module):  # a plain nn.Module: no switokd base class, its own module names
    def __init__(self, num_classes, in_chans):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(in_chans, 16, 3, 1, 1), nn.BatchNorm2d(16), nn.ReLU())
        self.block1 = nn.Sequential(nn.Conv2d(16, 24, 3, 2, 1), nn.BatchNorm2d(24), nn.ReLU())
        self.block2 = nn.Sequential(nn.Conv2d(24, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.ReLU())
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(32, num_classes)

    def forward(self, x):
        return self.head(self.gap(self.block2(self.block1(self.conv(x)))).flatten(1))


def build(num_classes=10, in_chans=3, image_size=32):
    return Student(num_classes, in_chans)
'''


def test_a_torchvision_named_teacher_and_a_users_student_distil_with_at_and_crd_from_the_cli(tmp_path, monkeypatch,
                                                                                              capsys):
    """resnet18 (layer1..layer4) teaches a plain nn.Module from package.module:factory, by module path."""
    from switokd.cli import main
    from test_data import make_mnist_dir
    (tmp_path / "mnist").mkdir()
    data = make_mnist_dir(tmp_path / "mnist", n_train=64, n_test=16)
    (tmp_path / "userpkg.py").write_text(USER_STUDENT)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "c.yaml").write_text("{}\n")
    base = ["--config", str(tmp_path / "c.yaml"), "data.name=mnist", f"data.dir={data}", "train.epochs=1",
            "train.batch_size=16", "train.progress=false", "train.precision=fp32", "train.threads=1",
            f"train.out_dir={tmp_path}", "networks.teacher.model=resnet18", "networks.student.model=userpkg:build"]
    assert main(["train", *base, "method.name=vanilla", "train.run_name=teacher"]) == 0
    teacher = f"networks.teacher.checkpoint={tmp_path / 'teacher' / 'last.pt'}"
    at = "method.feature_options={student_paths: [block1, block2], teacher_paths: [layer2, layer3]}"
    assert main(["train", *base, teacher, "method.name=at", at, "train.run_name=at"]) == 0, capsys.readouterr().err
    crd = "method.feature_options={student_paths: [gap], teacher_paths: [avgpool], nce_k: 32}"
    assert main(["train", *base, teacher, "method.name=crd", crd, "train.run_name=crd"]) == 0, capsys.readouterr().err
    rows = {r: torch.load(tmp_path / r / "last.pt", map_location="cpu", weights_only=True) for r in ("at", "crd")}
    assert "embed_s.linear.weight" in "".join(rows["crd"]["method_modules"]["student"])
    # A wrong path is one line naming the network, the path and the nearest names; exit 2.
    bad = "method.feature_options={student_paths: [blok1], teacher_paths: [layer2]}"
    capsys.readouterr()
    assert main(["train", *base, teacher, "method.name=at", bad, "train.run_name=bad"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "network 'student' has no module 'blok1'; nearest: block1" in err, err


def test_the_exported_student_has_no_connector(tmp_path, splits, teacher):
    from switokd.deploy import export
    Trainer(_cfg(tmp_path, "fitnet", "train.run_name=fit", "train.epochs=1", f"networks.teacher.checkpoint={teacher}"),
            data=splits).fit()
    out = tmp_path / "student.safetensors"
    export(str(tmp_path / "fit" / "last.pt"), "student", "safetensors", str(out))
    from safetensors.torch import load_file
    keys = load_file(str(out)).keys()
    assert keys == create_model("wrn16_1", 4, 1, 8).state_dict().keys()
    assert not any("regressor" in k for k in keys)


def ref_ofd_margin(gamma, beta):
    """mdistiller OFD.py get_margin_from_BN, with scipy's norm.cdf written as erf."""
    out = []
    for s, m in zip(gamma.abs().tolist(), beta.tolist()):
        cdf = 0.5 * (1 + math.erf(-m / s / math.sqrt(2)))
        if cdf > 0.001:
            out.append(-s * math.exp(-(m / s) ** 2 / 2) / math.sqrt(2 * math.pi) / cdf + m)
        else:
            out.append(-3 * s)
    return torch.tensor(out, dtype=torch.float64)


def test_ofd_margin_and_loss_match_both_references():
    gamma, beta = _g(6), _g(6, seed=1) * 2
    beta[0] = -20.0  # a channel almost never positive: the -3|gamma| branch
    torch.testing.assert_close(FL.ofd_margin(gamma, beta), ref_ofd_margin(gamma, beta), rtol=1e-9, atol=1e-12)
    s, t, margin = _g(4, 6, 3, 3, seed=2), _g(4, 6, 3, 3, seed=3), FL.ofd_margin(gamma, beta)
    # overhaul-distillation's form: t' = max(t, margin), ((s - t')^2 * ((s > t') | (t' > 0))).sum() / N
    tm = torch.max(t, margin.view(1, -1, 1, 1))
    overhaul = ((s - tm).pow(2) * ((s > tm) | (tm > 0)).double()).sum() / s.shape[0]
    torch.testing.assert_close(FL.ofd_stage_loss(s, t, margin), overhaul, rtol=1e-12, atol=1e-12)


def ref_hcl(fstudent, fteacher):
    """mdistiller ReviewKD.py hcl_loss."""
    loss_all = 0.0
    for fs, ft in zip(fstudent, fteacher):
        n, c, h, w = fs.shape
        loss = F.mse_loss(fs, ft, reduction="mean")
        cnt, tot = 1.0, 1.0
        for l in [4, 2, 1]:
            if l >= h:
                continue
            tmpfs, tmpft = F.adaptive_avg_pool2d(fs, (l, l)), F.adaptive_avg_pool2d(ft, (l, l))
            cnt /= 2.0
            loss += F.mse_loss(tmpfs, tmpft, reduction="mean") * cnt
            tot += cnt
        loss = loss / tot
        loss_all = loss_all + loss
    return loss_all


def test_reviewkd_hcl_abf_order_and_warmup():
    fs = [_g(2, 4, 8, 8), _g(2, 4, 4, 4, seed=1), _g(2, 4, 1, 1, seed=2)]
    ft = [_g(2, 4, 8, 8, seed=3), _g(2, 4, 4, 4, seed=4), _g(2, 4, 1, 1, seed=5)]
    torch.testing.assert_close(FL.hcl_loss(fs, ft), ref_hcl(fs, ft), rtol=1e-12, atol=1e-14)
    rk = create_feature_loss("reviewkd")
    rk.build([torch.Size((2, 16, 32, 32)), torch.Size((2, 32, 16, 16)), torch.Size((2, 64, 8, 8)), torch.Size((2, 64, 1, 1))],
             [torch.Size((2, 32, 32, 32)), torch.Size((2, 64, 16, 16)), torch.Size((2, 128, 8, 8)), torch.Size((2, 128, 1, 1))])
    assert rk.shapes == [1, 8, 16, 32] and rk.abfs[0].att is None and all(a.att is not None for a in rk.abfs[1:])
    assert [a.conv2[0].out_channels for a in rk.abfs] == [128, 128, 64, 32]  # deepest first, as the reference
    xs = [torch.randn(2, 16, 32, 32), torch.randn(2, 32, 16, 16), torch.randn(2, 64, 8, 8), torch.randn(2, 64, 1, 1)]
    ts = [torch.randn(2, 32, 32, 32), torch.randn(2, 64, 16, 16), torch.randn(2, 128, 8, 8), torch.randn(2, 128, 1, 1)]
    rk.epoch = 1
    first = rk(xs, ts)
    rk.epoch = 20
    torch.testing.assert_close(first * 20, rk(xs, ts))  # min(epoch / 20, 1), epochs from 1 (mdistiller)


def test_ofd_keeps_its_teacher_in_train_mode(tmp_path, splits, teacher):
    tr = Trainer(_cfg(tmp_path, "ofd", "train.run_name=ofd", "train.epochs=1", f"networks.teacher.checkpoint={teacher}"),
                 data=splits)
    assert tr.method.train_mode_teachers == {"teacher"}
    tr.train_epoch()
    assert tr.networks["teacher"].model.training and not tr.networks["teacher"].optimizer
