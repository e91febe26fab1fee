"""The step contract of every method, and SwitOKD's pause semantics on real networks."""
import copy

import pytest
import torch

from switokd import config as C
from switokd.methods import METHODS, SwitOKDPair, create_method
from switokd.train.trainer import Trainer

from conftest import tiny_config

ROLES = {"teacher": "teacher", "student": "student"}


def logits_pair(seed=0, n=8, c=5):
    g = torch.Generator().manual_seed(seed)
    return ({"teacher": torch.randn(n, c, generator=g).requires_grad_(),
             "student": torch.randn(n, c, generator=g).requires_grad_()},
            torch.randint(0, c, (n,), generator=g))


# The logit methods; the feature methods' step needs features too (tests/test_features.py).
LOGIT_METHODS = [m for m in METHODS.names() if not create_method(m, ROLES).feature_requests()]


@pytest.mark.parametrize("name", [m for m in LOGIT_METHODS if m != "kd"])
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
    cfg = tiny_config(tmp_path, overrides=["method.options.force_mode=learning", "method.options.freeze_teacher_bn=true"])
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
    tr = Trainer(tiny_config(tmp_path, overrides=["method.options.force_mode=expert"]), data=splits, writable=False)
    model_before, opt_before = _snapshot(tr, "teacher")
    _train_steps(tr, 2)
    model_after, opt_after = _snapshot(tr, "teacher")
    params = dict(tr.networks["teacher"].model.named_parameters())
    assert all(torch.equal(model_before[k], model_after[k]) for k in params)
    assert not torch.equal(model_before["features.1.bn1.running_mean"], model_after["features.1.bn1.running_mean"])
    assert opt_after["state"] == {}


def test_learning_step_changes_both(tmp_path, splits):
    tr = Trainer(tiny_config(tmp_path, overrides=["method.options.force_mode=learning"]), data=splits, writable=False)
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
    from switokd.core.losses import cross_entropy, kl_div
    m = create_method("kd", {"t1": "teacher", "t2": "teacher", "s": "student"})
    out = m.step(z, y)
    kl1, kl2 = kl_div(z["t1"], z["s"], 4.0, True), kl_div(z["t2"], z["s"], 4.0, True)
    assert out.losses["s"]["kl"].item() == pytest.approx(((kl1 + kl2) / 2).item(), rel=1e-6)
    # mdistiller's KD recipe: 0.1 * CE + 0.9 * tau^2 * KL.
    assert out.losses["s"]["loss"].item() == pytest.approx((0.1 * cross_entropy(z["s"], y) + 0.9 * (kl1 + kl2) / 2).item(),
                                                           rel=1e-6)
    assert out.stepping == ("s",)


def test_kdcl_mean_ensemble_is_the_mean_of_logits():
    z = {"teacher": torch.tensor([[2.0, 0.0, -2.0]]), "student": torch.tensor([[0.0, 2.0, 0.0]])}
    y = torch.tensor([0])
    from switokd.core.losses import kl_div
    target = torch.tensor([[1.0, 1.0, -1.0]])  # the mean of the two rows
    naive = create_method("kdcl", ROLES, ensemble="mean").step(z, y)
    for n in z:
        assert naive.losses[n]["kl"].item() == pytest.approx(kl_div(target, z[n], 1.0, True).item(), abs=1e-6)
    minlogit = create_method("kdcl", ROLES).step(z, y)  # a different target: the default is not the mean
    assert minlogit.losses["student"]["kl"].item() != pytest.approx(naive.losses["student"]["kl"].item(), abs=1e-3)
    with pytest.raises(ValueError, match="minlogit"):
        create_method("kdcl", ROLES, ensemble="median")


def test_loss_weights_and_temperature_reach_every_method():
    """ce_weight, kl_weight and tau given to create_method are the ones each method's losses use."""
    from switokd.core.losses import cross_entropy, kl_div
    from switokd.methods.base import LossWeights
    cohort = {"t1": "teacher", "t2": "teacher", "s": "student"}
    for name, roles in [("vanilla", ROLES), ("kd", ROLES), ("dml", ROLES), ("kdcl", ROLES), ("switokd", ROLES),
                        ("switokd", cohort)]:
        m = create_method(name, roles, tau=3.0, ce_weight=0.5, kl_weight=2.0, tau2=False)
        assert m.weights == LossWeights(tau=3.0, ce_weight=0.5, kl_weight=2.0, tau2=False), name
        assert m.roles == roles and repr(m).startswith(f"{type(m).__name__}(teachers="), name
    z, y = logits_pair()
    van = create_method("vanilla", ROLES, ce_weight=0.5).step(z, y)
    assert van.losses["student"]["loss"].item() == pytest.approx(0.5 * cross_entropy(z["student"], y).item(), rel=1e-6)
    assert "kl" not in van.losses["student"]
    pair = create_method("switokd", ROLES, tau=3.0, ce_weight=0.5, kl_weight=2.0, force_mode="learning").step(z, y)
    want = 0.5 * cross_entropy(z["student"], y) + 2.0 * kl_div(z["teacher"], z["student"], 3.0)
    assert pair.losses["student"]["loss"].item() == pytest.approx(want.item(), rel=1e-6)


