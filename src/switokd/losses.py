"""Stateless loss functions shared by every method."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def kl_div(target_logits: Tensor, logits: Tensor, tau: float = 1.0, tau2: bool = False) -> Tensor:
    """KL(p_target^tau || p^tau), mean over the batch.

    The target is detached: gradients flow only into ``logits``. Computed in
    float32 so that bf16/fp16 logits under autocast stay numerically safe.
    ``tau2`` multiplies by tau^2 (Hinton et al.'s gradient-scale correction).
    """
    log_p = F.log_softmax(logits.float() / tau, dim=1)
    log_q = F.log_softmax(target_logits.detach().float() / tau, dim=1)
    loss = F.kl_div(log_p, log_q, reduction="batchmean", log_target=True)
    return loss * (tau * tau) if tau2 else loss


def cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy against class indices, in float32."""
    return F.cross_entropy(logits.float(), targets)


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
