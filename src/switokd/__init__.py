"""switokd: Switchable Online Knowledge Distillation (SwitOKD), UniOKD and the field's strongest logit-based
distillation methods, online and offline, for PyTorch.

The public API:

- ``Trainer``, ``load_config``: train a cohort from a config (the CLI is a thin layer over these);
- ``create_method``, ``list_methods``: a method's step (logits in, named losses and the stepping networks out)
  for your own loop;
- ``create_model``, ``list_models``, ``register_model``: the model registry;
- ``DataSplits``: in-memory data for ``Trainer(cfg, data=...)``;
- ``decide``, ``switch_stats``: the switch's pure maths;
- ``SwitokdError``: the base of every error the library raises (with the CLI's exit code).

Each name is imported when first used (PEP 562), so that ``import switokd.runs`` (the tools over run
directories) imports no torch.
"""
from __future__ import annotations

import importlib
from typing import Any

from .version import __version__

# name -> the module that defines it (its one import path besides this package's face)
_EXPORTS = {
    "SwitokdError": "switokd.errors",
    "Trainer": "switokd.train.trainer",
    "load_config": "switokd.config", "Config": "switokd.config",
    "create_method": "switokd.methods", "list_methods": "switokd.methods",
    "create_model": "switokd.models", "list_models": "switokd.models", "register_model": "switokd.models",
    "DataSplits": "switokd.data",
    **{n: "switokd.core.switching" for n in ("decide", "switch_stats", "distillation_gap", "label_distance",
                                             "adaptive_threshold", "switch_weight", "uniokd_weight", "offlabel_stats",
                                             "SwitchDecision", "SwitchStats")},
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # once
        return value
    raise AttributeError(f"module 'switokd' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
