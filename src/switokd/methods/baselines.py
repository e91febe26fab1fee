"""The baselines the paper compares against: Vanilla, offline KD, DML and KDCL."""
from __future__ import annotations

from typing import Mapping

from torch import Tensor

from ..losses import mean_ensemble, minlogit_ensemble
from .base import METHODS, Method, StepOutput, distill_loss


@METHODS.register()
class Vanilla(Method):
    """Each network alone, cross-entropy only."""

    name = "vanilla"

    def step(self, logits: Mapping[str, Tensor], targets: Tensor) -> StepOutput:
        losses = {n: distill_loss(logits[n], targets, [], self.weights) for n in self.names}
        return StepOutput(losses, tuple(self.names))


@METHODS.register()
class KD(Method):
    """Offline KD (Hinton et al. 2015): frozen, trained teachers; students learn
    CE + tau^2 * KL(p_T^tau || p_S^tau), averaged over teachers."""

    name = "kd"
    default_tau = 4.0
    default_tau2 = True

    def __init__(self, roles, **kw) -> None:
        super().__init__(roles, **kw)
        if not self.teachers or not self.students:
            raise ValueError("method 'kd' needs at least one teacher and one student")

    @property
    def frozen(self) -> frozenset[str]:
        return frozenset(self.teachers)

    def step(self, logits: Mapping[str, Tensor], targets: Tensor) -> StepOutput:
        soft = [logits[t] for t in self.teachers]
        losses = {s: distill_loss(logits[s], targets, soft, self.weights, reduce="mean") for s in self.students}
        return StepOutput(losses, tuple(self.students))


@METHODS.register()
class DML(Method):
    """Deep Mutual Learning (Zhang et al. 2018): every network learns
    CE + mean over peers of KL(p_peer || p_self); all step every batch."""

    name = "dml"
    min_networks = 2

    def step(self, logits: Mapping[str, Tensor], targets: Tensor) -> StepOutput:
        losses = {
            n: distill_loss(logits[n], targets, [logits[u] for u in self.names if u != n], self.weights, reduce="mean")
            for n in self.names
        }
        return StepOutput(losses, tuple(self.names))


@METHODS.register()
class KDCL(Method):
    """KDCL (Guo et al. 2020): one ensemble target for all networks, each learning
    CE + tau^2 * KL(p_ens^tau || p_self^tau). Ensemble ``minlogit`` (KDCL-MinLogit,
    the default) or ``mean`` (KDCL-Naive)."""

    name = "kdcl"
    default_tau2 = True
    min_networks = 2

    def __init__(self, roles, ensemble: str = "minlogit", **kw) -> None:
        super().__init__(roles, **kw)
        if ensemble not in ("minlogit", "mean"):
            raise ValueError(f"kdcl ensemble must be 'minlogit' or 'mean', got {ensemble!r}")
        self.ensemble = minlogit_ensemble if ensemble == "minlogit" else mean_ensemble

    def step(self, logits: Mapping[str, Tensor], targets: Tensor) -> StepOutput:
        target = self.ensemble([logits[n] for n in self.names], targets)
        losses = {n: distill_loss(logits[n], targets, [target], self.weights) for n in self.names}
        return StepOutput(losses, tuple(self.names))
