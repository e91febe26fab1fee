"""Feature-distillation losses as modules a method owns: each names the features it reads (stage names or
module paths, ``switokd.models.features``), builds its trainable parts (connectors, regressors, variances) once
the features' shapes are known, and returns its term for one (teacher, student) pair.

A method with ``method.feature_loss=NAME`` owns one such module per (student, teacher) pair; the trainer puts
its parameters in the student's optimizer (the student's learning rate and schedule, as mdistiller's
``get_learnable_parameters`` does), steps them only when the student steps, all-reduces, checkpoints and
resumes them with it, and leaves them out of export. The pure maths is ``switokd.core.feature_losses``.

Defaults are mdistiller's CIFAR-100 configs (``configs/cifar100/*.yaml`` and ``mdistiller/engine/cfg.py`` at
a08d46f), which RepDistiller's ``scripts/run_cifar_distill.sh`` shares (docs/method.md, "Feature methods").
"""
from __future__ import annotations

from typing import Any, ClassVar, Sequence

import torch
from torch import Tensor, nn

from ..core import feature_losses as FL
from ..registry import Registry

FEATURE_LOSSES: Registry = Registry("feature loss")

STAGES = ("stage1", "stage2", "stage3")


class FeatureLoss(nn.Module):
    """Base class. Subclasses set ``name``, ``weight`` (the term's weight in the authors' recipe) and ``source``,
    and implement ``paths`` and ``forward``; ``build`` makes their trainable parts from the features' shapes.

    Args:
        student_paths, teacher_paths: override the features read (a list each, in matching order).
    """

    name: ClassVar[str] = ""
    weight: ClassVar[float] = 1.0
    source: ClassVar[str] = ""
    default_paths: ClassVar[tuple[str, ...]] = STAGES

    def __init__(self, student_paths: Sequence[str] | None = None, teacher_paths: Sequence[str] | None = None) -> None:
        super().__init__()
        self.student_paths = list(student_paths or self.default_paths)
        self.teacher_paths = list(teacher_paths or student_paths or self.default_paths)
        if len(self.student_paths) != len(self.teacher_paths):
            raise ValueError(f"feature loss {self.name!r}: student_paths and teacher_paths must pair up, got "
                             f"{self.student_paths} and {self.teacher_paths}")
        self.built = False

    def build(self, student_shapes: Sequence[torch.Size], teacher_shapes: Sequence[torch.Size]) -> None:
        """Make the trainable parts from the features' shapes ([N, C, H, W] each), once."""
        self.built = True

    def forward(self, fs: Sequence[Tensor], ft: Sequence[Tensor]) -> Tensor:  # noqa: D401
        raise NotImplementedError

    @classmethod
    def options(cls) -> list[str]:
        import inspect
        return [p for p, v in inspect.signature(cls.__init__).parameters.items()
                if p != "self" and v.kind is v.KEYWORD_ONLY or p in ("student_paths", "teacher_paths")]

    def extra_repr(self) -> str:
        return f"student_paths={self.student_paths}, teacher_paths={self.teacher_paths}"


@FEATURE_LOSSES.register()
class AT(FeatureLoss):
    """Attention transfer (Zagoruyko & Komodakis 2017): the stages' spatial attention maps, weight 1000, p 2."""

    name, weight = "at", 1000.0
    source = "mdistiller mdistiller/distillers/AT.py, configs/cifar100/at.yaml (AT.P 2, FEAT_WEIGHT 1000)"

    def __init__(self, student_paths=None, teacher_paths=None, *, p: float = 2.0) -> None:
        super().__init__(student_paths, teacher_paths)
        self.p = p

    def forward(self, fs, ft):
        return FL.at_loss(fs, ft, self.p)


@FEATURE_LOSSES.register()
class NST(FeatureLoss):
    """Neuron selectivity transfer (Huang & Wang 2017): polynomial-kernel MMD over the stages, weight 50."""

    name, weight = "nst", 50.0
    source = "mdistiller mdistiller/distillers/NST.py, configs/cifar100/nst.yaml (FEAT_WEIGHT 50)"

    def forward(self, fs, ft):
        return FL.nst_loss(fs, ft)


@FEATURE_LOSSES.register()
class SP(FeatureLoss):
    """Similarity-preserving KD (Tung & Mori 2019): the last stage's batch similarity, weight 3000."""

    name, weight = "sp", 3000.0
    source = "mdistiller mdistiller/distillers/SP.py, configs/cifar100/sp.yaml (FEAT_WEIGHT 3000)"
    default_paths = ("stage3",)

    def forward(self, fs, ft):
        return sum(FL.sp_loss(s, t) for s, t in zip(fs, ft))


@FEATURE_LOSSES.register()
class PKT(FeatureLoss):
    """Probabilistic knowledge transfer (Passalis & Tefas 2018): the pooled features, weight 30000."""

    name, weight = "pkt", 30000.0
    source = "mdistiller mdistiller/distillers/PKT.py, configs/cifar100/pkt.yaml (FEAT_WEIGHT 30000)"
    default_paths = ("pool",)

    def forward(self, fs, ft):
        return sum(FL.pkt_loss(s, t) for s, t in zip(fs, ft))


