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
    chance (at least 97% of ln C) for a whole epoch after the first: a learning rate too high for it (a
    MobileNet at 0.1) leaves it there with no other sign, while its partner trains on."""

    def __init__(self) -> None:
        self.warned: set[str] = set()

    def on_epoch_end(self, trainer: "Trainer", summary: dict[str, Any], evaluation: Evaluation | None) -> dict[str, Any]:
        import math
        from ..log import logger
        if summary.get("epoch", 1) < 2:
            return {}
        chance = math.log(trainer.data.num_classes)
        for net, terms in summary.get("train", {}).get("loss", {}).items():
            ce = terms.get("ce")
            if ce is None or net in self.warned or trainer.networks[net].frozen or not ce >= 0.97 * chance:
                continue
            self.warned.add(net)
            if trainer.dist.is_main:
                logger.warning(f"warning: network {net!r} trained at chance in epoch {summary['epoch']} (mean CE "
                               f"{ce:.3f}, ln {trainer.data.num_classes} = {chance:.3f}); its learning rate may be too "
                               f"high for it (networks.{net}.lr={trainer.networks[net].cfg.lr:g})")
        return {}

