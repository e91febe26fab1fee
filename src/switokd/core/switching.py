"""The SwitOKD switching rule as pure tensor functions.

Notation follows ``docs/method.md``: teacher logits z_T, student logits z_S,
p^tau = softmax(z / tau), y the one-hot label. Every statistic uses detached
logits, is computed in float32 and is a mean over the batch.

- distillation gap      G     = mean_i || p_T^tau - p_S^tau ||_1         (0 <= G <= 2)
- label distance        d     = mean_i || p - y ||_1                      (softmax at tau = 1)
- weight                eps   = exp(-d_T / (d_S + d_T))                  (e^-1 <= eps <= 1)
- adaptive threshold    delta = d_S - eps * d_T
- mode                  EXPERT if G > delta and d_T < d_S, else LEARNING

Diagnostics (docs/method.md, "When the switch fires"), with a = p_T(y), b = p_S(y) and
o = sum over k != y of min(p_T(k), p_S(k)) at tau = 1:

- shared off-label mass     mean(o)
- teacher off-label mass    mean(1 - a)                                (= d_T / 2)
- shared-mass ratio         rho = mean(o) / mean(1 - a)
- student lead              mean(max(0, b - a))

and at tau = 1, exactly: G - delta = 2 * (student lead + eps * teacher off-label mass - shared mass).
So with d_T < d_S the teacher is paused when rho < eps + lead / mean(1 - a): when the student is
wrong in different ways from the teacher, not merely when it is behind.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "distillation_gap",
    "label_distance",
    "switch_weight",
    "uniokd_weight",
    "adaptive_threshold",
    "SwitchStats",
    "switch_stats",
    "SwitchDecision",
    "decide",
    "offlabel_stats",
    "pair_sums",
    "stats_from_sums",
    "SUMS",
]


def distillation_gap(teacher_logits: Tensor, student_logits: Tensor, tau: float = 1.0) -> Tensor:
    """G = mean over the batch of the L1 distance between the softened predictions."""
    p_t = F.softmax(teacher_logits.detach().float() / tau, dim=1)
    p_s = F.softmax(student_logits.detach().float() / tau, dim=1)
    return (p_t - p_s).abs().sum(dim=1).mean()


def label_distance(logits: Tensor, targets: Tensor) -> Tensor:
    """d = mean over the batch of || softmax(z) - onehot(y) ||_1 (targets are class indices)."""
    p = F.softmax(logits.detach().float(), dim=1)
    y = F.one_hot(targets, num_classes=p.shape[1]).to(p.dtype)
    return (p - y).abs().sum(dim=1).mean()


def switch_weight(student_label_distance: Tensor, teacher_label_distance: Tensor) -> Tensor:
    """eps = exp(-d_T / (d_S + d_T)); eps = 1 when both distances are 0."""
    d_s, d_t = student_label_distance, teacher_label_distance
    denom = (d_s + d_t).clamp_min(torch.finfo(torch.float32).tiny)
    return torch.exp(-d_t / denom)


def uniokd_weight(student_label_distance: Tensor, teacher_label_distance: Tensor) -> Tensor:
    """UniOKD's eps = exp(-(2 - d_T) * d_T / (d_S + d_T)) (Qian et al.'s successor to SwitOKD).

    The factor 2 - d_T (in [0, 2]) is the teacher's accuracy margin: a teacher that fits the labels well
    (d_T < 1) gets a smaller eps than SwitOKD's, so a lower bar delta and an earlier pause.
    """
    d_s, d_t = student_label_distance, teacher_label_distance
    denom = (d_s + d_t).clamp_min(torch.finfo(torch.float32).tiny)
    return torch.exp(-(2.0 - d_t) * d_t / denom)


def adaptive_threshold(student_label_distance: Tensor, teacher_label_distance: Tensor) -> Tensor:
    """delta = d_S - eps * d_T, bounded by d_S - d_T (eps = 1) and d_S (eps -> 0)."""
    eps = switch_weight(student_label_distance, teacher_label_distance)
    return student_label_distance - eps * teacher_label_distance


def offlabel_stats(teacher_logits: Tensor, student_logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(shared off-label mass mean(o), teacher off-label mass mean(1 - a), student lead mean(max(0, b - a))), tau = 1."""
    s = pair_sums(teacher_logits, student_logits, targets)
    return s[3] / s[6], s[4] / s[6], s[5] / s[6]


