"""Stateless loss functions shared by every method (docs/method.md, "Distillation losses").

Every function takes logits of shape ``[N, C]``, computes in float32 (so bf16/fp16 logits under autocast
stay numerically safe) and treats the target side as a constant (detached): gradients flow only into
``logits``. Functions with a ``reduction`` argument return a per-example vector with ``reduction="none"``,
so that a method can weight examples (UniOKD's teacher-correctness mask).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["kl_div", "cross_entropy", "standardize", "dkd_loss", "dist_loss", "pearson", "minlogit_ensemble",
           "mean_ensemble"]


def _reduce(per_example: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return per_example.mean()
    if reduction == "none":
        return per_example
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def kl_div(target_logits: Tensor, logits: Tensor, tau: float = 1.0, tau2: bool = False,
           reduction: str = "mean") -> Tensor:
    """KL(p_target^tau || p^tau), mean over the batch (``reduction="none"``: per example).

    ``tau2`` multiplies by tau^2 (Hinton et al.'s gradient-scale correction).

    Example:
        >>> z = torch.tensor([[2.0, 0.0, -1.0]])
        >>> float(kl_div(z, z))
        0.0
    """
    log_p = F.log_softmax(logits.float() / tau, dim=1)
    log_q = F.log_softmax(target_logits.detach().float() / tau, dim=1)
    if reduction == "mean":  # torch's batchmean: the sum over the batch, divided once
        loss = F.kl_div(log_p, log_q, reduction="batchmean", log_target=True)
    else:
        loss = _reduce(F.kl_div(log_p, log_q, reduction="none", log_target=True).sum(dim=1), reduction)
    return loss * (tau * tau) if tau2 else loss


def cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy against class indices, in float32."""
    return F.cross_entropy(logits.float(), targets)


def standardize(logits: Tensor, eps: float = 1e-7) -> Tensor:
    """Logit standardization (Sun et al., CVPR 2024): each example's logits z-scored over the classes.

    ``(z - mean(z)) / (std(z) + eps)`` with the unbiased standard deviation, as in the authors' code. Applied
    to both sides before the temperature, it makes a distillation loss match the shape of the teacher's
    logits rather than their scale. The result keeps the input's dtype.

    Example:
        >>> standardize(torch.tensor([[1.0, 2.0, 3.0]]))
        tensor([[-1.0000,  0.0000,  1.0000]])
    """
    mean = logits.mean(dim=-1, keepdim=True)
    std = logits.std(dim=-1, keepdim=True)
    return (logits - mean) / (std + eps)


def dkd_loss(target_logits: Tensor, logits: Tensor, targets: Tensor, *, alpha: float = 1.0, beta: float = 8.0,
             tau: float = 4.0, reduction: str = "mean") -> Tensor:
    """Decoupled KD (Zhao et al., CVPR 2022): alpha * TCKD + beta * NCKD, each times tau^2.

    With p = softmax(z / tau) and y the label: TCKD is the KL between the binary distributions
    [p_T(y), 1 - p_T(y)] and [p_S(y), 1 - p_S(y)]; NCKD the KL between the distributions over the other
    classes, each renormalised (a softmax over the non-target logits). Computed from log-sum-exps, so a
    confident network's 1 - p(y) does not underflow to log 0.

    Args:
        target_logits: the teacher's (or peer's) logits ``[N, C]``, detached.
        logits: the learner's logits ``[N, C]``.
        targets: class indices ``[N]``.
        alpha, beta: the weights of TCKD and NCKD (the recipe's defaults: 1 and 8).
        tau: the temperature (the recipe's: 4).

    Example:
        >>> z = torch.tensor([[3.0, 1.0, 0.0]])
        >>> float(dkd_loss(z, z, torch.tensor([0])))
        0.0
    """
    zt = target_logits.detach().float() / tau
    zs = logits.float() / tau
    n, c = zs.shape
    gt = F.one_hot(targets, num_classes=c).bool()
    # log p(y) and log(1 - p(y)) from log-sum-exps over all classes and over the others.
    lse_t, lse_s = zt.logsumexp(dim=1), zs.logsumexp(dim=1)
    other_t, other_s = zt[~gt].view(n, c - 1), zs[~gt].view(n, c - 1)
    lse_ot, lse_os = other_t.logsumexp(dim=1), other_s.logsumexp(dim=1)
    log_bt = torch.stack([zt[gt] - lse_t, lse_ot - lse_t], dim=1)
    log_bs = torch.stack([zs[gt] - lse_s, lse_os - lse_s], dim=1)
    tckd = (log_bt.exp() * (log_bt - log_bs)).sum(dim=1)
    log_nt = other_t - lse_ot[:, None]
    log_ns = other_s - lse_os[:, None]
    nckd = (log_nt.exp() * (log_nt - log_ns)).sum(dim=1)
    return _reduce((alpha * tckd + beta * nckd) * (tau * tau), reduction)


def pearson(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """Pearson correlation of each row of ``a`` with the same row of ``b`` (a vector of ``a.shape[0]``)."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return F.cosine_similarity(a, b, dim=1, eps=eps)


def dist_loss(target_logits: Tensor, logits: Tensor, *, beta: float = 1.0, gamma: float = 1.0,
              tau: float = 1.0) -> Tensor:
    """DIST (Huang et al., NeurIPS 2022): match the teacher's predictions by correlation, not by value.

    With p = softmax(z / tau): beta * tau^2 * (1 - mean_i r(p_S[i, :], p_T[i, :])) (inter-class: each
    example's ranking of the classes) + gamma * tau^2 * (1 - mean_c r(p_S[:, c], p_T[:, c])) (intra-class:
    each class's ranking of the examples), r the Pearson correlation. The second term is a statistic of the
    whole batch, so DIST has no per-example form.

    Args:
        target_logits: the teacher's (or peer's) logits ``[N, C]``, detached.
        logits: the learner's logits ``[N, C]``.
        beta, gamma: the weights of the inter- and intra-class terms (the authors' code: 1 and 1).
        tau: the temperature (the authors' code: 1).

    Example:
        >>> z = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
        >>> round(float(dist_loss(z, z)), 6)
        0.0
    """
    p_t = F.softmax(target_logits.detach().float() / tau, dim=1)
    p_s = F.softmax(logits.float() / tau, dim=1)
    inter = 1.0 - pearson(p_s, p_t).mean()
    intra = 1.0 - pearson(p_s.t(), p_t.t()).mean()
    return (tau * tau) * (beta * inter + gamma * intra)


def minlogit_ensemble(logits: list[Tensor], targets: Tensor) -> Tensor:
    """KDCL-MinLogit ensemble (Guo et al. 2020).

    Each network's logits are shifted so that the true class's logit is 0
    (z - z_y); the ensemble takes, per class, the minimum over networks.
    The result is detached: it is a soft target.
    """
    shifted = []
    for z in logits:
        z = z.detach().float()
        shifted.append(z - z.gather(1, targets[:, None]))
    return torch.stack(shifted).amin(dim=0)


def mean_ensemble(logits: list[Tensor], targets: Tensor | None = None) -> Tensor:
    """KDCL-Naive ensemble: the plain mean of the networks' logits (detached)."""
    return torch.stack([z.detach().float() for z in logits]).mean(dim=0)
