"""Golden values for the switching statistics, checked against a plain-Python restatement of docs/method.md."""
import math

import pytest
import torch

from switokd import adaptive_threshold, decide, distillation_gap, label_distance, switch_stats, switch_weight
from switokd.core.losses import kl_div, minlogit_ensemble


def softmax(row, tau=1.0):
    e = [math.exp(v / tau) for v in row]
    return [v / sum(e) for v in e]


def reference(zt, zs, y, tau=1.0):
    """docs/method.md, line by line, in plain Python."""
    n = len(y)
    gap = sum(sum(abs(a - b) for a, b in zip(softmax(t, tau), softmax(s, tau))) for t, s in zip(zt, zs)) / n

    def dist(z):
        return sum(sum(abs(p - (1.0 if c == yi else 0.0)) for c, p in enumerate(softmax(row))) for row, yi in zip(z, y)) / n

    d_t, d_s = dist(zt), dist(zs)
    eps = math.exp(-d_t / (d_s + d_t))
    delta = d_s - eps * d_t
    return dict(gap=gap, d_t=d_t, d_s=d_s, eps=eps, delta=delta, expert=gap > delta and d_t < d_s)


# Hand-computed (see comments) learning-mode case: two classes, two examples.
ZT_A = [[2.0, 0.0], [0.0, 1.0]]
ZS_A = [[0.0, 0.0], [1.0, 0.0]]
Y_A = [0, 1]
# p_T = [.880797, .119203], [.268941, .731059]; p_S = [.5, .5], [.731059, .268941]
# d_T = (0.238406 + 0.537883) / 2, d_S = (1 + 1.462117) / 2, eps = exp(-d_T / (d_S + d_T)), delta = d_S - eps d_T
GOLDEN_A = dict(gap=0.842914, d_t=0.388144, d_s=1.231059, eps=0.786854, delta=0.925646, expert=False)

# Expert-mode case: the teacher is right and confident; its leftover mass sits on a
# different class from the student's mistake, so G exceeds delta.
ZT_B = [[4.0, 2.0, -4.0], [-4.0, 4.0, 2.0]]
ZS_B = [[0.0, -4.0, 3.0], [3.0, 0.0, -4.0]]
Y_B = [0, 1]


def t(x):
    return torch.tensor(x, dtype=torch.float32)


def test_golden_learning_case():
    d = decide(t(ZT_A), t(ZS_A), torch.tensor(Y_A))
    assert d.gap.item() == pytest.approx(GOLDEN_A["gap"], abs=1e-5)
    assert d.teacher_label_distance.item() == pytest.approx(GOLDEN_A["d_t"], abs=1e-5)
    assert d.student_label_distance.item() == pytest.approx(GOLDEN_A["d_s"], abs=1e-5)
    assert d.epsilon.item() == pytest.approx(GOLDEN_A["eps"], abs=1e-5)
    assert d.threshold.item() == pytest.approx(GOLDEN_A["delta"], abs=1e-5)
    assert d.expert is False
    ref = reference(ZT_A, ZS_A, Y_A)
    assert {k: pytest.approx(v, abs=1e-5) for k, v in ref.items()} == GOLDEN_A


def test_golden_expert_case():
    ref = reference(ZT_B, ZS_B, Y_B)
    assert ref["expert"]
    d = decide(t(ZT_B), t(ZS_B), torch.tensor(Y_B))
    assert d.expert is True
    assert d.gap.item() == pytest.approx(ref["gap"], abs=1e-5)
    assert d.threshold.item() == pytest.approx(ref["delta"], abs=1e-5)
    assert d.epsilon.item() == pytest.approx(ref["eps"], abs=1e-5)


def test_two_classes_single_example_never_expert():
    # One example, two classes: G = d_S - d_T <= delta whenever the teacher is better.
    g = torch.Generator().manual_seed(0)
    for _ in range(100):
        zt, zs = torch.randn(1, 2, generator=g) * 3, torch.randn(1, 2, generator=g) * 3
        y = torch.randint(0, 2, (1,), generator=g)
        assert decide(zt, zs, y).expert is False


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("tau", [1.0, 2.0, 4.0])
def test_random_against_reference(seed, tau):
    g = torch.Generator().manual_seed(seed)
    zt, zs = torch.randn(6, 5, generator=g) * 3, torch.randn(6, 5, generator=g) * 3
    y = torch.randint(0, 5, (6,), generator=g)
    ref = reference(zt.tolist(), zs.tolist(), y.tolist(), tau)
    d = decide(zt, zs, y, tau=tau)
    assert d.gap.item() == pytest.approx(ref["gap"], abs=1e-5)
    assert d.threshold.item() == pytest.approx(ref["delta"], abs=1e-5)
    assert d.expert == ref["expert"]


