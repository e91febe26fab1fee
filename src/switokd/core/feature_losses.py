"""The feature-distillation losses as pure tensor maths: student features in, teacher features (detached by the
caller) in, a scalar out. Each restates its reference (mdistiller ``mdistiller/distillers/*.py`` at a08d46f,
RepDistiller ``distiller_zoo/*.py`` at b84f547, which agree); ``docs/method.md`` cites each and says where we
differ. The trainable parts (connectors, regressors, variances) are the callers' modules
(``switokd.methods.features``).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def match_spatial(fs: Tensor, ft: Tensor) -> tuple[Tensor, Tensor]:
    """Pool the larger of two feature maps to the smaller's size (AT, NST, VID: square maps)."""
    hs, ht = fs.shape[-1], ft.shape[-1]
    if hs > ht:
        fs = F.adaptive_avg_pool2d(fs, ft.shape[-2:])
    elif hs < ht:
        ft = F.adaptive_avg_pool2d(ft, fs.shape[-2:])
    return fs, ft


def attention_map(f: Tensor, p: float = 2.0) -> Tensor:
    """AT's spatial attention: the channel mean of f^p, flattened and L2-normalised per image ([N, H*W])."""
    return F.normalize(f.pow(p).mean(1).flatten(1), dim=1)


def at_loss(fs: Sequence[Tensor], ft: Sequence[Tensor], p: float = 2.0) -> Tensor:
    """Attention transfer (Zagoruyko & Komodakis 2017), the references' "code" form: per stage, the mean squared
    difference of the attention maps; summed over stages."""
    total = fs[0].new_zeros(())
    for s, t in zip(fs, ft):
        s, t = match_spatial(s, t)
        total = total + (attention_map(s, p) - attention_map(t, p)).pow(2).mean()
    return total


def _poly_kernel(a: Tensor, b: Tensor) -> Tensor:
    """K[n, i, j] = <b_i, a_j>^2 for a [N, Ca, L] and b [N, Cb, L] (the reference's broadcast, as one bmm)."""
    return torch.bmm(b, a.transpose(1, 2)).pow(2)


def nst_loss(fs: Sequence[Tensor], ft: Sequence[Tensor]) -> Tensor:
    """Neuron selectivity transfer (Huang & Wang 2017): squared MMD with the polynomial kernel (d 2, c 0) between
    the channels' L2-normalised spatial responses; summed over stages."""
    total = fs[0].new_zeros(())
    for s, t in zip(fs, ft):
        s, t = match_spatial(s, t)
        s = F.normalize(s.flatten(2), dim=2)
        t = F.normalize(t.flatten(2), dim=2)
        total = total + _poly_kernel(t, t).mean().detach() + _poly_kernel(s, s).mean() - 2 * _poly_kernel(s, t).mean()
    return total


def pkt_loss(fs: Tensor, ft: Tensor, eps: float = 1e-7) -> Tensor:
    """Probabilistic knowledge transfer (Passalis & Tefas 2018): KL between the batch's cosine-similarity
    distributions (mapped to [0, 1], row-normalised), averaged over all N x N entries."""
    def cond(f: Tensor) -> Tensor:
        f = f.flatten(1)
        f = torch.nan_to_num(f / (f.norm(dim=1, keepdim=True) + eps), nan=0.0)
        sim = (f @ f.t() + 1.0) / 2.0
        return sim / sim.sum(1, keepdim=True)

    s, t = cond(fs), cond(ft)
    return torch.mean(t * torch.log((t + eps) / (s + eps)))


def _pdist(e: Tensor, eps: float = 1e-12) -> Tensor:
    sq = e.pow(2).sum(1)
    d = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * e @ e.t()).clamp(min=eps).sqrt()
    return d * (1 - torch.eye(len(e), device=e.device, dtype=e.dtype))


def rkd_loss(fs: Tensor, ft: Tensor, distance_weight: float = 25.0, angle_weight: float = 50.0) -> Tensor:
    """Relational KD (Park et al. 2019): smooth-L1 between the mean-normalised pairwise distances, and between
    the angles of every triplet."""
    s, t = fs.flatten(1), ft.flatten(1)
    with torch.no_grad():
        td = _pdist(t)
        td = td / td[td > 0].mean()
    sd = _pdist(s)
    sd = sd / sd[sd > 0].mean()
    loss_d = F.smooth_l1_loss(sd, td)

    def angles(e: Tensor) -> Tensor:
        v = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)
        return torch.bmm(v, v.transpose(1, 2)).flatten()

    with torch.no_grad():
        ta = angles(t)
    loss_a = F.smooth_l1_loss(angles(s), ta)
    return distance_weight * loss_d + angle_weight * loss_a


