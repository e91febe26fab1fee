"""The published recipes: what each method's and loss's unset options mean, and where each value comes from.

A *recipe* is a method's loss settings as its authors train it at CIFAR scale: the temperature, the weights of
cross-entropy and of the distillation term, the tau^2 factor, a warm-up of the distillation term and the
loss's own options. Every ``method.*`` key left unset (None) takes the recipe's value, so ``kd``, ``kd+ls``,
``dkd``, ``dkd+ls`` and ``dist`` in a config or a sweep mean what their papers mean; a key you set wins.
``recipe_for`` picks the recipe; ``Method.recipe`` (and the run header, and ``report.json``) says which one a
run used, with its source. docs/method.md, "The recipes", restates each and says where switokd differs.

The training schedule (optimizer, learning rate, epochs) is not part of a recipe: every method of a comparison
trains on the same schedule, the config's.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

MDISTILLER = "megvii-research/mdistiller"


@dataclass(frozen=True)
class Recipe:
    """The loss settings of one method and loss, as published.

    Args:
        name: how reports name the recipe (``kd``, ``kd+ls``, ``dkd``, ``dist``, ``online-kl``, ...).
        tau: the temperature.
        ce_weight, kl_weight: the weights of cross-entropy and of the distillation term.
        tau2: whether the KL term is multiplied by tau^2 (dkd and dist scale themselves).
        warmup_epochs: the distillation term is multiplied by min(epoch / warmup_epochs, 1), the epoch
            counted from 1 (0: no warm-up).
        loss_options: the loss's own options (DKD's alpha and beta, DIST's beta and gamma).
        source: the repository and file each value is read from.
    """

    name: str
    tau: float
    ce_weight: float
    kl_weight: float
    tau2: bool
    warmup_epochs: int = 0
    loss_options: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# Offline KD (Hinton et al. 2015) as mdistiller trains it on CIFAR-100: 0.1 * CE + 0.9 * tau^2 * KL at tau 4
# (mdistiller/engine/cfg.py: CFG.KD.TEMPERATURE, CFG.KD.LOSS.CE_WEIGHT, KD_WEIGHT; distillers/KD.py).
KD = Recipe("kd", tau=4.0, ce_weight=0.1, kl_weight=0.9, tau2=True,
            source=f"{MDISTILLER} mdistiller/engine/cfg.py (CFG.KD) and mdistiller/distillers/KD.py")
# KD with logit standardization (Sun et al. 2024): tools/train.py --logit-stand --base-temp 2 --kd-weight 9,
# the CE weight staying KD's 0.1 (sunshangquan/logit-standardization-KD README and tools/train.py).
KD_LS = Recipe("kd+ls", tau=2.0, ce_weight=0.1, kl_weight=9.0, tau2=True,
               source="sunshangquan/logit-standardization-KD tools/train.py (--base-temp 2 --kd-weight 9) and "
                      "mdistiller/distillers/KD.py's normalize")
# DKD (Zhao et al. 2022): CE 1, alpha 1, beta per pair (8 by default), tau 4, a 20-epoch linear warm-up
# (mdistiller/engine/cfg.py CFG.DKD; configs/cifar100/dkd/*.yaml set BETA per pair; distillers/DKD.py).
DKD = Recipe("dkd", tau=4.0, ce_weight=1.0, kl_weight=1.0, tau2=False, warmup_epochs=20,
             loss_options={"alpha": 1.0, "beta": 8.0},
             source=f"{MDISTILLER} mdistiller/engine/cfg.py (CFG.DKD), configs/cifar100/dkd/*.yaml (BETA per "
                    "pair) and mdistiller/distillers/DKD.py (the warm-up)")
# DKD with logit standardization: the same flags multiply ALPHA and BETA by --kd-weight 9 and set T to
# --base-temp 2; CE weight and warm-up stay DKD's. switokd writes 9 * (alpha * TCKD + beta * NCKD) as kl_weight 9.
DKD_LS = Recipe("dkd+ls", tau=2.0, ce_weight=1.0, kl_weight=9.0, tau2=False, warmup_epochs=20,
                loss_options={"alpha": 1.0, "beta": 8.0},
                source="sunshangquan/logit-standardization-KD tools/train.py (DKD: ALPHA and BETA times "
                       "--kd-weight 9, T = --base-temp 2) over mdistiller's DKD config")
# DIST (Huang et al. 2022) on CIFAR-100: ori_loss_weight 1, kd_loss_weight 2, kd dist_t4 = DIST(beta=1,
# gamma=1, tau=4) (hunto/DIST_KD configs/strategies/distill/dist_cifar.yaml; its classification submodule's
# lib/models/losses/kd_loss.py and dist_kd.py).
DIST = Recipe("dist", tau=4.0, ce_weight=1.0, kl_weight=2.0, tau2=False, loss_options={"beta": 1.0, "gamma": 1.0},
              source="hunto/DIST_KD configs/strategies/distill/dist_cifar.yaml (kd_loss_weight 2, kd dist_t4) and "
                     "lib/models/losses/kd_loss.py, dist_kd.py")

# DIST online (DML, SwitOKD, ... with method.loss=dist): no paper gives one. The CIFAR recipe above is for a
# trained teacher; online, from scratch, its intra-class term's gradient is about 200 times cross-entropy's at
# initialisation (tau^2 = 16 times the tau-1 gradient, doubled by the weight; measured on the default pair) and
# both networks chase each other's random ranking: DML+DIST at that recipe collapsed to chance, with a 10-epoch
# warm-up too (docs/method.md, "DIST online"). switokd uses the authors' plain loss instead, kd_loss.py's 'dist' =
# DIST(beta=1, gamma=1, tau=1), at weight 1.
DIST_ONLINE = Recipe("dist-online", tau=1.0, ce_weight=1.0, kl_weight=1.0, tau2=False,
                     loss_options={"beta": 1.0, "gamma": 1.0},
                     source="switokd's choice for online DIST (no published recipe): the authors' plain 'dist' loss "
                            "of lib/models/losses/kd_loss.py (hunto/DIST_KD), DIST(beta=1, gamma=1, tau=1), at weight 1")

# DKD's BETA per (teacher family, student family), from mdistiller's configs/cifar100/dkd/*.yaml: 6 for a WRN
# teacher with a WRN student (wrn40_2_wrn_16_2, wrn40_2_wrn_40_1) and for VGG pairs, 2 for a CIFAR ResNet
# teacher with a CIFAR ResNet student (res56_res20, res110_res32), 8 (the default) for every other pair.
DKD_BETA = {("wrn", "wrn"): (6.0, "configs/cifar100/dkd/wrn40_2_wrn_16_2.yaml and wrn40_2_wrn_40_1.yaml"),
            ("resnet_cifar", "resnet_cifar"): (2.0, "configs/cifar100/dkd/res56_res20.yaml and res110_res32.yaml"),
            ("vgg", "vgg"): (6.0, "configs/cifar100/dkd/vgg13_vgg8.yaml")}


def model_family(model: str) -> str:
    """A registered model's family for the per-pair recipe tables (``wrn``, ``resnet_cifar``, ...; else the name)."""
    if model.startswith("wrn"):
        return "wrn"
    if model in ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110"):
        return "resnet_cifar"
    if model.startswith("vgg"):
        return "vgg"
    return model


