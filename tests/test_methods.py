"""The step contract of every method, and SwitOKD's pause semantics on real networks."""
import copy

import pytest
import torch

from switokd.methods import METHODS, SwitOKDPair, create_method
from switokd.trainer import Trainer

from conftest import tiny_config

ROLES = {"teacher": "teacher", "student": "student"}


def logits_pair(seed=0, n=8, c=5):
    g = torch.Generator().manual_seed(seed)
    return ({"teacher": torch.randn(n, c, generator=g).requires_grad_(),
             "student": torch.randn(n, c, generator=g).requires_grad_()},
            torch.randint(0, c, (n,), generator=g))


@pytest.mark.parametrize("name", [m for m in METHODS.names() if m != "kd"])
def test_step_contract(name):
    z, y = logits_pair()
    out = create_method(name, ROLES).step(z, y)
    assert set(out.stepping) <= set(z)
    for n in out.stepping:
        terms = out.losses[n]
        assert "ce" in terms and "loss" in terms and terms["loss"].requires_grad and terms["loss"].ndim == 0


def test_kd_trains_students_only():
    z, y = logits_pair()
    m = create_method("kd", ROLES)
    assert m.frozen == {"teacher"}
    out = m.step(z, y)
    assert out.stepping == ("student",)
    assert m.weights.tau == 4.0 and m.weights.tau2


def test_method_golden_losses():
    z = {"teacher": torch.tensor([[2.0, 0.0, -1.0]]), "student": torch.tensor([[0.0, 1.0, 0.0]])}
    y = torch.tensor([0])
    ce_s = 1.551444713932051  # -log softmax([0, 1, 0])[0]
    kl_ts = 0.9129828978197839  # KL(softmax([2,0,-1]) || softmax([0,1,0]))
    out = create_method("dml", ROLES).step(z, y)
    assert out.losses["student"]["ce"].item() == pytest.approx(ce_s, abs=1e-6)
    assert out.losses["student"]["kl"].item() == pytest.approx(kl_ts, abs=1e-6)
    out = create_method("switokd", ROLES, force_mode="learning").step(z, y)
    assert out.losses["student"]["loss"].item() == pytest.approx(ce_s + kl_ts, abs=1e-6)
    out = create_method("switokd", ROLES, tau=2.0, tau2=True, kl_weight=0.5).step(z, y)
    kl_tau2 = 0.2728055641273419  # KL(softmax([2,0,-1]/2) || softmax([0,1,0]/2))
    assert out.losses["student"]["loss"].item() == pytest.approx(ce_s + 0.5 * 4 * kl_tau2, abs=1e-5)


@pytest.mark.parametrize("name", ["dml", "kdcl", "switokd"])
def test_no_gradient_crosses_between_networks(name):
    kw = {"force_mode": "learning"} if name == "switokd" else {}
    z, y = logits_pair()
    out = create_method(name, ROLES, **kw).step(z, y)
    out.losses["student"]["loss"].backward()
    assert z["teacher"].grad is None and z["student"].grad is not None
    z, y = logits_pair()
    out = create_method(name, ROLES, **kw).step(z, y)
    out.losses["teacher"]["loss"].backward()
    assert z["student"].grad is None and z["teacher"].grad is not None


def test_expert_mode_skips_teacher_loss():
    z, y = logits_pair()
    out = create_method("switokd", ROLES, force_mode="expert").step(z, y)
    assert out.stepping == ("student",) and "teacher" not in out.losses
    assert out.expert == {"teacher->student": True}
    assert isinstance(create_method("switokd", ROLES), SwitOKDPair)


def _snapshot(trainer, name):
    net = trainer.networks[name]
    return copy.deepcopy(net.model.state_dict()), copy.deepcopy(net.optimizer.state_dict())


def _equal_state(a, b):
    (ma, oa), (mb, ob) = a, b
    assert all(torch.equal(ma[k], mb[k]) for k in ma)
    sa, sb = oa["state"], ob["state"]
    assert sa.keys() == sb.keys()
    for k in sa:
        for kk in sa[k]:
            assert torch.equal(sa[k][kk], sb[k][kk])


def _train_steps(trainer, n=3):
    trainer.train_loader.set_epoch(0)
    for net in trainer.networks.values():
        net.model.train()
    outs = []
    for i, (x, y) in enumerate(trainer.train_loader):
        if i == n:
            break
        outs.append(trainer.train_step(x, y))
    return outs


