"""Online branch methods: one network split into a shared trunk and m branches (``networks.NAME.branches``,
``switokd.models.branches.BranchNet``), each branch distilled from an ensemble built on the fly. The method
reads every branch's logits through hooks (``branches.K``) and owns its extra modules (ONE's gate), which
step with the network they serve.
"""
from __future__ import annotations

from typing import Any, Mapping

from torch import Tensor, nn

from ..core.branch_losses import consistency_ramp, soft_kl
from ..core.losses import cross_entropy
from .base import METHODS, Method, StepOutput


class BranchMethod(Method):
    """Base: every network of the cohort that is a ``BranchNet`` trains with the method's loss."""

    default_tau = 3.0
    default_tau2 = True
    recipe_source = "the branch methods' shared T = 3 and ramp exp(-5(1 - e/80)^2) (docs/method.md)"

    def __init__(self, roles, *, ramp_epochs: int = 80, **kw) -> None:
        super().__init__(roles, **kw)
        self.ramp_epochs = ramp_epochs
        self.branch_counts: dict[str, int] = {}
        self.epoch = 1

    def bind(self, models: Mapping[str, nn.Module]) -> None:
        from ..models.branches import BranchNet
        self.branch_counts = {n: len(m.branches) for n, m in models.items() if isinstance(m, BranchNet)}
        if not self.branch_counts:
            raise ValueError(f"method {self.name!r} trains networks split into branches: set "
                             "networks.NAME.branches (e.g. 3) and networks.NAME.split (e.g. stage3)")

    def branch_paths(self, net: str) -> list[str]:
        return [f"branches.{k}" for k in range(self.branch_counts[net])]

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.epoch = epoch

    @property
    def ramp(self) -> float:
        return consistency_ramp(self.epoch - 1, self.ramp_epochs)


def _gate(channels: int, m: int) -> nn.Module:
    """ONE's gate: global average pool of the trunk's output, linear to m, BatchNorm1d, ReLU, softmax."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(channels, m), nn.BatchNorm1d(m),
                         nn.ReLU(), nn.Softmax(dim=1))


def one_loss(branch_logits: list[Tensor], gate: Tensor, targets: Tensor, ramp: float, tau: float = 3.0,
             detach: bool = True) -> dict[str, Tensor]:
    """ONE (Lan et al. 2018): each branch's CE, the gated ensemble's CE, and ramp x each branch's KL towards the
    ensemble (detached, as the official code does)."""
    ens = sum(gate[:, k:k + 1] * z for k, z in enumerate(branch_logits))
    ce = sum(cross_entropy(z, targets) for z in branch_logits) + cross_entropy(ens, targets)
    kl = sum(soft_kl(z, ens, tau, detach) for z in branch_logits)
    return {"ce": ce, "kl": kl, "loss": ce + ramp * kl}


@METHODS.register()
class ONE(BranchMethod):
    """On-the-fly native ensemble (Lan et al. 2018): the branches' logits gated by the trunk's pooled feature
    into an ensemble teacher; each branch learns CE + ramp x T^2 KL towards it (T 3)."""

    name = "one"
    recipe_source = "Lan1991Xu/ONE_NeurIPS2018 cifar_one.py, models/cifar/resnet.py, loss/kl_loss.py (T 3, ramp 80)"

    def feature_requests(self) -> dict[str, list[str]]:
        return {n: ["trunk", *self.branch_paths(n)] for n in self.branch_counts}

    def setup(self, shapes: Mapping[str, Mapping[str, Any]], labels=None, models=None) -> None:
        for n, m in self.branch_counts.items():
            if n not in self.feature_modules:
                self.feature_modules[n] = nn.ModuleDict({"gate": _gate(shapes[n]["trunk"][1], m)})

    def step(self, logits: Mapping[str, Tensor], targets: Tensor, features: Mapping[str, Any]) -> StepOutput:
        losses = {}
        for n in self.names:
            if n not in self.branch_counts:
                losses[n] = self.loss(logits[n], targets, [])
                continue
            f = features[n]
            gate = self.feature_modules[n]["gate"](f["trunk"].float())
            losses[n] = one_loss([f[p].float() for p in self.branch_paths(n)], gate, targets, self.ramp,
                                 self.weights.tau)
        return StepOutput(losses, tuple(self.names))


__all__ = ["BranchMethod", "ONE", "one_loss"]