def test_dml_takes_the_mean_over_peers():
    """With three networks the mean and the sum differ: DML's KL is the mean (Zhang et al. 2018)."""
    from switokd.core.losses import cross_entropy, kl_div
    g = torch.Generator().manual_seed(5)
    z = {n: torch.randn(6, 4, generator=g) for n in ("a", "b", "c")}
    y = torch.randint(0, 4, (6,), generator=g)
    out = create_method("dml", {n: "student" for n in z}).step(z, y)
    for n in z:
        kls = [kl_div(z[u], z[n]) for u in z if u != n]
        assert out.losses[n]["kl"].item() == pytest.approx(((kls[0] + kls[1]) / 2).item(), rel=1e-6)
        assert out.losses[n]["loss"].item() == pytest.approx((cross_entropy(z[n], y) + (kls[0] + kls[1]) / 2).item(),
                                                             rel=1e-6)
    from switokd.methods.base import LossWeights, distill_loss
    with pytest.raises(ValueError, match="reduce must be 'sum' or 'mean'"):
        distill_loss(z["a"], y, [z["b"]], LossWeights(), reduce="max")


@pytest.mark.parametrize("name,roles,message", [
    ("kd", {"t": "teacher"}, "method 'kd' needs at least one teacher and one student"),
    ("kd", {"s": "student"}, "method 'kd' needs at least one teacher and one student"),
    ("switokd", {"t": "teacher", "u": "teacher"}, "method 'switokd' needs at least one teacher and one student"),
    ("switokd", {"s": "student", "u": "student"}, "method 'switokd' needs at least one teacher and one student"),
    ("dml", {"a": "student"}, "method 'dml' needs at least 2 networks, got 1"),
    ("kdcl", {"a": "student"}, "method 'kdcl' needs at least 2 networks, got 1"),
])
def test_role_errors_say_what_is_missing(name, roles, message):
    with pytest.raises(ValueError) as e:
        create_method(name, roles)
    assert str(e.value) == message


def test_option_errors_say_what_is_wrong():
    with pytest.raises(TypeError) as e:
        create_method("dml", ROLES, temperature=2)
    assert str(e.value) == "method 'dml' has no option 'temperature' (its options: none)"
    for roles in (ROLES, {"t1": "teacher", "t2": "teacher", "s": "student"}):
        with pytest.raises(ValueError) as e:
            create_method("switokd", roles, force_mode="paused")
        assert str(e.value) == "switokd option force_mode must be one of 'learning', 'expert' or unset, got 'paused'"
    for roles in ({"t1": "teacher", "t2": "teacher", "s": "student"}, {"t": "teacher", "s1": "student", "s2": "student"}):
        with pytest.raises(ValueError) as e:
            SwitOKDPair(roles)
        assert str(e.value) == "SwitOKDPair needs exactly one teacher and one student; use SwitOKD for cohorts"


# Logits where the switch fires by itself: the teacher is right and confident, its leftover mass sits on
# another class than the student's mistake (test_switching.py's expert case).
ZT_EXPERT = torch.tensor([[4.0, 2.0, -4.0], [-4.0, 4.0, 2.0]])
ZS_EXPERT = torch.tensor([[0.0, -4.0, 3.0], [3.0, 0.0, -4.0]])
Y_EXPERT = torch.tensor([0, 1])


def test_natural_expert_step_of_the_pair_method():
    from switokd.core.switching import switch_stats
    z = {"teacher": ZT_EXPERT.clone(), "student": ZS_EXPERT.clone()}
    out = create_method("switokd", ROLES).step(z, Y_EXPERT)
    assert out.expert == {"teacher->student": True} and out.stepping == ("student",)
    assert "teacher" not in out.losses
    # At another temperature the method decides on the statistics at that temperature.
    out4 = create_method("switokd", ROLES, tau=4.0).step(z, Y_EXPERT)
    ref = switch_stats(ZT_EXPERT, ZS_EXPERT, Y_EXPERT, 4.0)
    assert out4.switches["teacher->student"].gap.item() == pytest.approx(ref.gap.item(), abs=1e-6)
    assert ref.gap.item() != pytest.approx(switch_stats(ZT_EXPERT, ZS_EXPERT, Y_EXPERT).gap.item(), abs=1e-3)


