"""The baselines: Vanilla, offline KD (and its DKD and DIST forms), DML and KDCL."""
from __future__ import annotations

from typing import Mapping

from torch import Tensor

from ..core.losses import mean_ensemble, minlogit_ensemble
from .base import METHODS, Method, StepOutput


@METHODS.register()
class Vanilla(Method):
    """Each network alone, cross-entropy only."""

    name = "vanilla"
    recipe_source = "cross-entropy alone"
    distills = False

    def step(self, logits: Mapping[str, Tensor], targets: Tensor) -> StepOutput:
        losses = {n: self.loss(logits[n], targets, []) for n in self.names}
        return StepOutput(losses, tuple(self.names))


@METHODS.register()
class KD(Method):
    """Offline KD (Hinton et al. 2015): frozen, trained teachers; students learn
    0.1 * CE + 0.9 * tau^2 * KL(p_T^tau || p_S^tau) at tau 4 (mdistiller's recipe), averaged over teachers
    (or another ``method.loss``, at its recipe)."""

    name = "kd"
    default_tau = 4.0
    default_tau2 = True
    offline = True

    def __init__(self, roles, **kw) -> None:
        super().__init__(roles, **kw)
        if not self.teachers or not self.students:
            raise ValueError(f"method {self.name!r} needs at least one teacher and one student")

    @property
    def frozen(self) -> frozenset[str]:
        return frozenset(self.teachers)

    def step(self, logits: Mapping[str, Tensor], targets: Tensor) -> StepOutput:
        soft = [logits[t] for t in self.teachers]
        losses = {s: self.loss(logits[s], targets, soft, reduce="mean") for s in self.students}
        return StepOutput(losses, tuple(self.students))


class _OfflineWithLoss(KD):
    """Offline KD with a fixed distillation loss, named as mdistiller and torchdistill name it."""

    def __init__(self, roles, *, loss: str | None = None, **kw) -> None:
        if loss is not None and loss != self.default_loss:
            raise ValueError(f"method {self.name!r} is offline KD with the {self.default_loss} loss; for the "
                             f"{loss} loss use method.name=kd method.loss={loss}")
        super().__init__(roles, loss=self.default_loss, **kw)


@METHODS.register()
class DKDMethod(_OfflineWithLoss):
    """Decoupled KD (Zhao et al. 2022) from frozen teachers: CE + DKD (alpha 1, beta 8 or the pair's, tau 4,
    warm-up 20: mdistiller's recipe)."""

    name = "dkd"
    default_loss = "dkd"


@METHODS.register()
class DISTMethod(_OfflineWithLoss):
    """DIST (Huang et al. 2022) from frozen teachers: CE + 2 * DIST (beta 1, gamma 1, tau 4: the authors'
    CIFAR recipe)."""

    name = "dist"
    default_loss = "dist"


@METHODS.register()
class DML(Method):
    """Deep Mutual Learning (Zhang et al. 2018): every network learns
    CE + mean over peers of KL(p_peer || p_self); all step every batch."""

    name = "dml"
    recipe_source = ("YingZhangDUT/Deep-Mutual-Learning train_models.py (tau 1, KL weight 1, no tau^2; the authors' "
                     "released recipe is for Market-1501, the losses are the same)")
    min_networks = 2

    def step(self, logits: Mapping[str, Tensor], targets: Tensor) -> StepOutput:
        losses = {n: self.loss(logits[n], targets, [logits[u] for u in self.names if u != n], reduce="mean")
                  for n in self.names}
        return StepOutput(losses, tuple(self.names))


@METHODS.register()
class KDCL(Method):
    """KDCL (Guo et al. 2020): one ensemble target for all networks, each learning
    CE + tau^2 * KL(p_ens^tau || p_self^tau). Ensemble ``minlogit`` (KDCL-MinLogit,
    the default) or ``mean`` (KDCL-Naive)."""

    name = "kdcl"
    default_tau2 = True
    recipe_source = "switokd's (tau 1, tau^2-scaled KL): KDCL's authors published no code"
    min_networks = 2

    def __init__(self, roles, *, ensemble: str = "minlogit", **kw) -> None:
        super().__init__(roles, **kw)
        if ensemble not in ("minlogit", "mean"):
            raise ValueError(f"kdcl ensemble must be 'minlogit' or 'mean', got {ensemble!r}")
        self.ensemble = minlogit_ensemble if ensemble == "minlogit" else mean_ensemble

    def step(self, logits: Mapping[str, Tensor], targets: Tensor) -> StepOutput:
        target = self.ensemble([logits[n] for n in self.names], targets)
        losses = {n: self.loss(logits[n], targets, [target]) for n in self.names}
        return StepOutput(losses, tuple(self.names))