@dataclass(frozen=True)
class SwitchStats:
    """The switch's statistics for one batch, all 0-d tensors on the logits' device.

    ``expert`` is a bool tensor, so a caller can batch the host synchronisation. The last
    four fields are the diagnostics that explain the decision (module docstring).
    """

    expert: Tensor
    gap: Tensor
    threshold: Tensor
    epsilon: Tensor
    teacher_label_distance: Tensor
    student_label_distance: Tensor
    shared_mass: Tensor
    teacher_offlabel_mass: Tensor
    shared_ratio: Tensor
    student_lead: Tensor

    # The statistics logged each step, in this order.
    LOGGED = ("gap", "threshold", "epsilon", "teacher_label_distance", "student_label_distance",
              "shared_mass", "teacher_offlabel_mass", "shared_ratio", "student_lead")


# The per-batch sums behind a pair's statistics, in this order (the last is the example count).
SUMS = ("gap", "teacher_label_distance", "student_label_distance", "shared_mass", "teacher_offlabel_mass",
        "student_lead", "count")


def pair_sums(teacher_logits: Tensor, student_logits: Tensor, targets: Tensor, tau: float = 1.0) -> Tensor:
    """Sums over the batch of each example's gap, d_T, d_S, o, 1 - a and max(0, b - a), and the count.

    A vector of ``len(SUMS)`` float32 values: sums add up across processes (all-reduce), so a
    distributed run decides on its global batch exactly as one process would on the whole batch.
    """
    zt, zs = teacher_logits.detach().float(), student_logits.detach().float()
    p_t, p_s = F.softmax(zt, dim=1), F.softmax(zs, dim=1)
    if tau == 1.0:
        q_t, q_s = p_t, p_s
    else:
        q_t, q_s = F.softmax(zt / tau, dim=1), F.softmax(zs / tau, dim=1)
    a = p_t.gather(1, targets[:, None]).squeeze(1)
    b = p_s.gather(1, targets[:, None]).squeeze(1)
    y = F.one_hot(targets, num_classes=p_t.shape[1]).to(p_t.dtype)
    shared = torch.minimum(p_t, p_s).sum(dim=1) - torch.minimum(a, b)  # min over the label column is min(a, b)
    per_example = torch.stack([
        (q_t - q_s).abs().sum(dim=1),
        (p_t - y).abs().sum(dim=1),
        (p_s - y).abs().sum(dim=1),
        shared,
        1.0 - a,
        (b - a).clamp_min(0.0),
        torch.ones_like(a),
    ])
    return per_example.sum(dim=1)


def stats_from_sums(sums: Tensor, weight: Callable[[Tensor, Tensor], Tensor] = switch_weight) -> SwitchStats:
    """A pair's statistics and mode from its (possibly all-reduced) ``pair_sums``.

    ``weight(d_S, d_T)`` is the rule for eps: SwitOKD's ``switch_weight`` or UniOKD's ``uniokd_weight``.
    """
    gap, d_t, d_s, shared, t_off, lead = sums[:6] / sums[6]
    eps = weight(d_s, d_t)
    delta = d_s - eps * d_t
    expert = (gap > delta) & (d_t < d_s)
    ratio = shared / t_off.clamp_min(torch.finfo(torch.float32).tiny)
    return SwitchStats(expert, gap, delta, eps, d_t, d_s, shared, t_off, ratio, lead)


