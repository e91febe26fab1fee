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
"""
from .version import __version__  # noqa: E402

from .errors import SwitokdError  # noqa: E402
from .core.switching import (SwitchDecision, SwitchStats, adaptive_threshold, decide, distillation_gap,  # noqa: E402
                        label_distance, offlabel_stats, switch_stats, switch_weight, uniokd_weight)
from .models import create_model, list_models, register_model  # noqa: E402
from .config import Config, load_config  # noqa: E402
from .methods import create_method, list_methods  # noqa: E402
from .data import DataSplits  # noqa: E402
from .train.trainer import Trainer  # noqa: E402

__all__ = ["__version__", "Trainer", "load_config", "Config", "create_method", "list_methods", "create_model",
           "list_models", "register_model", "DataSplits", "decide", "switch_stats", "SwitokdError",
           "distillation_gap", "label_distance", "adaptive_threshold", "switch_weight", "uniokd_weight",
           "offlabel_stats", "SwitchDecision", "SwitchStats"]