def test_cohort_pauses_one_teacher_and_steps_the_next():
    """Two teachers: the first is paused by its own switch, the second (equal to the student) keeps learning."""
    from switokd.core.switching import switch_stats
    roles = {"t1": "teacher", "t2": "teacher", "s": "student"}
    z = {"t1": ZT_EXPERT, "t2": ZS_EXPERT.clone(), "s": ZS_EXPERT}
    out = create_method("switokd", roles).step(z, Y_EXPERT)
    assert out.expert == {"t1->s": True, "t2->s": False}
    assert out.stepping == ("t2", "s") and "t1" not in out.losses
    out4 = create_method("switokd", roles, tau=4.0).step(z, Y_EXPERT)
    assert out4.switches["t1->s"].gap.item() == pytest.approx(switch_stats(ZT_EXPERT, ZS_EXPERT, Y_EXPERT, 4.0).gap.item(),
                                                              abs=1e-6)
    held = create_method("switokd", roles, force_mode="expert").step(z, Y_EXPERT)
    assert held.stepping == ("s",) and held.expert == {"t1->s": True, "t2->s": True}
    learning = create_method("switokd", roles, force_mode="learning").step(z, Y_EXPERT)
    assert learning.stepping == ("t1", "t2", "s")


# ------------------------------------------------------------------ method.loss, logit_std, options, a user's method


def test_method_config_keys_build_the_method():
    from switokd.methods import method_from_config
    m = method_from_config(C.load_config(None, ["method.name=dml", "method.loss=dkd", "method.loss_options.beta=2",
                                                "method.logit_std=true"]))
    # DKD+LS's recipe: tau 2, DKD weight 9 (logit-standardization-KD's --base-temp 2 --kd-weight 9); beta as given.
    assert (m.distill.name, m.distill.beta, m.distill.logit_std, m.weights.tau, m.weights.kl_weight) == ("dkd", 2.0, True, 2.0, 9.0)
    assert method_from_config(C.load_config(None, ["method.name=dml", "method.loss=dist"])).label("dml") == "dml+dist"
    m = method_from_config(C.load_config(None, ["method.name=uniokd", "method.options={expert_tau: 3}"]))
    assert m.expert_tau == 3.0
    assert method_from_config(C.load_config(None, ["method.name=kdcl", "method.options.ensemble=mean"])).ensemble.__name__ == "mean_ensemble"


@pytest.mark.parametrize("overrides,message", [
    (["method.loss=dkx"], "config key 'method.loss': unknown distillation loss 'dkx'. Did you mean 'dkd'?"),
    (["method.loss=dkd", "method.loss_options.gamma=1"],
     "config key 'method.loss_options': distillation loss 'dkd' has no option 'gamma' (its options: alpha, beta, warmup)"),
    (["method.loss=dkd", "method.warmup_epochs=-1"], "config key 'method.warmup_epochs': must be >= 0, got -1"),
    (["method.loss=dkd", "method.loss_options.warmup=5"],
     "config key 'method.loss_options': method.loss_options has no key 'warmup'; did you mean method.warmup_epochs?"),
    (["method.options.foo=1"], "config key 'method.options': method 'switokd' has no option 'foo' (its options: "
     "force_mode, freeze_teacher_bn)"),
    (["method.name=vanilla", "method.loss=dkd"], "config key 'method.name': method 'vanilla' trains on the labels alone"),
    (["method.name=uniokd", "method.tau=3"], "config key 'method.tau': method 'uniokd' sets its temperatures"),
    (["method.name=uniokd", "method.loss=dist"], "config key 'method.loss': method 'uniokd' is defined with the KL loss"),
    (["method.name=dkd", "method.loss=kl"], "config key 'method.name': method 'dkd' is offline KD with the dkd loss"),
    (["method.name=nomodule_here:f"], "config key 'method.name': method 'nomodule_here:f': cannot import nomodule_here"),
    (["method.options={tau: 2}"], "config key 'method.options': tau are method.* keys of their own"),
    (["method.loss_options=3"], "config key 'method.loss_options': expected a mapping"),
])
def test_bad_method_keys_name_the_key(overrides, message):
    from switokd.methods import method_from_config
    with pytest.raises(C.ConfigError) as e:
        method_from_config(C.load_config(None, overrides))
    assert str(e.value).startswith(message), str(e.value)