def _rows(teacher_logits: Tensor, student_logits: Tensor, targets: Tensor,
          ignore_index: int | None) -> tuple[Tensor, Tensor, Tensor]:
    """[N, C] or [B, T, C] logits to [N, C] rows without the positions labelled ``ignore_index``."""
    zt, zs = teacher_logits, student_logits
    if zt.shape != zs.shape or zt.dim() < 2 or tuple(targets.shape) != tuple(zt.shape[:-1]):
        raise ValueError(f"switch statistics: teacher logits {tuple(zt.shape)} and student logits {tuple(zs.shape)} "
                         f"need the same shape, [N, C] or [B, T, C], and labels of shape {tuple(zt.shape[:-1])}; "
                         f"got labels {tuple(targets.shape)}")
    c = zt.shape[-1]
    zt, zs, y = zt.reshape(-1, c), zs.reshape(-1, c), targets.reshape(-1)
    if ignore_index is not None:
        keep = y != ignore_index
        zt, zs, y = zt[keep], zs[keep], y[keep]
        if y.numel() == 0:
            raise ValueError(f"switch statistics: every label is ignore_index ({ignore_index})")
    return zt, zs, y


def switch_stats(
    teacher_logits: Tensor, student_logits: Tensor, targets: Tensor, tau: float = 1.0,
    ignore_index: int | None = -100,
) -> SwitchStats:
    """All switching statistics for one teacher-student pair, without a host sync.

    Args:
        teacher_logits: the teacher's logits ``[N, C]`` (detached inside; any float dtype).
        student_logits: the student's logits ``[N, C]``.
        targets: class indices ``[N]``.
        tau: the temperature of the gap G (the label distances are always at tau = 1).
        ignore_index: labels of positions left out ([B, T, C] token logits with -100 padding, as Hugging Face
            writes them); None keeps every position.

    Returns:
        ``SwitchStats``: 0-d tensors ``expert`` (bool), ``gap``, ``threshold``, ``epsilon``, the label distances
        and the diagnostics (``shared_ratio``, ``student_lead``, ...).

    Example:
        >>> import torch
        >>> from switokd import switch_stats
        >>> y = torch.tensor([0, 1])
        >>> s = switch_stats(torch.tensor([[4.0, 0.0], [0.0, 4.0]]), torch.zeros(2, 2), y)
        >>> round(float(s.gap), 3), bool(s.expert)
        (0.964, False)
    """
    return stats_from_sums(pair_sums(*_rows(teacher_logits, student_logits, targets, ignore_index), tau))


@dataclass(frozen=True)
class SwitchDecision:
    """``decide``'s record: the mode as a Python bool plus the statistics behind it."""

    expert: bool
    gap: Tensor
    threshold: Tensor
    epsilon: Tensor
    teacher_label_distance: Tensor
    student_label_distance: Tensor


def decide(
    teacher_logits: Tensor, student_logits: Tensor, targets: Tensor, tau: float = 1.0,
    ignore_index: int | None = -100,
) -> SwitchDecision:
    """Decide this step's mode for one pair: expert (teacher paused) or learning.

    Args:
        teacher_logits: the teacher's logits ``[N, C]``.
        student_logits: the student's logits ``[N, C]``.
        targets: class indices ``[N]``.
        tau: the temperature of the gap G.
        ignore_index: labels of positions left out (``switch_stats``).

    Returns:
        ``SwitchDecision`` with ``expert`` as a Python bool (one host synchronisation) and the statistics.

    Example:
        >>> import torch
        >>> from switokd import decide
        >>> # The teacher is right; the student is wrong, on another class than the teacher's leftover mass.
        >>> decide(torch.tensor([[4.0, 1.0, -4.0]]), torch.tensor([[0.0, -4.0, 4.0]]), torch.tensor([0])).expert
        True
    """
    s = switch_stats(teacher_logits, student_logits, targets, tau, ignore_index)
    return SwitchDecision(
        bool(s.expert), s.gap, s.threshold, s.epsilon, s.teacher_label_distance, s.student_label_distance
    )
