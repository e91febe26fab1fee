"""Method registry: ``vanilla``, ``kd``, ``dml``, ``kdcl``, ``switokd``."""
from __future__ import annotations

from typing import Mapping

from .base import METHODS, LossWeights, Method, StepOutput, distill_loss
from . import baselines  # noqa: F401  (register)
from .switokd import SwitOKDCohort, SwitOKDPair, pair_name


def create_method(name: str, roles: Mapping[str, str], **options) -> Method:
    """Build a registered method for networks with the given roles (name -> teacher|student)."""
    return METHODS.get(name)(roles, **options)


__all__ = ["METHODS", "Method", "StepOutput", "LossWeights", "distill_loss", "create_method",
           "SwitOKDPair", "SwitOKDCohort", "pair_name"]
