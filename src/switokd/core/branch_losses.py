"""The online branch methods' shared maths: the consistency ramp and the soft-target KL they use, pure tensor
functions (docs/method.md, "Branch methods", restates each reference)."""
from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor


def consistency_ramp(epoch0: int, length: int = 80) -> float:
    """exp(-5 (1 - e / L)^2) for the 0-based epoch e, 1 from e = L on (the Mean-Teacher sigmoid ramp-up that
    ONE, OKDDip and FFL use, and PCL means to: its code divides by its weight, 1, instead of L)."""
    if length <= 0:
        return 1.0
    e = min(max(float(epoch0), 0.0), float(length))
    return math.exp(-5.0 * (1.0 - e / length) ** 2)


def soft_kl(logits: Tensor, target_logits: Tensor, tau: float = 3.0, detach: bool = True, eps: float = 1e-7) -> Tensor:
    """tau^2 KL(softmax(target / tau) + eps || softmax(logits / tau)), summed over classes and averaged over the
    batch: official ONE's and FFL's ``KLLoss`` (eps 1e-7 on the target, the target detached; ``detach=False``
    is DefangChen's ``KL_Loss``, whose gradient also reaches the target)."""
    p = F.softmax(target_logits / tau, 1) + eps
    if detach:
        p = p.detach()
    return tau * tau * (p * (p.log() - F.log_softmax(logits / tau, 1))).sum(1).mean()


__all__ = ["consistency_ramp", "soft_kl"]
