"""DKD, DIST, logit standardization and UniOKD against plain restatements of their authors' code."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from switokd.core import losses as L
from switokd.methods import LOSSES, create_loss, create_method
from switokd.core.switching import stats_from_sums, pair_sums, uniokd_weight


def _logits(n=16, c=10, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, c, generator=g) * scale, torch.randn(n, c, generator=g) * scale,
            torch.randint(0, c, (n,), generator=g))


# ------------------------------------------------------------------ plain restatements (float64, by the book)

def plain_kl(t, s, tau):
    p = F.softmax(t.double() / tau, 1)
    return (p * (F.log_softmax(t.double() / tau, 1) - F.log_softmax(s.double() / tau, 1))).sum(1)


def plain_dkd(t, s, y, alpha, beta, tau):
    """mdistiller's dkd_loss: masks, cat_mask, log of the binary probabilities, -1000 on the label."""
    t, s = t.double(), s.double()
    gt = F.one_hot(y, t.shape[1]).double()
    ps, pt = F.softmax(s / tau, 1), F.softmax(t / tau, 1)
    bs = torch.stack([(ps * gt).sum(1), (ps * (1 - gt)).sum(1)], 1)
    bt = torch.stack([(pt * gt).sum(1), (pt * (1 - gt)).sum(1)], 1)
    tckd = (bt * (bt.log() - bs.log())).sum(1) * tau ** 2
    pt2 = F.softmax(t / tau - 1000.0 * gt, 1)
    ls2 = F.log_softmax(s / tau - 1000.0 * gt, 1)
    nckd = (pt2 * (pt2.clamp_min(1e-300).log() - ls2)).sum(1) * tau ** 2
    return alpha * tckd + beta * nckd


def plain_dist(t, s, beta, gamma, tau):
    ys, yt = F.softmax(s.double() / tau, 1), F.softmax(t.double() / tau, 1)

    def r(a, b):  # Pearson correlation of the rows
        a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
        return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))
    return tau ** 2 * (beta * (1 - r(ys, yt).mean()) + gamma * (1 - r(ys.t(), yt.t()).mean()))


def plain_std(z):
    z = z.double()
    return (z - z.mean(1, keepdim=True)) / (z.std(1, keepdim=True) + 1e-7)


# ------------------------------------------------------------------ the losses


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("alpha,beta,tau", [(1.0, 8.0, 4.0), (0.5, 2.0, 1.0)])
def test_dkd_matches_mdistiller(seed, alpha, beta, tau):
    t, s, y = _logits(seed=seed)
    got = L.dkd_loss(t, s, y, alpha=alpha, beta=beta, tau=tau)
    assert got.item() == pytest.approx(plain_dkd(t, s, y, alpha, beta, tau).mean().item(), rel=1e-5, abs=1e-6)
    per = L.dkd_loss(t, s, y, alpha=alpha, beta=beta, tau=tau, reduction="none")
    torch.testing.assert_close(per.double(), plain_dkd(t, s, y, alpha, beta, tau), rtol=1e-5, atol=1e-6)


def test_dkd_is_kl_split_in_two():
    """With alpha = beta = 1 and a teacher whose p(y) equals the student's, TCKD is 0 and DKD = NCKD;
    and DKD is 0 exactly when the two predictions agree."""
    t, s, y = _logits(seed=3)
    assert L.dkd_loss(t, t, y).item() == pytest.approx(0.0, abs=1e-6)
    # Confident networks: 1 - p(y) near 1e-30 stays finite (computed from log-sum-exps).
    big = torch.zeros(2, 5)
    big[:, 0] = 200.0
    assert torch.isfinite(L.dkd_loss(big, big * 0.5, torch.tensor([0, 0]))).all()


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("beta,gamma,tau", [(1.0, 1.0, 1.0), (2.0, 0.5, 4.0)])
def test_dist_matches_the_authors(seed, beta, gamma, tau):
    t, s, _ = _logits(seed=seed)
    got = L.dist_loss(t, s, beta=beta, gamma=gamma, tau=tau)
    assert got.item() == pytest.approx(plain_dist(t, s, beta, gamma, tau).item(), rel=1e-5, abs=1e-6)


