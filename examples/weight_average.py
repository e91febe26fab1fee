"""A method of your own that ships a weight average: each network trained alone (cross-entropy, as vanilla),
and a temporal mean of its weights kept beside it, which is what it ships, as PCL ships its temporal mean.

It is the baseline for PCL's mean (issue 41): PCL's shipped mean was 15 points above DML with 40% label noise,
and this says how much of that a weight average gives without any distillation. The mean is updated after
every step as PCL's (``ema_update``: the plain average of the iterates at first, decay ``ema_decay`` after),
and forwarded on each training batch in train mode, so its BatchNorm statistics are its own, as PCL's are.

From the repository root (the module is found on PYTHONPATH):

    PYTHONPATH=. switokd train --config configs/fashion_mnist_noisy.yaml \\
        --method examples.weight_average:vanilla_mean

It uses the method contract only (``docs/extending.md``): the network's input by the ``:input`` feature path,
an owned module per network (``feature_modules``), ``after_step`` and ``shipped_module``.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from switokd.methods.baselines import Vanilla
from switokd.methods.branch import ema_update, mean_copy


class VanillaMean(Vanilla):
    """Vanilla training that ships a temporal mean of each network's weights."""

    name = "vanilla_mean"
    shipped_module = "mean"

    def __init__(self, roles: Mapping[str, str], *, ema_decay: float = 0.999, **kw: Any) -> None:
        super().__init__(roles, **kw)
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"vanilla_mean option ema_decay must be in [0, 1), got {ema_decay}")
        self.ema_decay = ema_decay

    def feature_requests(self) -> dict[str, list[str]]:
        return {n: [":input"] for n in self.names}  # the batch, to forward the mean on

    def setup(self, shapes, labels=None, models=None) -> None:
        for n in self.names:
            if n not in self.feature_modules:
                self.feature_modules[n] = nn.ModuleDict({"mean": mean_copy(models[n])})

    def step(self, logits, targets, features=None):
        with torch.no_grad():  # the mean's BatchNorm statistics from its own forwards, as PCL's
            for n in self.names:
                self.feature_modules[n]["mean"].train()(features[n][":input"])
        return super().step(logits, targets)

    def after_step(self, stepped, step) -> None:
        for n, model in stepped.items():
            ema_update(self.feature_modules[n]["mean"], model, step, self.ema_decay)


def vanilla_mean(roles: Mapping[str, str], **options: Any) -> VanillaMean:
    """``--method examples.weight_average:vanilla_mean``."""
    return VanillaMean(roles, **options)
