"""Methods and distillation losses.

A method is a policy (who learns from whom, and when: ``vanilla``, ``kd``, ``dml``, ``kdcl``, ``switokd``,
``uniokd``, and the offline ``dkd`` and ``dist``) and a distillation loss (``kl``, ``dkd``, ``dist``, in
``LOSSES``), optionally on standardized logits. ``create_method`` takes a registered name or
``package.module:factory``.
"""
from __future__ import annotations

from typing import Any, Mapping

from .base import METHODS, LossWeights, Method, MethodOptionError, StepOutput, distill_loss
from .distill import LOSSES, DistillLoss, create_loss
from .recipes import Recipe, dkd_beta, recipe_for
from . import baselines, branch  # noqa: F401  (register)
from .switokd import SwitOKDCohort, SwitOKDPair, Switched, UniOKD, pair_name


def resolve_method(name: str):
    """A registered method's factory, or the callable named by ``package.module:factory``."""
    if ":" in name:
        from ..models import resolve_factory
        try:
            return resolve_factory(name)
        except KeyError as e:
            raise KeyError(str(e.args[0]).replace("model ", "method ", 1)) from None
    return METHODS.get(name)


def create_method(name: str, roles: Mapping[str, str], **options: Any) -> Method:
    """Build a method for networks with the given roles.

    Args:
        name: a registered method (``list_methods()``) or ``package.module:factory``, a callable
            ``factory(roles, **options) -> Method``: your own method, with no change to switokd.
        roles: network name -> ``"teacher"`` or ``"student"``, for example
            ``{"teacher": "teacher", "student": "student"}`` (the keys are the networks' names, the values
            their roles; pairs are then keyed ``"teacher->student"``).
        **options: the base options (``tau``, ``tau2``, ``ce_weight``, ``kl_weight``, ``loss``,
            ``loss_options``, ``logit_std``, ``warmup_epochs``, ``models``; unset ones are the published
            recipe's, ``switokd.methods.recipes``) and the method's own (``force_mode`` for switokd, ...).

    Example:
        >>> m = create_method("dml", {"big": "teacher", "small": "student"}, loss="dist")
        >>> m.distill.name
        'dist'
    """
    method = resolve_method(name)(roles, **options)
    if not isinstance(method, Method):
        raise KeyError(f"method {name!r} returned {type(method).__name__}, not a switokd Method")
    return method


def method_from_config(cfg) -> Method:
    """The method a ``Config`` names, with its loss and options; a bad value is a ``ConfigError`` naming its key.

    ``method.options`` gives the method's own options (kdcl's ``ensemble``, switokd's ``force_mode`` and
    ``freeze_teacher_bn``), each checked by the method that reads it.
    """
    from ..config import ConfigError

    m = cfg.method
    options: dict[str, Any] = dict(tau=m.tau, tau2=m.tau2, ce_weight=m.ce_weight, kl_weight=m.kl_weight,
                                   loss=m.loss, loss_options=dict(m.loss_options), logit_std=m.logit_std,
                                   warmup_epochs=m.warmup_epochs, models={n.name: n.model for n in cfg.networks},
                                   feature_loss=m.feature_loss, feature_options=dict(m.feature_options),
                                   feature_weight=m.feature_weight)
    own = dict(m.options)
    clash = sorted(set(own) & set(options))
    if clash:
        raise ConfigError(f"config key 'method.options': {', '.join(clash)} are method.* keys of their own; "
                          f"set method.{clash[0]} instead")
    roles = {n.name: n.role for n in cfg.networks}
    try:
        factory = resolve_method(m.name)
    except KeyError as e:
        raise ConfigError(f"config key 'method.name': {e.args[0]}") from None
    allowed = getattr(factory, "option_names", lambda: None)()
    if allowed is not None:
        unknown = sorted(set(own) - set(allowed))
        if unknown:
            key = "method.options"
            raise ConfigError(f"config key {key!r}: method {m.name!r} has no option "
                              f"{', '.join(map(repr, unknown))} (its options: {', '.join(allowed) or 'none'})")
    try:
        return create_method(m.name, roles, **options, **own)
    except KeyError as e:
        raise ConfigError(f"config key 'method.name': {e.args[0]}") from None
    except (TypeError, ValueError) as e:
        key = getattr(e, "key", None) or ("method.options" if " option" in str(e) else "method.name")
        raise ConfigError(f"config key {key!r}: {e}") from None


def list_methods() -> list[str]:
    """The registered methods' names."""
    return METHODS.names()


__all__ = ["Recipe", "recipe_for", "dkd_beta", "METHODS", "LOSSES", "Method", "MethodOptionError", "StepOutput", "LossWeights", "DistillLoss", "distill_loss",
           "create_method", "create_loss", "method_from_config", "list_methods", "resolve_method", "SwitOKDPair", "SwitOKDCohort",
           "Switched", "UniOKD", "pair_name"]