def sp_loss(fs: Tensor, ft: Tensor) -> Tensor:
    """Similarity-preserving KD (Tung & Mori 2019): the squared difference of the row-normalised batch Gram
    matrices, summed and divided by N^2."""
    n = fs.shape[0]
    gs = F.normalize(fs.flatten(1) @ fs.flatten(1).t(), dim=1)
    gt = F.normalize(ft.flatten(1) @ ft.flatten(1).t(), dim=1)
    return (gt - gs).pow(2).sum() / (n * n)


def vid_nll(mu: Tensor, ft: Tensor, log_scale: Tensor, eps: float = 1e-5) -> Tensor:
    """Variational information distillation (Ahn et al. 2019): the Gaussian negative log-likelihood (without its
    constant) of the teacher's feature under the student's prediction ``mu`` with a per-channel variance
    softplus(log_scale) + eps, averaged over every entry."""
    var = (F.softplus(log_scale) + eps).view(1, -1, 1, 1)
    return torch.mean(0.5 * ((mu - ft).pow(2) / var + torch.log(var)))


def vid_log_scale_init(init_var: float = 5.0, eps: float = 1e-5) -> float:
    """The inverse softplus of ``init_var - eps``: the log-scale whose variance starts at ``init_var``."""
    return math.log(math.exp(init_var - eps) - 1.0)


def crd_contrast_loss(x: Tensor, n_data: int, eps: float = 1e-7) -> Tensor:
    """CRD's NCE loss (Tian et al. 2020; RepDistiller ``crd/criterion.py``): ``x`` [N, K+1] holds the
    normalised scores of each anchor's positive (column 0) and K negatives, the noise distribution uniform over
    the ``n_data`` training images; the positive's log-probability of being data, plus the negatives' of being
    noise, summed and divided by N."""
    m = x.shape[1] - 1
    pn = 1.0 / n_data
    log_d1 = torch.log(x[:, 0] / (x[:, 0] + m * pn + eps))
    log_d0 = torch.log((m * pn) / (x[:, 1:] + m * pn + eps))
    return -(log_d1.sum() + log_d0.sum()) / x.shape[0]


def ofd_margin(gamma: Tensor, beta: Tensor) -> Tensor:
    """OFD's per-channel margin from the teacher's BN before a ReLU (Heo et al. 2019): E[x | x < 0] for
    x ~ N(beta, |gamma|^2), or -3|gamma| where that tail holds under 0.1% of the mass."""
    s, m = gamma.abs(), beta
    cdf = 0.5 * (1 + torch.erf(-m / s / math.sqrt(2)))
    pdf_term = s * torch.exp(-(m / s) ** 2 / 2) / math.sqrt(2 * math.pi)
    return torch.where(cdf > 0.001, m - pdf_term / cdf.clamp(min=1e-12), -3 * s)


def ofd_stage_loss(s: Tensor, t: Tensor, margin: Tensor) -> Tensor:
    """OFD's partial L2 (mdistiller ``feat_loss``): the student's pre-activation ``s`` against the teacher's
    ``t`` where either is positive, against the margin where the teacher is below it; summed over C, H, W and
    averaged over the batch."""
    m = margin.view(1, -1, 1, 1)
    loss = ((s - m).pow(2) * ((s > m) & (t <= m)).to(s.dtype) + (s - t).pow(2) * ((s > t) & (t > m) & (t <= 0)).to(s.dtype)
            + (s - t).pow(2) * (t > 0).to(s.dtype))
    return loss.abs().mean(0).sum()


def hcl_loss(fs: Sequence[Tensor], ft: Sequence[Tensor]) -> Tensor:
    """ReviewKD's hierarchical context loss (Chen et al. 2021): per level, MSE at full size and after average
    pooling to 4, 2 and 1 (those below the map's size), weighted 1, 1/2, 1/4, 1/8 and normalised; summed."""
    total = fs[0].new_zeros(())
    for s, t in zip(fs, ft):
        h = s.shape[2]
        loss, cnt, tot = F.mse_loss(s, t), 1.0, 1.0
        for level in (4, 2, 1):
            if level >= h:
                continue
            cnt /= 2.0
            loss = loss + F.mse_loss(F.adaptive_avg_pool2d(s, level), F.adaptive_avg_pool2d(t, level)) * cnt
            tot += cnt
        total = total + loss / tot
    return total


__all__ = ["match_spatial", "attention_map", "at_loss", "nst_loss", "pkt_loss", "rkd_loss", "sp_loss", "vid_nll",
           "vid_log_scale_init", "crd_contrast_loss",
           "ofd_margin", "ofd_stage_loss", "hcl_loss"]
