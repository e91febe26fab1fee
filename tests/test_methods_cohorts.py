"""SwitOKD with more than two networks: every (teacher, student) pair is its own switch."""
import copy

import pytest
import torch

from switokd import config as C
from switokd.core.losses import cross_entropy, kl_div
from switokd.methods import SwitOKDCohort, SwitOKDPair, create_method
from switokd.core.switching import decide
from switokd.train.trainer import Trainer

from conftest import tiny_config
from test_switching import ZS_B, ZT_B


def nets(*spec):
    return [C.NetworkConfig(name=n, model=m, role=r) for n, m, r in spec]


def test_cohort_1t1s_bit_identical_to_pair(tmp_path, splits):
    cfg = tiny_config(tmp_path, overrides=["train.batch_size=8"])
    pair = Trainer(cfg, data=splits, writable=False)
    cohort = Trainer(copy.deepcopy(cfg), data=splits, writable=False)
    assert isinstance(pair.method, SwitOKDPair)
    cohort.method = SwitOKDCohort({"teacher": "teacher", "student": "student"})
    for tr in (pair, cohort):
        tr.train_loader.set_epoch(0)
        for net in tr.networks.values():
            net.model.train()
    # Both branches of the switch: natural decisions, then forced expert and learning steps.
    schedule = [None, None, "expert", "expert", "learning", None, "expert", None]
    for force, (x, y) in zip(schedule, pair.train_loader):
        pair.method.force_mode = cohort.method.force_mode = force
        a, b = pair.train_step(x, y), cohort.train_step(x, y)
        assert a.stepping == b.stepping and a.expert == b.expert
    for n in pair.networks:
        sa, sb = pair.networks[n].model.state_dict(), cohort.networks[n].model.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), n
        oa, ob = pair.networks[n].optimizer.state_dict()["state"], cohort.networks[n].optimizer.state_dict()["state"]
        assert all(torch.equal(oa[i]["momentum_buffer"], ob[i]["momentum_buffer"]) for i in oa)


def test_each_pair_decision_equals_decide():
    g = torch.Generator().manual_seed(0)
    roles = {"t1": "teacher", "t2": "teacher", "s1": "student", "s2": "student"}
    m = create_method("switokd", roles)
    assert isinstance(m, SwitOKDCohort) and len(m.pairs) == 4
    for _ in range(10):
        z = {n: torch.randn(16, 6, generator=g) * 4 for n in roles}
        y = torch.randint(0, 6, (16,), generator=g)
        out = m.step(z, y)
        for t in ("t1", "t2"):
            for s in ("s1", "s2"):
                d = decide(z[t], z[s], y)
                p = f"{t}->{s}"
                assert out.expert[p] == d.expert
                assert torch.equal(out.switches[p].gap, d.gap) and torch.equal(out.switches[p].threshold, d.threshold)
            paused = all(out.expert[f"{t}->{s}"] for s in ("s1", "s2"))
            assert (t not in out.stepping) == paused


def test_teacher_learns_only_from_learning_pairs():
    zt, zs1 = torch.tensor(ZT_B), torch.tensor(ZS_B)  # an expert-mode pair (see test_switching)
    z = {"t": zt, "t2": torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), "s1": zs1, "s2": zt.clone()}  # s2 = t: gap 0
    y = torch.tensor([0, 1])
    out = create_method("switokd", {"t": "teacher", "t2": "teacher", "s1": "student", "s2": "student"}).step(z, y)
    assert out.expert["t->s1"] and not out.expert["t->s2"]
    expected = cross_entropy(zt, y) + kl_div(z["s2"], zt) + kl_div(z["t2"], zt)  # no s1 term
    assert torch.allclose(out.losses["t"]["loss"], expected)
    # Students always learn from every other network.
    exp_s1 = cross_entropy(zs1, y) + kl_div(zt, zs1) + kl_div(z["t2"], zs1) + kl_div(z["s2"], zs1)
    assert torch.allclose(out.losses["s1"]["loss"], exp_s1)


def test_fully_paused_teacher_bit_identical(tmp_path, splits):
    cfg = tiny_config(tmp_path, overrides=["method.options.force_mode=learning"],
                      networks=nets(("t", "wrn16_1", "teacher"), ("s1", "resnet20", "student"), ("s2", "wrn16_1", "student")))
    tr = Trainer(cfg, data=splits, writable=False)
    tr.train_loader.set_epoch(0)
    it = iter(tr.train_loader)
    tr.train_step(*next(it))  # momentum state exists
    before = copy.deepcopy(tr.networks["t"].model.state_dict()), copy.deepcopy(tr.networks["t"].optimizer.state_dict())
    params_before = {k: v.clone() for k, v in tr.networks["t"].model.named_parameters()}
    tr.method.force_mode = "expert"
    for _ in range(3):
        out = tr.train_step(*next(it))
        assert out.stepping == ("s1", "s2")
    assert all(torch.equal(v, params_before[k]) for k, v in tr.networks["t"].model.named_parameters())
    opt_after = tr.networks["t"].optimizer.state_dict()["state"]
    assert all(torch.equal(opt_after[i]["momentum_buffer"], before[1]["state"][i]["momentum_buffer"]) for i in opt_after)


@pytest.mark.parametrize("preset,pairs", [("2T1S", ["teacher1->student", "teacher2->student"]),
                                          ("1T2S", ["teacher->student1", "teacher->student2"])])
def test_presets_train_with_per_pair_telemetry(tmp_path, splits, preset, pairs):
    cfg = tiny_config(tmp_path, overrides=[f"preset={preset}"] + [f"networks.{i}.model=wrn16_1" for i in range(3)])
    assert [n.role for n in cfg.networks].count("teacher") == (2 if preset == "2T1S" else 1)
    tr = Trainer(cfg, data=splits)
    report = tr.fit()
    assert sorted(report["expert_share"]) == pairs
    assert set(report["paused_share"]) == set(n.name for n in cfg.networks if n.role == "teacher")
    from switokd.runs.files import read_jsonl
    row = read_jsonl(tmp_path / "run" / "steps.jsonl")[0]
    assert sorted(row["pair"]) == pairs and sorted(row["mode"]) == pairs


@pytest.mark.parametrize("method", ["dml", "kdcl", "vanilla"])
def test_baselines_take_any_cohort(tmp_path, splits, method):
    cfg = tiny_config(tmp_path, method=method, overrides=["preset=2T1S"] + [f"networks.{i}.model=wrn16_1" for i in range(3)])
    out = Trainer(cfg, data=splits, writable=False)
    out.train_loader.set_epoch(0)
    x, y = next(iter(out.train_loader))
    res = out.train_step(x, y)
    assert res.stepping == ("teacher1", "teacher2", "student")
    if method == "dml":  # mean over the two peers
        assert "kl" in res.losses["student"]


def test_switokd_needs_both_roles():
    with pytest.raises(ValueError, match="at least one teacher and one student"):
        create_method("switokd", {"a": "student", "b": "student"})