def test_expert_step_leaves_teacher_bit_identical(tmp_path, splits):
    # Freeze BN too, so that the whole state dict (buffers included) must stay identical.
    cfg = tiny_config(tmp_path, overrides=["method.force_mode=learning", "method.freeze_teacher_bn=true"])
    tr = Trainer(cfg, data=splits, writable=False)
    _train_steps(tr, 2)  # give the teacher optimizer momentum state first
    before_t, before_s = _snapshot(tr, "teacher"), _snapshot(tr, "student")
    tr.method.force_mode = "expert"
    outs = _train_steps(tr, 3)
    assert all(o.stepping == ("student",) for o in outs)
    _equal_state(_snapshot(tr, "teacher"), before_t)
    after_s = _snapshot(tr, "student")
    assert not all(torch.equal(after_s[0][k], before_s[0][k]) for k in before_s[0])
    assert all(p.grad is None for p in tr.networks["teacher"].model.parameters())


def test_expert_step_updates_teacher_bn_stats_by_default(tmp_path, splits):
    # The authors' scripts run the paused teacher's forward in train mode: BN statistics move.
    tr = Trainer(tiny_config(tmp_path, overrides=["method.force_mode=expert"]), data=splits, writable=False)
    model_before, opt_before = _snapshot(tr, "teacher")
    _train_steps(tr, 2)
    model_after, opt_after = _snapshot(tr, "teacher")
    params = dict(tr.networks["teacher"].model.named_parameters())
    assert all(torch.equal(model_before[k], model_after[k]) for k in params)
    assert not torch.equal(model_before["features.1.bn1.running_mean"], model_after["features.1.bn1.running_mean"])
    assert opt_after["state"] == {}


def test_learning_step_changes_both(tmp_path, splits):
    tr = Trainer(tiny_config(tmp_path, overrides=["method.force_mode=learning"]), data=splits, writable=False)
    before = {n: _snapshot(tr, n)[0] for n in tr.networks}
    outs = _train_steps(tr, 1)
    assert outs[0].stepping == ("teacher", "student")
    for n in tr.networks:
        after = tr.networks[n].model.state_dict()
        assert not torch.equal(after["fc.weight"], before[n]["fc.weight"])


def test_custom_loop_example_runs(capsys):
    import runpy
    from pathlib import Path
    runpy.run_path(str(Path(__file__).parent.parent / "examples" / "custom_loop.py"), run_name="__main__")
    assert capsys.readouterr().out.count("mode=") == 5


def test_kd_averages_over_several_teachers():
    g = torch.Generator().manual_seed(3)
    z = {n: torch.randn(6, 5, generator=g) for n in ("t1", "t2", "s")}
    y = torch.randint(0, 5, (6,), generator=g)
    from switokd.losses import cross_entropy, kl_div
    m = create_method("kd", {"t1": "teacher", "t2": "teacher", "s": "student"})
    out = m.step(z, y)
    kl1, kl2 = kl_div(z["t1"], z["s"], 4.0, True), kl_div(z["t2"], z["s"], 4.0, True)
    assert out.losses["s"]["kl"].item() == pytest.approx(((kl1 + kl2) / 2).item(), rel=1e-6)
    assert out.losses["s"]["loss"].item() == pytest.approx((cross_entropy(z["s"], y) + (kl1 + kl2) / 2).item(), rel=1e-6)
    assert out.stepping == ("s",)


def test_kdcl_mean_ensemble_is_the_mean_of_logits():
    z = {"teacher": torch.tensor([[2.0, 0.0, -2.0]]), "student": torch.tensor([[0.0, 2.0, 0.0]])}
    y = torch.tensor([0])
    from switokd.losses import kl_div
    target = torch.tensor([[1.0, 1.0, -1.0]])  # the mean of the two rows
    naive = create_method("kdcl", ROLES, ensemble="mean").step(z, y)
    for n in z:
        assert naive.losses[n]["kl"].item() == pytest.approx(kl_div(target, z[n], 1.0, True).item(), abs=1e-6)
    minlogit = create_method("kdcl", ROLES).step(z, y)  # a different target: the default is not the mean
    assert minlogit.losses["student"]["kl"].item() != pytest.approx(naive.losses["student"]["kl"].item(), abs=1e-3)
    with pytest.raises(ValueError, match="minlogit"):
        create_method("kdcl", ROLES, ensemble="median")