def test_dist_gradient_grows_as_the_logits_shrink():
    """Why DML+DIST collapses from scratch (benchmarks/results/methods): the Pearson correlation ignores the
    predictions' scale, so its gradient grows as 1 / the logits' scale. At an initialised network's scale
    (logit std 0.02-0.07 here) it is tens of times cross-entropy's, pointing at a peer's random ranking."""
    torch.manual_seed(0)
    z, peer, y = torch.randn(128, 10), torch.randn(128, 10), torch.randint(0, 10, (128,))

    def grad_norm(loss_of, scale):
        zs = (z * scale).requires_grad_()
        return torch.autograd.grad(loss_of(zs), zs)[0].norm().item()
    dist = {sc: grad_norm(lambda zs: L.dist_loss(peer * sc, zs), sc) for sc in (0.01, 0.1, 1.0)}
    ce = grad_norm(lambda zs: F.cross_entropy(zs, y), 0.01)
    assert dist[0.01] == pytest.approx(10 * dist[0.1], rel=0.05)  # 1 / scale at small logits
    assert dist[0.01] > 50 * ce and dist[1.0] < ce


def test_standardize_and_kd_ls():
    t, s, y = _logits(seed=5)
    torch.testing.assert_close(L.standardize(s).double(), plain_std(s), rtol=1e-6, atol=1e-6)
    z = L.standardize(s)
    assert torch.allclose(z.mean(1), torch.zeros(16), atol=1e-6) and torch.allclose(z.std(1), torch.ones(16), atol=1e-5)
    # KD+LS (tau 2, tau^2-scaled KL): the KL of the standardized logits.
    loss = create_loss("kl", tau=2.0, tau2=True, logit_std=True)
    want = (plain_kl(plain_std(t), plain_std(s), 2.0) * 4).mean().item()
    assert loss(t, s, y).item() == pytest.approx(want, rel=1e-5)
    # Any loss takes the modifier: DKD on standardized logits is DKD of the standardized logits.
    dkd = create_loss("dkd", tau=4.0, logit_std=True, warmup=0)
    assert dkd(t, s, y).item() == pytest.approx(plain_dkd(plain_std(t), plain_std(s), y, 1, 8, 4).mean().item(), rel=1e-5)
    # Standardization removes the scale: the loss is the same for 10x logits.
    assert loss(10 * t, 10 * s, y).item() == pytest.approx(loss(t, s, y).item(), rel=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_losses_take_reduced_precision_logits(dtype):
    """Under autocast the logits are bf16/fp16: every loss computes in float32 and gives the float32 value of
    the rounded logits, with gradients of the logits' dtype."""
    t, s, y = _logits(seed=7)
    tl, sl = t.to(dtype), s.to(dtype).requires_grad_()
    for name in LOSSES.names():
        loss = create_loss(name, tau=2.0, **({"warmup": 0} if name == "dkd" else {}))
        got = loss(tl, sl, y)
        assert got.dtype == torch.float32
        want = loss(tl.float(), sl.detach().float(), y)
        assert got.item() == pytest.approx(want.item(), rel=1e-6)
        got.backward()
        assert sl.grad.dtype == dtype and torch.isfinite(sl.grad.float()).all()
        sl.grad = None


def test_dkd_warmup_ramps_by_epoch():
    t, s, y = _logits(seed=1)
    loss = create_loss("dkd", tau=4.0)  # warmup 20, as in the recipe
    full = L.dkd_loss(t, s, y).item()
    for epoch, share in [(1, 1 / 20), (10, 0.5), (20, 1.0), (200, 1.0)]:
        loss.epoch = epoch
        assert loss(t, s, y).item() == pytest.approx(share * full, rel=1e-6)


def test_loss_options_are_checked():
    with pytest.raises(ValueError, match="distillation loss 'dkd' has no option 'gamma' .its options: alpha, beta, warmup."):
        create_loss("dkd", tau=4.0, gamma=1.0)
    with pytest.raises(KeyError, match="unknown distillation loss 'dk'.*Did you mean 'dkd'"):
        create_loss("dk", tau=1.0)
    with pytest.raises(ValueError, match="batch statistic"):
        create_loss("dist", tau=1.0)(*_logits()[:2], _logits()[2], weight=torch.ones(16))


# ------------------------------------------------------------------ methods with a loss

ROLES = {"teacher": "teacher", "student": "student"}


def test_online_methods_take_any_loss():
    t, s, y = _logits(seed=2)
    for loss in ("dkd", "dist"):
        m = create_method("dml", ROLES, loss=loss, warmup_epochs=0 if loss == "dkd" else None)
        out = m.step({"teacher": t, "student": s}, y)
        ref = m.distill(t, s, y).item()
        assert loss in out.losses["student"] and out.losses["student"][loss].item() == pytest.approx(ref)
        # Each loss at its recipe's weight online (DKD 1; DIST 1: its online default, not its offline 2).
        assert m.weights.kl_weight == {"dkd": 1.0, "dist": 1.0}[loss]
        assert out.losses["student"]["loss"].item() == pytest.approx(F.cross_entropy(s, y).item() + m.weights.kl_weight * ref,
                                                                     rel=1e-6)
    assert create_method("dkd", ROLES).distill.name == "dkd" and create_method("dkd", ROLES).weights.tau == 4.0
    assert create_method("dist", ROLES).distill.name == "dist" and create_method("dist", ROLES).weights.tau == 4.0  # dist_t4
    assert create_method("switokd", ROLES, loss="dkd").distill.name == "dkd"


def test_combinations_that_make_no_sense_are_refused():
    with pytest.raises(ValueError, match="trains on the labels alone"):
        create_method("vanilla", ROLES, loss="dkd")
    with pytest.raises(ValueError, match="offline KD with the dkd loss; for the dist loss use method.name=kd method.loss=dist"):
        create_method("dkd", ROLES, loss="dist")
    with pytest.raises(ValueError, match="defined with the KL loss"):
        create_method("uniokd", ROLES, loss="dist")
    with pytest.raises(ValueError, match="not method.tau"):
        create_method("uniokd", ROLES, tau=4.0)


# ------------------------------------------------------------------ UniOKD against the authors' script


def plain_uniokd(zt, zs, y, num_classes):
    """UniOKD_code/Train/main.py's train step, restated with float64 tensors: (expert, loss_T, loss_S)."""
    zt, zs = zt.double(), zs.double()
    onehot = F.one_hot(y, num_classes).double()
    mask = (zt.argmax(1) == y).double()
    ps_y = (F.softmax(zs, 1) - onehot).abs().sum(1).mean()
    pt_y = (F.softmax(zt, 1) - onehot).abs().sum(1).mean()
    gap = (F.softmax(zt, 1) - F.softmax(zs, 1)).abs().sum(1).mean()
    eps = torch.exp(-(2 - pt_y) * (pt_y / (pt_y + ps_y)))
    delta = ps_y - eps * pt_y

    def kl_mask(p_logit, q_logit, tau, s_ctrl):
        w = 1 - (1 - mask) + s_ctrl * (1 - mask)
        return (w * plain_kl(p_logit, q_logit, tau)).mean()
    ce_t, ce_s = F.cross_entropy(zt, y), F.cross_entropy(zs, y)
    if gap > delta and pt_y < ps_y:
        return True, None, ce_s + 2 * 4 * 4 * kl_mask(zt, zs, 4, pt_y / 2)
    return False, ce_t + 2 * 2 * kl_mask(zs, zt, 2, 1), ce_s + 2 * 2 * 2 * kl_mask(zt, zs, 2, 1)


def _expert_case(n=32, c=10, seed=0):
    """A right, confident teacher and a weaker student: UniOKD's switch fires (checked below)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, c, (n,), generator=g)
    zt = torch.randn(n, c, generator=g)
    zt[torch.arange(n), y] += 6.0
    zt[:4] = torch.randn(4, c, generator=g) * 3  # a few the teacher gets wrong: the mask matters
    zs = torch.randn(n, c, generator=g) * 2
    return zt, zs, y


@pytest.mark.parametrize("case", ["expert", "learning"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_uniokd_matches_the_authors_script(case, dtype):
    if case == "expert":
        zt, zs, y = _expert_case()
    else:
        zs, zt, y = _expert_case()  # the stronger network as the student: learning mode
    zt, zs = zt.to(dtype), zs.to(dtype)
    expert, want_t, want_s = plain_uniokd(zt, zs, y, 10)
    assert expert == (case == "expert")
    m = create_method("uniokd", ROLES)
    out = m.step({"teacher": zt, "student": zs}, y)
    assert out.expert == {"teacher->student": expert}
    assert out.stepping == (("student",) if expert else ("teacher", "student"))
    assert out.losses["student"]["loss"].item() == pytest.approx(want_s.item(), rel=1e-5)
    if not expert:
        assert out.losses["teacher"]["loss"].item() == pytest.approx(want_t.item(), rel=1e-5)
    st = out.switches["teacher->student"]
    assert st.epsilon.item() == pytest.approx(uniokd_weight(st.student_label_distance, st.teacher_label_distance).item())


def test_uniokd_identity_holds_with_its_epsilon():
    """G - delta = 2 (lead + eps * teacher off-label mass - shared mass) at tau = 1, whatever eps's rule."""
    for seed in range(5):
        zt, zs, y = _logits(seed=seed)
        st = stats_from_sums(pair_sums(zt, zs, y), uniokd_weight)
        lhs = (st.gap - st.threshold).item()
        rhs = 2 * (st.student_lead + st.epsilon * st.teacher_offlabel_mass - st.shared_mass).item()
        assert lhs == pytest.approx(rhs, abs=1e-5)
        d_t, d_s = st.teacher_label_distance.item(), st.student_label_distance.item()
        assert st.epsilon.item() == pytest.approx(math.exp(-(2 - d_t) * d_t / (d_t + d_s)), rel=1e-5)


def test_uniokd_cohort_pairs_switch_apart():
    """1T2S: each pair has its own eps and mode; the teacher is paused only when both pairs are expert."""
    zt, zs_weak, y = _expert_case(seed=1)
    zs_strong = zt + 0.1 * torch.randn_like(zt)
    roles = {"teacher": "teacher", "weak": "student", "strong": "student"}
    m = create_method("uniokd", roles)
    out = m.step({"teacher": zt, "weak": zs_weak, "strong": zs_strong}, y)
    assert out.expert == {"teacher->weak": True, "teacher->strong": False}
    assert "teacher" in out.stepping
    eps = {p: s.epsilon.item() for p, s in out.switches.items()}
    assert eps["teacher->weak"] != pytest.approx(eps["teacher->strong"])
    # The teacher learns from the learning student only: 4 * KL(p_strong^2 || p_T^2).
    want = F.cross_entropy(zt, y).item() + 4 * plain_kl(zs_strong, zt, 2.0).mean().item()
    assert out.losses["teacher"]["loss"].item() == pytest.approx(want, rel=1e-5)
    out = m.step({"teacher": zt, "weak": zs_weak, "strong": zs_weak.clone()}, y)
    assert out.expert == {"teacher->weak": True, "teacher->strong": True} and "teacher" not in out.stepping
