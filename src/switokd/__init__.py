"""switokd: Switchable Online Knowledge Distillation (SwitOKD) and online-KD baselines for PyTorch."""
__version__ = "0.1.0"

from .switching import (SwitchDecision, SwitchStats, adaptive_threshold, decide, distillation_gap,  # noqa: E402
                        label_distance, offlabel_stats, switch_stats, switch_weight)

from .models import create_model, register_model  # noqa: E402

__all__ = ["__version__", "create_model", "register_model", "decide", "distillation_gap", "label_distance", "adaptive_threshold", "switch_weight",
           "offlabel_stats", "switch_stats", "SwitchDecision", "SwitchStats"]
