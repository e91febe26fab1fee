"""The baselines: Vanilla, offline KD (and its DKD and DIST forms), DML and KDCL."""
from __future__ import annotations

from typing import Mapping

from torch import Tensor

from ..core.losses import mean_ensemble, minlogit_ensemble

KDCL_ENSEMBLES = {"minlogit": minlogit_ensemble, "mean": mean_ensemble}  # KDCL's ensembles, by option value
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
        if ensemble not in KDCL_ENSEMBLES:
            raise ValueError(f"kdcl option ensemble must be one of {', '.join(map(repr, KDCL_ENSEMBLES))}, got {ensemble!r}")
        self.ensemble = KDCL_ENSEMBLES[ensemble]

    def step(self, logits: Mapping[str, Tensor], targets: Tensor) -> StepOutput:
        target = self.ensemble([logits[n] for n in self.names], targets)
        losses = {n: self.loss(logits[n], targets, [target]) for n in self.names}
        return StepOutput(losses, tuple(self.names))


class FeatureKD(KD):
    """A feature-distillation method from frozen teachers, as mdistiller trains it: CE (weight 1) plus the
    feature loss at its authors' weight, and no KL term unless ``method.kl_weight`` is set (``at@kl_weight=0.9``
    is AT with KD's term; ``kd+at`` is KD's recipe with AT added)."""

    def __init__(self, roles, *, feature_loss: str | None = None, **kw) -> None:
        if feature_loss is not None and feature_loss != self.default_feature_loss:
            raise ValueError(f"method {self.name!r} is the {self.default_feature_loss} feature loss from frozen "
                             f"teachers; for {feature_loss} use method.name={feature_loss}, or kd+{feature_loss}")
        super().__init__(roles, **kw)

    @classmethod
    def recipe_for(cls, loss, logit_std, pair=None):
        from .features import FEATURE_LOSSES
        from .recipes import Recipe
        src = FEATURE_LOSSES.get(cls.default_feature_loss).source
        return Recipe(cls.name, tau=4.0, ce_weight=1.0, kl_weight=0.0, tau2=True, source=src)

    def step(self, logits: Mapping[str, Tensor], targets: Tensor) -> StepOutput:
        soft = [logits[t] for t in self.teachers] if self.weights.kl_weight else []
        losses = {s: self.loss(logits[s], targets, soft, reduce="mean") for s in self.students}
        return StepOutput(losses, tuple(self.students))


def _feature_method(loss_name: str, doc: str) -> type:
    cls = type(f"FeatureKD_{loss_name}", (FeatureKD,), {"name": loss_name, "default_feature_loss": loss_name,
                                                       "__doc__": doc})
    return METHODS.register()(cls)


for _name, _doc in (("at", "Attention transfer (Zagoruyko & Komodakis 2017) from frozen teachers: CE + 1000 x AT."),
                    ("fitnet", "FitNets (Romero et al. 2015), single-stage, from frozen teachers: CE + 100 x hint MSE."),
                    ("nst", "Neuron selectivity transfer (Huang & Wang 2017) from frozen teachers: CE + 50 x MMD."),
                    ("pkt", "Probabilistic knowledge transfer (Passalis & Tefas 2018): CE + 30000 x PKT."),
                    ("rkd", "Relational KD (Park et al. 2019) from frozen teachers: CE + 25 distance + 50 angle."),
                    ("sp", "Similarity-preserving KD (Tung & Mori 2019) from frozen teachers: CE + 3000 x SP."),
                    ("vid", "Variational information distillation (Ahn et al. 2019): CE + VID, variances learned."),
                    ("crd", "Contrastive representation distillation (Tian et al. 2020): CE + 0.8 x CRD (NCE)."),
                    ("ofd", "Overhaul of feature distillation (Heo et al. 2019): CE + 0.001 x margin partial L2."),
                    ("reviewkd", "Knowledge review (Chen et al. 2021): CE + 5 x HCL of fused features, warmed up.")):
    _feature_method(_name, _doc)