def dkd_beta(teacher_model: str | None, student_model: str | None) -> tuple[float, str]:
    """DKD's beta for a (teacher, student) pair of models, and the mdistiller config it follows.

    Example:
        >>> dkd_beta("wrn16_2", "wrn16_1")[0], dkd_beta("resnet56", "resnet20")[0], dkd_beta("wrn16_2", "resnet20")[0]
        (6.0, 2.0, 8.0)
    """
    key = (model_family(teacher_model or ""), model_family(student_model or ""))
    if key in DKD_BETA:
        return DKD_BETA[key]
    return 8.0, "mdistiller/engine/cfg.py CFG.DKD.BETA (the default; no config of the authors' for this pair)"


def recipe_warnings(recipe: Recipe, loss: str, offline: bool) -> list[str]:
    """What is known to go wrong with these settings, measured, for the run header (empty when nothing is)."""
    out = []
    if loss == "dist" and not offline and recipe.tau ** 2 * recipe.kl_weight > 1.0:
        out.append(f"online DIST at tau {recipe.tau:g} and weight {recipe.kl_weight:g}: from scratch its intra-class "
                   "term's gradient is ~200x cross-entropy's at DIST's CIFAR recipe (tau 4, weight 2), and DML+DIST "
                   "collapsed on Fashion-MNIST there (to chance) and at tau 1, weight 2 (26% after 30 epochs; "
                   "docs/method.md, 'DIST online'); the online default is tau 1, weight 1")
    return out


def recipe_for(method: str, loss: str, logit_std: bool, *, offline: bool, default_tau: float, default_tau2: bool,
               source: str = "", pair: tuple[str, str] | None = None) -> Recipe:
    """The recipe of ``method`` with ``loss`` (and logit standardization).

    Args:
        method: the method's registered name (its label for reports).
        loss: the distillation loss's name (``kl``, ``dkd``, ``dist`` or yours).
        logit_std: logit standardization on.
        offline: the method distils from frozen, trained teachers (KD's recipes apply to the KL loss).
        default_tau, default_tau2, source: the method's own KL settings (the online methods' recipes).
        pair: (teacher model, student model) of the cohort's first pair, for DKD's per-pair beta.

    A loss that has a published recipe (dkd, dist) brings it to any method, online ones included: no paper
    gives an online recipe for them, and the offline one is the authors' only statement. KL with logit
    standardization has a published recipe offline only; online it keeps the method's own values.
    """
    if loss == "dkd":
        base = DKD_LS if logit_std else DKD
        if pair is not None:
            beta, where = dkd_beta(*pair)
            base = replace(base, loss_options={**base.loss_options, "beta": beta},
                           source=f"{base.source}; beta {beta:g} for this pair: {where}")
        return base
    if loss == "dist":
        base = DIST if offline else DIST_ONLINE
        return base if not logit_std else replace(base, name=base.name + "+ls", source=base.source + " (no published "
                                                  "recipe with logit standardization: the same, standardized)")
    if loss == "kl" and offline:
        return KD_LS if logit_std else KD
    return Recipe(f"{method}" + ("+ls" if logit_std else ""), tau=default_tau, ce_weight=1.0, kl_weight=1.0,
                  tau2=default_tau2, source=source or f"switokd's defaults for {method!r} (no published recipe)")


__all__ = ["Recipe", "recipe_for", "recipe_warnings", "DIST_ONLINE", "dkd_beta", "model_family", "KD", "KD_LS", "DKD", "DKD_LS", "DIST", "DKD_BETA"]