def test_bounds_and_pieces():
    g = torch.Generator().manual_seed(1)
    zt, zs = torch.randn(32, 10, generator=g) * 5, torch.randn(32, 10, generator=g) * 5
    y = torch.randint(0, 10, (32,), generator=g)
    gap = distillation_gap(zt, zs)
    assert 0 <= gap.item() <= 2
    d_t, d_s = label_distance(zt, y), label_distance(zs, y)
    eps = switch_weight(d_s, d_t)
    assert math.exp(-1) - 1e-6 <= eps.item() <= 1 + 1e-6
    delta = adaptive_threshold(d_s, d_t)
    assert (d_s - d_t).item() - 1e-6 <= delta.item() <= d_s.item() + 1e-6
    # Identical networks have no gap and eps = exp(-1/2).
    assert distillation_gap(zt, zt).item() == 0
    assert switch_weight(d_t, d_t).item() == pytest.approx(math.exp(-0.5))
    # Both distances zero: eps is defined (1) rather than NaN.
    assert switch_weight(torch.tensor(0.0), torch.tensor(0.0)).item() == 1.0


def test_statistics_ignore_gradients_and_dtype():
    zt = torch.randn(4, 3, requires_grad=True)
    zs = torch.randn(4, 3, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0])
    d = decide(zt, zs, y)
    assert not d.gap.requires_grad and not d.threshold.requires_grad
    d16 = decide(zt.detach().bfloat16(), zs.detach().bfloat16(), y)
    assert d16.gap.dtype == torch.float32


def test_kl_golden_and_direction():
    target, logits = t([[1.0, 0.0, -1.0]]), t([[0.0, 0.5, 0.0]])
    p, q = softmax(target[0].tolist()), softmax(logits[0].tolist())
    expected = sum(a * math.log(a / b) for a, b in zip(p, q))  # KL(p_target || p)
    assert kl_div(target, logits).item() == pytest.approx(expected, abs=1e-6)
    assert kl_div(target, logits, tau=2.0, tau2=True).item() == pytest.approx(
        4 * sum(a * math.log(a / b) for a, b in zip(softmax([0.5, 0, -0.5]), softmax([0, 0.25, 0]))), abs=1e-6)
    # The target side is detached: only ``logits`` gets a gradient.
    tg, lg = target.clone().requires_grad_(), logits.clone().requires_grad_()
    kl_div(tg, lg).backward()
    assert tg.grad is None and lg.grad is not None


def test_minlogit_golden():
    a, b = t([[2.0, 1.0, 0.0]]), t([[0.0, 3.0, -1.0]])
    y = torch.tensor([1])
    # shifted: a - 1 = [1, 0, -1]; b - 3 = [-3, 0, -4]; min = [-3, 0, -4]
    assert minlogit_ensemble([a, b], y).tolist() == [[-3.0, 0.0, -4.0]]


def reference_diagnostics(zt, zs, y):
    """docs/method.md's a, b, o per example, in plain Python (tau = 1)."""
    n = len(y)
    a = [softmax(r)[yi] for r, yi in zip(zt, y)]
    b = [softmax(r)[yi] for r, yi in zip(zs, y)]
    o = [sum(min(pt, ps) for k, (pt, ps) in enumerate(zip(softmax(rt), softmax(rs))) if k != yi)
         for rt, rs, yi in zip(zt, zs, y)]
    shared, t_off = sum(o) / n, sum(1 - v for v in a) / n
    return dict(shared=shared, t_off=t_off, lead=sum(max(0.0, bi - ai) for ai, bi in zip(a, b)) / n, rho=shared / t_off)