USER_METHOD = '''
from switokd.methods import Method, StepOutput


class HalfKD(Method):
    """A user's method: the student learns from the teacher with half the KL weight; the teacher alone."""

    name = "halfkd"

    def __init__(self, roles, *, share: float = 0.5, **kw):
        super().__init__(roles, **kw)
        self.share = share

    def step(self, logits, targets):
        t, s = self.teachers[0], self.students[0]
        losses = {t: self.loss(logits[t], targets, []), s: self.loss(logits[s], targets, [logits[t]])}
        losses[s]["loss"] = losses[s]["ce"] + self.share * losses[s]["kl"]
        return StepOutput(losses, (t, s))


def make(roles, **kw):
    return HalfKD(roles, **kw)
'''


def test_a_users_method_is_one_file(tmp_path, monkeypatch):
    (tmp_path / "my_methods.py").write_text(USER_METHOD)
    monkeypatch.syspath_prepend(str(tmp_path))
    from switokd.methods import method_from_config
    m = method_from_config(C.load_config(None, ["method.name=my_methods:make", "method.options.share=0.25"]))
    assert type(m).__name__ == "HalfKD" and m.share == 0.25
    out = m.step({"teacher": torch.randn(4, 10), "student": torch.randn(4, 10)}, torch.arange(4))
    assert out.stepping == ("teacher", "student")
    with pytest.raises(C.ConfigError, match="has no option 'sharing'"):
        method_from_config(C.load_config(None, ["method.name=my_methods:make", "method.options.sharing=1"]))


# ------------------------------------------------------------------ token-level logits, ignore_index


@pytest.mark.parametrize("name", ["switokd", "uniokd", "dml", "kdcl", "vanilla"])
def test_token_logits_with_ignore_index_equal_the_kept_rows(name):
    """[B, T, C] logits with -100 labels give exactly what the [N, C] rows of the kept positions give."""
    from switokd import decide, switch_stats
    g = torch.Generator().manual_seed(0)
    zt, zs = torch.randn(3, 7, 11, generator=g) * 3, torch.randn(3, 7, 11, generator=g) * 3
    y = torch.randint(0, 11, (3, 7), generator=g)
    y[0, 4:] = -100
    y[2, :2] = -100
    keep = y.reshape(-1) != -100
    m = create_method(name, ROLES)
    tok = m.step({"teacher": zt, "student": zs}, y)
    row = m.step({"teacher": zt.reshape(-1, 11)[keep], "student": zs.reshape(-1, 11)[keep]}, y.reshape(-1)[keep])
    assert tok.stepping == row.stepping and tok.expert == row.expert
    for n in row.losses:
        for k, v in row.losses[n].items():
            assert tok.losses[n][k].item() == pytest.approx(v.item(), rel=1e-6), (n, k)
    s_tok, s_row = switch_stats(zt, zs, y), switch_stats(zt.reshape(-1, 11)[keep], zs.reshape(-1, 11)[keep], y.reshape(-1)[keep])
    assert s_tok.gap.item() == pytest.approx(s_row.gap.item()) and decide(zt, zs, y).expert == bool(s_row.expert)


@pytest.mark.parametrize("logits,labels,message", [
    ({"teacher": torch.randn(4, 10)}, torch.arange(4), "no logits for network(s) 'student' (got 'teacher'"),
    ({"teacher": torch.randn(4, 10), "student": torch.randn(4, 9)}, torch.arange(4), "the networks' logits differ in shape"),
    ({"teacher": torch.randn(2, 3, 10), "student": torch.randn(2, 3, 10)}, torch.zeros(2, 4, dtype=torch.long),
     "logits of shape (2, 3, 10) need labels of shape (2, 3), got (2, 4)"),
    ({"teacher": torch.randn(2, 10), "student": torch.randn(2, 10)}, torch.tensor([3, 12]),
     "label 12 is outside the 10 classes"),
    ({"teacher": torch.randn(2, 10), "student": torch.randn(2, 10)}, torch.tensor([-100, -100]),
     "every label of the batch is ignore_index (-100)"),
])
def test_bad_logits_or_labels_are_one_line(logits, labels, message):
    with pytest.raises(ValueError) as e:
        create_method("switokd", ROLES).step(logits, labels)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_role_typo_is_one_line():
    with pytest.raises(ValueError, match=r"roles must be 'teacher' or 'student', got \{'student': 'studnet'\}"):
        create_method("dml", {"teacher": "teacher", "student": "studnet"})
