"""Distillation losses: how a network matches one soft target (``method.loss``).

A method is a policy (who learns from whom, and when) and a distillation loss (how). The loss is an object
built once per run from ``method.loss``, ``method.loss_options``, the temperature and ``method.logit_std``;
the policy calls it once per (soft target, learner) and adds CE itself. The maths is in ``switokd.losses``;
this module only binds options to it.

    kl    KL(p_target^tau || p^tau) (times tau^2 with tau2): Hinton's KD, DML, KDCL, SwitOKD
    dkd   Decoupled KD: alpha * TCKD + beta * NCKD
    dist  DIST: inter- and intra-class Pearson correlation (a batch statistic: no per-example weights)

Any loss can be warmed up: ``warmup`` epochs multiply its term by min(epoch / warmup, 1) (DKD's recipe: 20).

``logit_std`` z-scores both sides' logits over the classes before the temperature (logit standardization),
for any of them. A loss of your own: subclass ``DistillLoss`` and decorate it with ``@LOSSES.register()``.
"""
from __future__ import annotations

import inspect
from typing import Any, ClassVar

from torch import Tensor

from ..core.losses import dist_loss, dkd_loss, kl_div, standardize
from ..registry import Registry

LOSSES: Registry = Registry("distillation loss")


class DistillLoss:
    """One distillation term between a soft target and a learner's logits.

    Subclasses set ``name`` and implement ``term``; ``__call__`` applies logit standardization, the
    optional per-example ``weight``, the mean and the warm-up (``warmup`` epochs: the term times
    min(epoch / warmup, 1), the epoch 1-based as in mdistiller; 0: none). ``default_tau`` (None: the method's)
    is the temperature the loss's recipe uses. ``per_example`` is false for a loss that is a statistic of the
    whole batch.
    """

    name: ClassVar[str] = ""
    default_tau: ClassVar[float | None] = None
    per_example: ClassVar[bool] = True

    def __init__(self, *, tau: float = 1.0, tau2: bool = False, logit_std: bool = False, warmup: int = 0) -> None:
        if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
            raise ValueError(f"{self.name} warmup must be a whole number of epochs >= 0, got {warmup!r}")
        self.tau, self.tau2, self.logit_std = float(tau), bool(tau2), bool(logit_std)
        self.warmup = warmup
        self.epoch = 1  # the current epoch, 1-based (a method's set_epoch tells it; the warm-up reads it)

    @property
    def ramp(self) -> float:
        """The warm-up factor of the current epoch: min(epoch / warmup, 1), 1 without a warm-up."""
        return min(self.epoch / self.warmup, 1.0) if self.warmup else 1.0

    def term(self, target_logits: Tensor, logits: Tensor, targets: Tensor, tau: float, reduction: str) -> Tensor:
        raise NotImplementedError

    def __call__(self, target_logits: Tensor, logits: Tensor, targets: Tensor, *, tau: float | None = None,
                 weight: Tensor | None = None) -> Tensor:
        """The term, a mean over the batch; ``weight`` (per example) makes it ``mean(weight * term)``."""
        if self.logit_std:
            target_logits, logits = standardize(target_logits.detach().float()), standardize(logits.float())
        tau = self.tau if tau is None else float(tau)
        ramp = self.ramp
        if weight is None:
            term = self.term(target_logits, logits, targets, tau, "mean")
        elif not self.per_example:
            raise ValueError(f"distillation loss {self.name!r} is a batch statistic: it takes no per-example weight")
        else:
            term = (weight.detach().float() * self.term(target_logits, logits, targets, tau, "none")).mean()
        return term if ramp == 1.0 else ramp * term

    @classmethod
    def options(cls) -> list[str]:
        """The names of the options ``method.loss_options`` may set (its own, then ``warmup``)."""
        own = [p for p, v in inspect.signature(cls.__init__).parameters.items()
               if p not in ("self", "tau", "tau2", "logit_std", "warmup") and v.kind is v.KEYWORD_ONLY]
        return own + ["warmup"]

    def __repr__(self) -> str:
        extra = "".join(f", {k}={getattr(self, k)!r}" for k in self.options())
        return f"{type(self).__name__}(tau={self.tau}, tau2={self.tau2}, logit_std={self.logit_std}{extra})"


@LOSSES.register()
class KL(DistillLoss):
    """KL(p_target^tau || p^tau), times tau^2 when ``tau2`` (the default loss)."""

    name = "kl"

    def term(self, target_logits, logits, targets, tau, reduction):
        return kl_div(target_logits, logits, tau, self.tau2, reduction=reduction)


@LOSSES.register()
class DKD(DistillLoss):
    """Decoupled KD (Zhao et al. 2022) at mdistiller's defaults: alpha 1, beta 8, tau 4, warm-up 20 epochs.

    It scales by tau^2 itself, so ``tau2`` is not used. (A method built from a config takes beta per pair:
    ``methods.recipes.dkd_beta``.)
    """

    name = "dkd"
    default_tau = 4.0

    def __init__(self, *, alpha: float = 1.0, beta: float = 8.0, warmup: int = 20, **kw: Any) -> None:
        super().__init__(warmup=warmup, **kw)
        if alpha < 0 or beta < 0:
            raise ValueError(f"dkd alpha and beta must be >= 0, got alpha={alpha}, beta={beta}")
        self.alpha, self.beta = float(alpha), float(beta)

    def term(self, target_logits, logits, targets, tau, reduction):
        return dkd_loss(target_logits, logits, targets, alpha=self.alpha, beta=self.beta, tau=tau,
                        reduction=reduction)


@LOSSES.register()
class DIST(DistillLoss):
    """DIST (Huang et al. 2022) at the authors' CIFAR loss, ``dist_t4``: beta 1, gamma 1, tau 4 (their recipe
    also weights it 2: ``methods.recipes.DIST``).

    It scales by tau^2 itself, so ``tau2`` is not used.
    """

    name = "dist"
    default_tau = 4.0
    per_example = False

    def __init__(self, *, beta: float = 1.0, gamma: float = 1.0, **kw: Any) -> None:
        super().__init__(**kw)
        if beta < 0 or gamma < 0:
            raise ValueError(f"dist beta and gamma must be >= 0, got beta={beta}, gamma={gamma}")
        self.beta, self.gamma = float(beta), float(gamma)

    def term(self, target_logits, logits, targets, tau, reduction):
        return dist_loss(target_logits, logits, beta=self.beta, gamma=self.gamma, tau=tau)


def create_loss(name: str, *, tau: float, tau2: bool = False, logit_std: bool = False,
                **options: Any) -> DistillLoss:
    """A registered distillation loss with its options; an unknown option is a ``ValueError`` naming it.

    Example:
        >>> create_loss("dkd", tau=4.0, beta=2.0).beta
        2.0
    """
    cls = LOSSES.get(name)
    unknown = sorted(set(options) - set(cls.options()))
    if unknown:
        allowed = ", ".join(cls.options()) or "none"
        raise ValueError(f"distillation loss {name!r} has no option {', '.join(map(repr, unknown))} "
                         f"(its options: {allowed})")
    # The warm-up is the base class's: set after construction, so a loss of yours need not pass it on.
    warmup = options.pop("warmup", None)
    loss = cls(tau=tau, tau2=tau2, logit_std=logit_std, **options)
    if warmup is not None:
        if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
            raise ValueError(f"{name} warmup must be a whole number of epochs >= 0, got {warmup!r}")
        loss.warmup = warmup
    return loss


__all__ = ["LOSSES", "DistillLoss", "KL", "DKD", "DIST", "create_loss"]