@pytest.mark.parametrize("case", ["A", "B"])
def test_diagnostics_golden(case):
    zt, zs, y = (ZT_A, ZS_A, Y_A) if case == "A" else (ZT_B, ZS_B, Y_B)
    ref = reference_diagnostics(zt, zs, y)
    s = switch_stats(t(zt), t(zs), torch.tensor(y))
    assert s.shared_mass.item() == pytest.approx(ref["shared"], abs=1e-6)
    assert s.teacher_offlabel_mass.item() == pytest.approx(ref["t_off"], abs=1e-6)
    assert s.student_lead.item() == pytest.approx(ref["lead"], abs=1e-6)
    assert s.shared_ratio.item() == pytest.approx(ref["rho"], rel=1e-5)
    # d_T = 2 mean(1 - a): the teacher's off-label mass is half its label distance.
    assert s.teacher_offlabel_mass.item() == pytest.approx(s.teacher_label_distance.item() / 2, abs=1e-6)


def assert_identity(zt, zs, y):
    """G - delta = 2 (lead + eps * teacher off-label mass - shared mass), exactly at tau = 1."""
    s = switch_stats(zt.double(), zs.double(), y)
    lhs = (s.gap - s.threshold).item()
    rhs = 2 * (s.student_lead + s.epsilon * s.teacher_offlabel_mass - s.shared_mass).item()
    assert lhs == pytest.approx(rhs, abs=2e-6), (lhs, rhs)
    return lhs


@pytest.mark.parametrize("seed", range(20))
def test_identity_on_random_logits(seed):
    g = torch.Generator().manual_seed(seed)
    n, c = int(torch.randint(1, 64, (1,), generator=g)), int(torch.randint(2, 120, (1,), generator=g))
    scale = float(torch.rand(1, generator=g) * 8)
    zt, zs = torch.randn(n, c, generator=g) * scale, torch.randn(n, c, generator=g) * scale
    assert_identity(zt, zs, torch.randint(0, c, (n,), generator=g))


def test_identity_on_real_logits(tmp_path, splits):
    """Logits of real networks while they train, in both modes of the switch."""
    from conftest import tiny_config
    from switokd.train.trainer import Trainer

    tr = Trainer(tiny_config(tmp_path, overrides=["train.epochs=3", "train.batch_size=8"]), data=splits, writable=False)
    signs = set()
    for epoch in range(3):
        tr.train_loader.set_epoch(epoch)
        for x, y in tr.train_loader:
            for net in tr.networks.values():
                net.model.train()
            out = tr.train_step(x, y)
            with torch.no_grad():
                for net in tr.networks.values():
                    net.model.eval()
                logits = tr.forward(x)
            gap_minus_delta = assert_identity(logits["teacher"], logits["student"], y)
            signs.add(gap_minus_delta > 0)
            assert out.switches["teacher->student"].shared_ratio.item() >= 0
    assert signs == {True, False}, "the run should visit both sides of the threshold"


def test_switch_fires_exactly_when_rho_is_below_eps_plus_lead():
    """The identity restated as the decision: with d_T < d_S, expert <=> rho < eps + lead / mean(1 - a)."""
    g = torch.Generator().manual_seed(7)
    seen = set()
    for _ in range(300):
        zt = torch.randn(16, 10, generator=g) * 4
        # Students from independent (different mistakes) to a damped copy of the teacher (shared mistakes).
        mix = float(torch.rand(1, generator=g))
        zs = mix * 0.5 * zt + (1 - mix) * torch.randn(16, 10, generator=g) * 3
        y = zt.argmax(1)  # a teacher that is right, so that d_T < d_S mostly holds
        s = switch_stats(zt.double(), zs.double(), y)
        if not bool(s.teacher_label_distance < s.student_label_distance):
            continue
        rule = bool(s.shared_ratio < s.epsilon + s.student_lead / s.teacher_offlabel_mass)
        assert bool(s.expert) == rule
        seen.add(rule)
    assert seen == {True, False}


