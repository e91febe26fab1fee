"""Extension points of the training loop: epoch-end hooks.

A hook's ``on_epoch_end(trainer, summary, evaluation)`` runs on every rank after each epoch's evaluation and
returns entries to add to the epoch's summary (``epochs.jsonl``, the sinks, the history). A new run
condition's metric is a hook; the loop does not change.

Example:
    >>> class TeacherLR:
    ...     def on_epoch_end(self, trainer, summary, evaluation):
    ...         return {"teacher_lr": summary["lr_end"].get("teacher")}
    >>> # Trainer(cfg, hooks=[TeacherLR()])
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from torch import Tensor

Trainer = Any  # switokd.train.trainer.Trainer (not imported: the trainer imports this module)


@dataclass
class Evaluation:
    """What one evaluation of the test split measured: top-1 accuracy (%) and loss per network, and the
    per-class hits behind them (``class_hits[net]``, ``class_counts``) for per-class metrics."""

    results: dict[str, dict[str, float]]
    class_hits: dict[str, Tensor]
    class_counts: Tensor


class EpochHook(Protocol):
    def on_epoch_end(self, trainer: "Trainer", summary: dict[str, Any], evaluation: Evaluation | None) -> dict[str, Any]:
        ...


class ConditionsDiagnostics:
    """The run conditions' own metrics: memorisation of noisy labels, per-phase accuracy under drift."""

    def __init__(self, conditions: Any) -> None:
        self.conditions = conditions

    def on_epoch_end(self, trainer: "Trainer", summary: dict[str, Any], evaluation: Evaluation | None) -> dict[str, Any]:
        trainer.eval_mode()
        hits = (evaluation.class_hits, evaluation.class_counts) if evaluation is not None else None
        return self.conditions.diagnostics(trainer.epoch - 1, trainer.predict, trainer.dist.sum, hits)


class ChanceWatch:
    """Warns, in one line naming the network, when a learning network's mean training cross-entropy sat at
    chance (at least 97% of ln C) for a whole epoch after the first while the run shows it is stuck, not slow:
    its accuracy at that epoch's evaluation is under twice chance, or, without one, another network of the
    cohort trains below 90% of ln C. A learning rate too high for it (a MobileNet at 0.1) leaves it there with
    no other sign; noisy labels keep every network's CE high early on, and do not trigger it. A slow start
    can trigger it too (a MobileNet at 0.01 on 100 classes sits at chance for 3-4 epochs, then learns), so
    the line says both."""

    def __init__(self) -> None:
        self.warned: set[str] = set()

    def on_epoch_end(self, trainer: "Trainer", summary: dict[str, Any], evaluation: Evaluation | None) -> dict[str, Any]:
        import math
        from ..log import logger
        if summary.get("epoch", 1) < 2:
            return {}
        chance = math.log(trainer.data.num_classes)
        losses = summary.get("train", {}).get("loss", {})
        evaluated = summary.get("val", summary.get("test"))
        # A branch network's ce sums a term per branch and one for its ensemble: compare one term with ln C.
        terms_of = getattr(getattr(trainer, "method", None), "ce_terms", lambda net: 1)
        ces = {n: t["ce"] / terms_of(n) for n, t in losses.items() if t.get("ce") is not None}
        for net, ce in ces.items():
            if net in self.warned or trainer.networks[net].frozen or not ce >= 0.97 * chance:
                continue
            if evaluated is not None and net in evaluated:
                if evaluated[net]["acc"] >= 200.0 / trainer.data.num_classes:
                    continue  # it predicts well above chance: slow, not stuck
            elif not any(o != net and c < 0.9 * chance for o, c in ces.items()):
                continue  # no network is below chance yet: the labels are hard, not this network's lr
            self.warned.add(net)
            per = f" per term of {terms_of(net)}" if terms_of(net) > 1 else ""
            if trainer.dist.is_main:
                logger.warning(f"warning: network {net!r} trained at chance in epoch {summary['epoch']} (mean CE "
                               f"{ce:.3f}{per}, ln {trainer.data.num_classes} = {chance:.3f}); a slow start ends within a few "
                               "epochs, but if it stays there its learning rate may be too high for it "
                               f"(networks.{net}.lr={trainer.networks[net].cfg.lr:g})")
        return {}

