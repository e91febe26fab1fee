"""The step contract every method follows.

A method sees one batch's logits (a dict network name -> logits, computed by the
trainer) and the labels; it returns the named losses of every network that
learns from this batch and the networks that take an optimizer step. It never
calls backward or touches an optimizer: the trainer does, for exactly the
networks in ``stepping``. A network absent from ``stepping`` takes no backward
pass and no step.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, ClassVar, Mapping, Sequence

from torch import Tensor

from ..losses import cross_entropy, kl_div
from ..registry import Registry
from ..switching import SwitchStats

METHODS: Registry = Registry("method")


@dataclass
class StepOutput:
    """What a method's ``step`` returns.

    ``losses[name]`` holds named terms ("ce", "kl") and "loss", the total that
    backpropagates; ``stepping`` lists the networks that take an optimizer step;
    ``switches`` maps a pair "teacher->student" to its switching statistics.
    """

    losses: dict[str, dict[str, Tensor]]
    stepping: tuple[str, ...]
    switches: dict[str, SwitchStats] = field(default_factory=dict)
    expert: dict[str, bool] = field(default_factory=dict)  # pair -> expert mode, host-side


@dataclass(frozen=True)
class LossWeights:
    """How a network's loss is made of CE and the KL terms."""

    tau: float = 1.0
    ce_weight: float = 1.0
    kl_weight: float = 1.0
    tau2: bool = False


def distill_loss(logits: Tensor, targets: Tensor, soft_targets: Sequence[Tensor], w: LossWeights, reduce: str = "sum") -> dict[str, Tensor]:
    """ce_weight * CE(z, y) + kl_weight * (sum or mean over soft targets of KL(p_u^tau || p^tau))."""
    if reduce not in ("sum", "mean"):
        raise ValueError(f"distill_loss: reduce must be 'sum' or 'mean', got {reduce!r}")
    ce = cross_entropy(logits, targets)
    out = {"ce": ce}
    if soft_targets:
        kl = sum(kl_div(t, logits, w.tau, w.tau2) for t in soft_targets)
        if reduce == "mean":
            kl = kl / len(soft_targets)
        out["kl"] = kl
        out["loss"] = w.ce_weight * ce + w.kl_weight * kl
    else:
        out["loss"] = w.ce_weight * ce
    return out


def _identity(t: Tensor) -> Tensor:
    return t


class Method:
    """Base class: holds the roles and the loss weights; subclasses implement ``step``."""

    name: ClassVar[str] = ""
    default_tau: ClassVar[float] = 1.0
    default_tau2: ClassVar[bool] = False
    min_networks: ClassVar[int] = 1

    def __init__(self, roles: Mapping[str, str], *, tau: float | None = None, tau2: bool | None = None,
                 ce_weight: float = 1.0, kl_weight: float = 1.0, **options) -> None:
        self.roles = dict(roles)
        self.names = list(roles)
        self.teachers = [n for n, r in roles.items() if r == "teacher"]
        self.students = [n for n, r in roles.items() if r == "student"]
        self.weights = LossWeights(
            tau=self.default_tau if tau is None else tau,
            ce_weight=ce_weight,
            kl_weight=kl_weight,
            tau2=self.default_tau2 if tau2 is None else tau2,
        )
        if len(self.names) < self.min_networks:
            raise ValueError(f"method {self.name!r} needs at least {self.min_networks} networks, got {len(self.names)}")
        if options:
            raise TypeError(f"method {self.name!r} got unknown options {sorted(options)}")
        # Sums statistics across processes before a decision; the identity in one process (set by the trainer).
        self.reduce: Callable[[Tensor], Tensor] = _identity

    @property
    def frozen(self) -> frozenset[str]:
        """Networks that never learn (run in eval mode without gradients)."""
        return frozenset()

    @property
    def pausable(self) -> frozenset[str]:
        """Networks that may skip a step (their BatchNorm statistics can be frozen then)."""
        return frozenset()

    def step(self, logits: Mapping[str, Tensor], targets: Tensor) -> StepOutput:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(teachers={self.teachers}, students={self.students}, {self.weights})"