@pytest.mark.parametrize("tau", [1.0, 2.0, 4.0])
def test_each_statistic_against_reference(tau):
    """Every public function on its own, at several temperatures and with its defaults (tau = 1)."""
    g = torch.Generator().manual_seed(3)
    zt, zs = torch.randn(6, 5, generator=g) * 2, torch.randn(6, 5, generator=g) * 2
    y = torch.randint(0, 5, (6,), generator=g)
    ref, ref1 = reference(zt.tolist(), zs.tolist(), y.tolist(), tau), reference(zt.tolist(), zs.tolist(), y.tolist())
    assert distillation_gap(zt, zs, tau).item() == pytest.approx(ref["gap"], abs=1e-5)
    assert distillation_gap(zt, zs).item() == pytest.approx(ref1["gap"], abs=1e-5)
    assert label_distance(zt, y).item() == pytest.approx(ref["d_t"], abs=1e-5)
    assert label_distance(zs, y).item() == pytest.approx(ref["d_s"], abs=1e-5)
    d_t, d_s = torch.tensor(ref["d_t"]), torch.tensor(ref["d_s"])
    assert adaptive_threshold(d_s, d_t).item() == pytest.approx(ref["delta"], abs=1e-5)
    assert switch_weight(d_s, d_t).item() == pytest.approx(ref["eps"], abs=1e-5)
    from switokd.core.switching import pair_sums
    assert torch.allclose(pair_sums(zt, zs, y), pair_sums(zt, zs, y, 1.0))
    assert pair_sums(zt, zs, y, tau)[0].item() / 6 == pytest.approx(ref["gap"], abs=1e-5)


def test_offlabel_stats_golden():
    """offlabel_stats: mean(o), mean(1 - a), mean(max(0, b - a)) of docs/method.md, computed here by hand."""
    from switokd import offlabel_stats
    zt, zs, y = t(ZT_B), t(ZS_B), torch.tensor(Y_B)
    pt, ps = [softmax(r) for r in ZT_B], [softmax(r) for r in ZS_B]
    o = [sum(min(a, b) for k, (a, b) in enumerate(zip(rt, rs)) if k != yi) for rt, rs, yi in zip(pt, ps, Y_B)]
    off = [1 - rt[yi] for rt, yi in zip(pt, Y_B)]
    lead = [max(0.0, rs[yi] - rt[yi]) for rt, rs, yi in zip(pt, ps, Y_B)]
    shared, t_off, s_lead = offlabel_stats(zt, zs, y)
    assert shared.item() == pytest.approx(sum(o) / 2, abs=1e-6)
    assert t_off.item() == pytest.approx(sum(off) / 2, abs=1e-6)
    assert s_lead.item() == pytest.approx(sum(lead) / 2, abs=1e-6)
    # A student ahead of its teacher on the label: the lead is the difference, not 0.
    _, _, lead2 = offlabel_stats(zs, zt, y)
    assert lead2.item() == pytest.approx(sum(max(0.0, rt[yi] - rs[yi]) for rt, rs, yi in zip(pt, ps, Y_B)) / 2, abs=1e-6)


def test_equal_label_distances_are_not_expert():
    """Expert mode needs d_T < d_S strictly: a teacher no better than its student keeps learning."""
    from switokd.core.switching import stats_from_sums
    sums = torch.tensor([1.0, 0.5, 0.5, 0.0, 0.0, 0.0, 1.0])  # G = 1 far above delta, d_T == d_S
    s = stats_from_sums(sums)
    assert s.gap.item() > s.threshold.item() and not bool(s.expert)
    assert bool(stats_from_sums(torch.tensor([1.0, 0.5, 0.5001, 0.0, 0.0, 0.0, 1.0])).expert)


def test_kl_temperature_and_tau2():
    g = torch.Generator().manual_seed(0)
    zq, zp = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)

    def ref(tau):
        total = 0.0
        for rq, rp in zip(zq.tolist(), zp.tolist()):
            q, p = softmax(rq, tau), softmax(rp, tau)
            total += sum(a * math.log(a / b) for a, b in zip(q, p))
        return total / 4

    assert kl_div(zq, zp, 2.0).item() == pytest.approx(ref(2.0), rel=1e-5)  # tau2 is off by default
    assert kl_div(zq, zp, 2.0, tau2=False).item() == pytest.approx(ref(2.0), rel=1e-5)
    assert kl_div(zq, zp, 2.0, tau2=True).item() == pytest.approx(4 * ref(2.0), rel=1e-5)
    assert kl_div(zq, zp).item() == pytest.approx(ref(1.0), rel=1e-5)