@FEATURE_LOSSES.register()
class RKD(FeatureLoss):
    """Relational KD (Park et al. 2019): distance (25) and angle (50) relations of the pooled features, weight 1."""

    name, weight = "rkd", 1.0
    source = "mdistiller mdistiller/distillers/RKD.py (DISTANCE_WEIGHT 25, ANGLE_WEIGHT 50, FEAT_WEIGHT 1)"
    default_paths = ("pool",)

    def __init__(self, student_paths=None, teacher_paths=None, *, distance_weight: float = 25.0,
                 angle_weight: float = 50.0) -> None:
        super().__init__(student_paths, teacher_paths)
        self.distance_weight, self.angle_weight = distance_weight, angle_weight

    def forward(self, fs, ft):
        return sum(FL.rkd_loss(s, t, self.distance_weight, self.angle_weight) for s, t in zip(fs, ft))


def _conv_reg(s: torch.Size, t: torch.Size) -> nn.Module:
    """FitNet's regressor (mdistiller ``ConvReg``, ``use_relu=True``): a convolution that maps the student's map
    to the teacher's channels and size, then BN and ReLU."""
    sc, sh, sw = s[1:]
    tc, th, tw = t[1:]
    if sh == 2 * th:
        conv: nn.Module = nn.Conv2d(sc, tc, 3, stride=2, padding=1)
    elif 2 * sh == th:
        conv = nn.ConvTranspose2d(sc, tc, 4, stride=2, padding=1)
    elif sh >= th:
        conv = nn.Conv2d(sc, tc, (1 + sh - th, 1 + sw - tw))
    else:
        raise ValueError(f"fitnet: no regressor from a {tuple(s[1:])} map to a {tuple(t[1:])} one")
    return nn.Sequential(conv, nn.BatchNorm2d(tc), nn.ReLU(inplace=True))


@FEATURE_LOSSES.register()
class FitNet(FeatureLoss):
    """FitNets (Romero et al. 2015), single-stage as mdistiller and RepDistiller train it: a regressor maps the
    student's stage-2 output to the teacher's, MSE, weight 100 (the paper's separate hint stage is not run)."""

    name, weight = "fitnet", 100.0
    source = "mdistiller mdistiller/distillers/FitNet.py, configs/cifar100/fitnet.yaml (HINT_LAYER 2, FEAT_WEIGHT 100)"
    default_paths = ("stage2",)

    def build(self, student_shapes, teacher_shapes):
        self.regressors = nn.ModuleList(_conv_reg(s, t) for s, t in zip(student_shapes, teacher_shapes))
        self.built = True

    def forward(self, fs, ft):
        return sum(nn.functional.mse_loss(r(s), t) for r, s, t in zip(self.regressors, fs, ft))


@FEATURE_LOSSES.register()
class VID(FeatureLoss):
    """Variational information distillation (Ahn et al. 2019): per stage, a 1x1-conv regressor predicts the
    teacher's map with a learned per-channel variance (registered and trained, as RepDistiller does), weight 1."""

    name, weight = "vid", 1.0
    source = "RepDistiller distiller_zoo/VID.py, mdistiller configs/cifar100/vid.yaml (INIT_PRED_VAR 5, EPS 1e-5)"

    def __init__(self, student_paths=None, teacher_paths=None, *, init_var: float = 5.0, eps: float = 1e-5) -> None:
        super().__init__(student_paths, teacher_paths)
        self.init_var, self.eps = init_var, eps

    def build(self, student_shapes, teacher_shapes):
        self.regressors = nn.ModuleList()
        self.log_scales = nn.ParameterList()
        for s, t in zip(student_shapes, teacher_shapes):
            sc, tc = s[1], t[1]
            self.regressors.append(nn.Sequential(nn.Conv2d(sc, tc, 1, bias=False), nn.ReLU(),
                                                 nn.Conv2d(tc, tc, 1, bias=False), nn.ReLU(),
                                                 nn.Conv2d(tc, tc, 1, bias=False)))
            self.log_scales.append(nn.Parameter(torch.full((tc,), FL.vid_log_scale_init(self.init_var, self.eps))))
        self.built = True

    def forward(self, fs, ft):
        total = fs[0].new_zeros(())
        for reg, log_scale, s, t in zip(self.regressors, self.log_scales, fs, ft):
            s, t = FL.match_spatial(s, t)
            total = total + FL.vid_nll(reg(s), t, log_scale, self.eps)
        return total


def create_feature_loss(name: str, **options: Any) -> FeatureLoss:
    """A registered feature loss by name (``FEATURE_LOSSES``); an unknown option is a ``ValueError`` naming it."""
    cls = FEATURE_LOSSES.get(name)
    allowed = cls.options()
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"feature loss {name!r} has no option {', '.join(map(repr, unknown))} "
                         f"(its options: {', '.join(allowed)})")
    return cls(**options)


__all__ = ["FEATURE_LOSSES", "FeatureLoss", "create_feature_loss", "AT", "NST", "SP", "PKT", "RKD", "FitNet", "VID"]
