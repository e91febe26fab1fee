"""The SwitOKD switching rule as pure tensor functions.

Notation follows ``METHOD.md``: teacher logits z_T, student logits z_S,
p^tau = softmax(z / tau), y the one-hot label. Every statistic uses detached
logits, is computed in float32 and is a mean over the batch.

- distillation gap      G     = mean_i || p_T^tau - p_S^tau ||_1         (0 <= G <= 2)
- label distance        d     = mean_i || p - y ||_1                      (softmax at tau = 1)
- weight                eps   = exp(-d_T / (d_S + d_T))                  (e^-1 <= eps <= 1)
- adaptive threshold    delta = d_S - eps * d_T
- mode                  EXPERT if G > delta and d_T < d_S, else LEARNING
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "distillation_gap",
    "label_distance",
    "switch_weight",
    "adaptive_threshold",
    "SwitchStats",
    "switch_stats",
    "SwitchDecision",
    "decide",
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


def adaptive_threshold(student_label_distance: Tensor, teacher_label_distance: Tensor) -> Tensor:
    """delta = d_S - eps * d_T, bounded by d_S - d_T (eps = 1) and d_S (eps -> 0)."""
    eps = switch_weight(student_label_distance, teacher_label_distance)
    return student_label_distance - eps * teacher_label_distance


@dataclass(frozen=True)
class SwitchStats:
    """The switch's statistics for one batch, all 0-d tensors on the logits' device.

    ``expert`` is a bool tensor, so a caller can batch the host synchronisation.
    """

    expert: Tensor
    gap: Tensor
    threshold: Tensor
    epsilon: Tensor
    teacher_label_distance: Tensor
    student_label_distance: Tensor


def switch_stats(
    teacher_logits: Tensor, student_logits: Tensor, targets: Tensor, tau: float = 1.0
) -> SwitchStats:
    """All switching statistics for one teacher-student pair, without a host sync."""
    gap = distillation_gap(teacher_logits, student_logits, tau)
    d_t = label_distance(teacher_logits, targets)
    d_s = label_distance(student_logits, targets)
    eps = switch_weight(d_s, d_t)
    delta = d_s - eps * d_t
    expert = (gap > delta) & (d_t < d_s)
    return SwitchStats(expert, gap, delta, eps, d_t, d_s)


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
    teacher_logits: Tensor, student_logits: Tensor, targets: Tensor, tau: float = 1.0
) -> SwitchDecision:
    """Decide this step's mode for one pair: expert (teacher paused) or learning."""
    s = switch_stats(teacher_logits, student_logits, targets, tau)
    return SwitchDecision(
        bool(s.expert), s.gap, s.threshold, s.epsilon, s.teacher_label_distance, s.student_label_distance
    )
