"""The step contract every method follows.

A method sees one batch's logits (a dict network name -> logits, computed by the
trainer) and the labels; it returns the named losses of every network that
learns from this batch and the networks that take an optimizer step. It never
calls backward or touches an optimizer: the trainer does, for exactly the
networks in ``stepping``. A network absent from ``stepping`` takes no backward
pass and no step.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
import inspect
from typing import Any, Callable, ClassVar, Mapping, Sequence

import torch
from torch import Tensor

from ..core.losses import cross_entropy
from ..registry import Registry
from ..core.switching import SwitchStats
from .distill import KL, LOSSES, DistillLoss, create_loss
from .recipes import Recipe, recipe_for, recipe_warnings

METHODS: Registry = Registry("method")


class MethodOptionError(ValueError):
    """A method refuses a value; ``key`` names the config key at fault (for ``method_from_config``'s message)."""

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass
class StepOutput:
    """What a method's ``step`` returns.

    ``losses[name]`` holds named terms ("ce", "kl") and "loss", the total that
    backpropagates; ``stepping`` lists the networks that take an optimizer step;
    ``switches`` maps a pair "teacher->student" to its switching statistics.
    """

    losses: dict[str, dict[str, Tensor]]
    stepping: tuple[str, ...]
    switches: dict[str, SwitchStats] = field(default_factory=dict)
    expert: dict[str, bool] = field(default_factory=dict)  # pair -> expert mode, host-side


@dataclass(frozen=True)
class LossWeights:
    """How a network's loss is made of CE and the KL terms."""

    tau: float = 1.0
    ce_weight: float = 1.0
    kl_weight: float = 1.0
    tau2: bool = False


def distill_loss(logits: Tensor, targets: Tensor, soft_targets: Sequence[Tensor], w: LossWeights,
                 reduce: str = "sum", loss: DistillLoss | None = None) -> dict[str, Tensor]:
    """ce_weight * CE(z, y) + kl_weight * (sum or mean over soft targets of the distillation term).

    The term is ``loss`` (default: KL(p_u^tau || p^tau), times tau^2 with ``w.tau2``); it is logged under
    the loss's name ("kl", "dkd", "dist").
    """
    if reduce not in ("sum", "mean"):
        raise ValueError(f"distill_loss: reduce must be 'sum' or 'mean', got {reduce!r}")
    loss = loss or KL(tau=w.tau, tau2=w.tau2)
    ce = cross_entropy(logits, targets)
    out = {"ce": ce}
    if soft_targets:
        term = sum(loss(t, logits, targets) for t in soft_targets)
        if reduce == "mean":
            term = term / len(soft_targets)
        out[loss.name] = term
        out["loss"] = w.ce_weight * ce + w.kl_weight * term
    else:
        out["loss"] = w.ce_weight * ce
    return out


def _identity(t: Tensor) -> Tensor:
    return t


INDEX = "#index"  # the features' entry holding the batch's images' indices in the training set (not a network)

IGNORE_INDEX = -100  # as torch's cross_entropy and Hugging Face's labels


def flatten_batch(logits: Mapping[str, Tensor], targets: Tensor, names: Sequence[str], method: str,
                  ignore_index: int | None = IGNORE_INDEX) -> tuple[dict[str, Tensor], Tensor]:
    """Every network's logits as ``[N, C]`` rows and the labels as ``[N]``, without the ignored positions.

    Takes ``[N, C]`` logits with ``[N]`` labels or token-level ``[B, T, C]`` logits with ``[B, T]`` labels (a
    sequence model's); positions labelled ``ignore_index`` count in no statistic and no loss. A missing
    network, a shape that does not fit or a label outside the classes is a ``ValueError`` naming it.
    ``ignore_index`` None skips the mask and the label check (no host synchronisation: the trainer's labels
    are checked when the data is read).
    """
    missing = [n for n in names if n not in logits]
    if missing:
        raise ValueError(f"method {method!r}: no logits for network(s) {', '.join(map(repr, missing))} "
                         f"(got {', '.join(map(repr, logits)) or 'none'}; the method's networks: {', '.join(names)})")
    first = logits[names[0]]
    shapes = {n: tuple(logits[n].shape) for n in names}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"method {method!r}: the networks' logits differ in shape: {shapes}")
    if first.dim() < 2 or tuple(targets.shape) != tuple(first.shape[:-1]):
        raise ValueError(f"method {method!r}: logits of shape {tuple(first.shape)} need labels of shape "
                         f"{tuple(first.shape[:-1])}, got {tuple(targets.shape)} (logits are [N, C] or [B, T, C])")
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise ValueError(f"method {method!r}: labels must be class indices, an integer tensor, got {targets.dtype} "
                         "(for float labels in a loader, .long() them; soft targets are not labels)")
    c = first.shape[-1]
    if ignore_index is None:  # labels known to be valid (the trainer's): no mask, no host synchronisation
        if first.dim() == 2:
            return dict(logits), targets
        return {n: logits[n].reshape(-1, c) for n in names}, targets.reshape(-1)
    flat_y = targets.reshape(-1)
    keep = flat_y != ignore_index
    masked = not bool(keep.all())
    y = flat_y[keep] if masked else flat_y
    if y.numel() == 0:
        raise ValueError(f"method {method!r}: every label of the batch is ignore_index ({ignore_index})")
    outside = (y < 0) | (y >= c)
    if bool(outside.any()):
        raise ValueError(f"method {method!r}: label {y[outside][0].item()} is outside the {c} classes (and is not "
                         f"ignore_index {ignore_index})")
    if first.dim() == 2 and not masked:
        return dict(logits), targets  # the common case: nothing to copy
    rows = {n: logits[n].reshape(-1, c) for n in names}
    return ({n: z[keep] for n, z in rows.items()} if masked else rows), y


def _flattening(step: Callable) -> Callable:
    """Wrap a method's ``step`` so that it sees [N, C] logits of the positions that count (``flatten_batch``),
    and add the feature term (``method.feature_loss``) to every stepping student's loss."""
    reads_features = len(inspect.signature(step).parameters) > 3  # step(self, logits, targets, features)

    def wrapped(self, logits, targets, features=None):
        flat = flatten_batch(logits, targets, self.names, self.name, self.ignore_index)
        out = step(self, *flat, features) if reads_features else step(self, *flat)
        if self.feature_template is not None:
            if features is None:
                raise ValueError(f"method {self.name!r} distils features ({self.feature_template.name}): step() needs "
                                 "features=, each network's from feature_requests() (the trainer passes them)")
            for s in out.stepping:
                if s in self.feature_modules:
                    term = self.feature_term(s, features)
                    out.losses[s][self.feature_template.name] = term
                    out.losses[s]["loss"] = out.losses[s]["loss"] + self.feature_weight * term
        return out
    wrapped.__wrapped__ = step  # type: ignore[attr-defined]
    wrapped.__doc__, wrapped.__name__ = step.__doc__, step.__name__
    return wrapped


class Method:
    """Base class: holds the roles, the loss weights and the distillation loss; subclasses implement ``step``.

    Args:
        roles: network name -> ``"teacher"`` or ``"student"``, in the cohort's order.
        tau: the temperature (None: the recipe's, ``methods.recipes``).
        tau2: multiply the KL term by tau^2 (None: the recipe's).
        ce_weight, kl_weight: the weights of CE and of the distillation term (None: the recipe's).
        loss: the distillation loss's name (``switokd.methods.LOSSES``; None: the method's, usually "kl").
        loss_options: that loss's own options (for example ``{"beta": 8.0}`` for dkd); unset ones are the
            recipe's.
        logit_std: z-score both sides' logits before the temperature (logit standardization).
        warmup_epochs: multiply the distillation term by min(epoch / warmup_epochs, 1), the epoch counted from
            1 (None: the recipe's, 20 for dkd and 0 for the others; 0: off).
        models: network name -> model name, for recipes that depend on the pair (DKD's beta).
        feature_loss, feature_options, feature_weight: a feature-distillation loss (``methods.features``) added
            to every student's loss, for each teacher, at ``feature_weight`` (None: the authors' weight).
        **options: the method's own options; an unknown one is a ``TypeError`` naming it.
    """

    name: ClassVar[str] = ""
    default_tau: ClassVar[float] = 1.0
    default_tau2: ClassVar[bool] = False
    default_loss: ClassVar[str] = "kl"
    recipe_source: ClassVar[str] = ""  # where the method's own KL settings come from (methods/recipes.py)
    min_networks: ClassVar[int] = 1
    offline: ClassVar[bool] = False  # teachers are frozen, trained beforehand (the sweep trains them first)
    branch_networks: ClassVar[int] = 0  # > 0: trains networks split into branches (a grid splits its students into this many)
    distills: ClassVar[bool] = True  # false: no distillation term, so a loss other than kl is refused

    ignore_index: int | None = IGNORE_INDEX  # labels that count in no statistic and no loss (None: no check)
    freeze_paused_bn: bool = False  # a paused network's BatchNorm statistics stay as they were (the trainer reads it)

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        # Every method's step takes [N, C] or [B, T, C] logits with ignore_index; its own code sees [N, C].
        if "step" in cls.__dict__ and not hasattr(cls.__dict__["step"], "__wrapped__"):
            cls.step = _flattening(cls.__dict__["step"])  # type: ignore[method-assign]

    def __init__(self, roles: Mapping[str, str], *, tau: float | None = None, tau2: bool | None = None,
                 ce_weight: float | None = None, kl_weight: float | None = None, loss: str | None = None,
                 loss_options: Mapping[str, Any] | None = None, logit_std: bool = False,
                 warmup_epochs: int | None = None, models: Mapping[str, str] | None = None,
                 feature_loss: str | None = None, feature_options: Mapping[str, Any] | None = None,
                 feature_weight: float | None = None, **options) -> None:
        self.roles = dict(roles)
        self.names = list(roles)
        self.teachers = [n for n, r in roles.items() if r == "teacher"]
        self.students = [n for n, r in roles.items() if r == "student"]
        bad = {n: r for n, r in self.roles.items() if r not in ("teacher", "student")}
        if bad:
            raise ValueError(f"method {self.name!r}: roles must be 'teacher' or 'student', got {bad}")
        if len(self.names) < self.min_networks:
            raise ValueError(f"method {self.name!r} needs at least {self.min_networks} networks, got {len(self.names)}")
        if options:
            raise TypeError(f"method {self.name!r} has no option {', '.join(map(repr, sorted(options)))}"
                            f" (its options: {', '.join(self.option_names()) or 'none'})")
        self._init_features(feature_loss, feature_options, feature_weight)
        loss = self.default_loss if loss is None else loss
        if not self.distills and (loss != "kl" or loss_options or logit_std):
            raise ValueError(f"method {self.name!r} trains on the labels alone: it has no distillation loss to set")
        try:
            LOSSES.get(loss)
        except KeyError as e:
            raise MethodOptionError(e.args[0], "method.loss") from None
        # Every unset option takes the published recipe's value (methods/recipes.py); a value given wins.
        models = dict(models or {})
        pair = ((models.get(self.teachers[0]), models.get(self.students[0]))
                if models and self.teachers and self.students else None)
        rec = self.recipe_for(loss, logit_std, pair)
        given = {k for k, v in dict(tau=tau, tau2=tau2, ce_weight=ce_weight, kl_weight=kl_weight,
                                    warmup_epochs=warmup_epochs).items() if v is not None}
        tau = rec.tau if tau is None else tau
        self.weights = LossWeights(tau=tau, ce_weight=rec.ce_weight if ce_weight is None else ce_weight,
                                   kl_weight=rec.kl_weight if kl_weight is None else kl_weight,
                                   tau2=rec.tau2 if tau2 is None else tau2)
        opts = dict(loss_options or {})
        given |= {f"loss_options.{k}" for k in opts}
        if "warmup" in opts:  # the warm-up is the method's (every loss has one), not a loss option
            raise MethodOptionError("method.loss_options has no key 'warmup'; did you mean method.warmup_epochs?",
                                    "method.loss_options")
        warmup_key = "method.warmup_epochs"
        warmup = rec.warmup_epochs if warmup_epochs is None else warmup_epochs
        opts = {**rec.loss_options, **opts}
        try:
            self.distill: DistillLoss = create_loss(loss, tau=tau, tau2=self.weights.tau2, logit_std=logit_std,
                                                    warmup=warmup, **opts)
        except (TypeError, ValueError) as e:
            key = warmup_key if str(e).startswith(f"{loss} warmup") else "method.loss_options"
            raise MethodOptionError(str(e), key) from None
        #: The recipe this method trains at, with the values given in place of the recipe's (``given``).
        self.recipe = replace(rec, tau=tau, ce_weight=self.weights.ce_weight, kl_weight=self.weights.kl_weight,
                              tau2=self.weights.tau2, warmup_epochs=warmup,
                              loss_options={k: getattr(self.distill, k) for k in self.distill.options()
                                            if k != "warmup"})
        self.recipe_given = sorted(given)
        #: Known trouble with these settings, measured (the run header prints each as a warning).
        self.recipe_warnings = recipe_warnings(self.recipe, loss, self.offline)
        # Sums statistics across processes before a decision; the identity in one process (set by the trainer).
        self.reduce: Callable[[Tensor], Tensor] = _identity

    # ------------------------------------------------------------------ features and owned modules

    def _init_features(self, name: str | None, options: Mapping[str, Any] | None, weight: float | None) -> None:
        from .features import create_feature_loss
        name = name if name is not None else self.default_feature_loss
        self.feature_template: Any = None
        self.feature_modules = torch.nn.ModuleDict()  # student -> ModuleDict(teacher -> its FeatureLoss)
        if name is None:
            if options:
                raise MethodOptionError("method.feature_options is set, but method.feature_loss is not",
                                        "method.feature_options")
            return
        if not self.teachers or not self.students:
            raise MethodOptionError(f"method {self.name!r} has no teacher-student pair to distil features between",
                                    "method.feature_loss")
        try:
            self.feature_template = create_feature_loss(name, **dict(options or {}))
        except KeyError as e:
            raise MethodOptionError(str(e.args[0]), "method.feature_loss") from None
        except (TypeError, ValueError) as e:
            raise MethodOptionError(str(e), "method.feature_options") from None
        if weight is not None and weight < 0:
            raise MethodOptionError(f"must be >= 0, got {weight}", "method.feature_weight")
        self.feature_weight = self.feature_template.weight if weight is None else float(weight)

    default_feature_loss: ClassVar[str | None] = None  # a feature method's own (at, fitnet, ...)

    def after_step(self, stepped: Mapping[str, Any], step: int) -> None:
        """Called after the optimizers stepped ``stepped`` (network -> model) at global step ``step`` (from 1): a
        method that keeps a temporal mean of a network (PCL) updates it here."""

    #: The name of the module this method owns, per network, that ships in the network's place (PCL: "mean",
    #: its temporal mean), else None. Checkpoints record it (``shipped_modules``), so that ``switokd export``
    #: ships the same model (``method_modules`` under ``NAME.``) without building the method.
    shipped_module: str | None = None

    def shipped(self, net: str) -> Any:
        """The model whose predictions network ``net`` ships, where it is not the network itself (the owned
        module named by ``shipped_module``), else None. Evaluation reports that model's accuracy as the
        network's, and ``switokd export`` ships its weights."""
        if self.shipped_module is None or net not in self.feature_modules:
            return None
        return self.feature_modules[net][self.shipped_module]

    def ce_terms(self, net: str) -> int:
        """How many cross-entropy terms network ``net``'s ``ce`` loss sums (1; a branch method's sums one per
        branch and one for its ensemble). The chance warning reads ``ce`` per term."""
        return 1

    def schedule_warnings(self, epochs: int, steps_per_epoch: int) -> list[str]:
        """One line per option of this method that the run's length defeats (a branch method's consistency ramp
        longer than the run, PCL's temporal mean averaging more steps than the run has); the run header prints
        them. Nothing is changed: the options stay the authors' unless the user sets them."""
        return []

    def bind(self, models: Mapping[str, Any]) -> None:
        """See the networks' models before ``feature_requests`` (a branch method counts their branches).

        A feature loss at its default stages reads like for like: where one network's ``stageK`` is already
        activated (a post-activation ResNet) and the other's is not (a pre-activation WRN's raw residual sum),
        both read ``stageK:act``, the stage's output as the next stage sees it. SP between a ResNet-20 teacher
        and a WRN-16-1 student fell 12-15 points below the student trained alone with the raw sums and rose 4-8
        above it with ``:act`` (docs/method.md, "Feature methods")."""
        t = self.feature_template
        self.feature_note = getattr(t, "note", "")  # a loss's own caveat (crd's queue)
        if t is None or not t.paths_default:
            return
        nets = [n for n in (*self.students, *self.teachers) if n in models]
        stages = {n: getattr(models[n], "feature_stages", None) or {} for n in nets}
        plain = [p for p in t.student_paths if p.startswith("stage") and ":" not in p]
        if not plain or not all(f"{p}:act" in stages[n] and p in stages[n] for n in nets for p in plain):
            return
        kinds = {n: tuple(stages[n][p] == stages[n][f"{p}:act"] for p in plain) for n in nets}
        if len(set(kinds.values())) > 1:
            t.student_paths = t.teacher_paths = [f"{p}:act" if p in plain else p for p in t.student_paths]
            self.feature_note = "; ".join(filter(None, [
                f"{t.name} reads {', '.join(t.student_paths)} on every network: their stages differ in kind "
                "(activated or raw residual sums), and :act is each stage as the next sees it", self.feature_note]))

    def feature_requests(self) -> dict[str, list[str]]:
        """The features each network must hand to ``step`` (network -> module paths or stage names); {} for a
        method that reads logits only."""
        t = self.feature_template
        if t is None:
            return {}
        out: dict[str, list[str]] = {}
        for s in self.students:
            out.setdefault(s, []).extend(p for p in t.student_paths if p not in out[s])
        for te in self.teachers:
            out.setdefault(te, []).extend(p for p in t.teacher_paths if p not in out[te])
        return out

    def setup(self, shapes: Mapping[str, Mapping[str, Any]], labels: Tensor | None = None,
              models: Mapping[str, Any] | None = None) -> None:
        """Build the modules this method owns from the features' shapes (network -> path -> [N, C, H, W]), as a
        dry forward on one batch gives them, and the training ``labels`` (CRD's negatives): one feature loss
        per (student, teacher) pair."""
        import copy
        t = self.feature_template
        if t is None or len(self.feature_modules):
            return
        for s in self.students:
            per = torch.nn.ModuleDict()
            for te in self.teachers:
                m = copy.deepcopy(t)
                m.context = {"labels": labels, "teacher": (models or {}).get(te)}  # what build() may read
                m.build([shapes[s][p] for p in m.student_paths], [shapes[te][p] for p in m.teacher_paths])
                per[te] = m
            self.feature_modules[s] = per

    @property
    def modules(self) -> dict[str, torch.nn.Module]:
        """The trainable modules this method owns, by the network each serves: they step when it steps, in its
        optimizer, and are saved with it, never exported."""
        return {n: m for n, m in self.feature_modules.items() if any(p.requires_grad for p in m.parameters())}

    def feature_term(self, student: str, features: Mapping[str, Mapping[str, Tensor]]) -> Tensor:
        """The feature loss of ``student`` summed over its teachers (teacher features detached, all in fp32)."""
        total = None
        index = features.get(INDEX)
        for te, m in self.feature_modules[student].items():
            fs = [features[student][p].float() for p in m.student_paths]
            ft = [features[te][p].detach().float() for p in m.teacher_paths]
            term = m(fs, ft, index)
            total = term if total is None else total + term
        assert total is not None
        return total / len(self.feature_modules[student])

    @classmethod
    def recipe_for(cls, loss: str, logit_std: bool, pair: tuple[str | None, str | None] | None = None) -> Recipe:
        """The published recipe of this method with ``loss`` (``methods.recipes.recipe_for``)."""
        loss_cls = LOSSES.get(loss)
        tau = loss_cls.default_tau if loss_cls.default_tau is not None else cls.default_tau
        return recipe_for(cls.name, loss, logit_std, offline=cls.offline, default_tau=tau,
                          default_tau2=cls.default_tau2, source=cls.recipe_source,
                          pair=pair if pair and all(pair) else None)

    def describe_recipe(self) -> str:
        """One line for the run header: the recipe's values, where they come from, and what was set instead."""
        r = self.recipe
        if not self.distills:
            return "recipe: cross-entropy alone"
        opts = "".join(f", {k} {v:g}" if isinstance(v, float) else f", {k} {v}" for k, v in r.loss_options.items())
        text = (f"recipe {r.name}: tau {r.tau:g}, CE {r.ce_weight:g}, {self.distill.name} {r.kl_weight:g}"
                f"{' x tau^2' if r.tau2 and self.distill.name == 'kl' else ''}{opts}"
                f"{f', warm-up {r.warmup_epochs} epochs' if r.warmup_epochs else ''}")
        if self.recipe_given:
            text += f" (set in the config: {', '.join(self.recipe_given)})"
        return text + (f"; from {r.source}" if r.source else "")

    @classmethod
    def option_names(cls) -> list[str]:
        """The method's own options: the named parameters its ``__init__`` chain adds to the base class's."""
        base = set(inspect.signature(Method.__init__).parameters) | {"roles"}
        names: list[str] = []
        for klass in cls.__mro__:
            if klass is Method or "__init__" not in vars(klass):
                continue
            for p, v in inspect.signature(klass.__init__).parameters.items():
                if p not in base and p not in names and v.kind not in (v.VAR_KEYWORD, v.VAR_POSITIONAL):
                    names.append(p)
        return names

    def label(self, name: str) -> str:
        """How reports and tables name this method when configured as ``name``: the name, then ``+LOSS`` unless
        the loss is the method's own, then ``+ls`` with logit standardization (``dml+dkd``, ``kd+ls``)."""
        own = self.distill.name == self.default_loss
        return name + ("" if own else f"+{self.distill.name}") + ("+ls" if self.distill.logit_std else "")

    def set_epoch(self, epoch: int) -> None:
        """Tell the method the current epoch (1-based) before its steps: DKD's and ReviewKD's warm-ups read it."""
        self.distill.epoch = epoch
        for per in self.feature_modules.values():
            for m in per.values():
                m.epoch = epoch

    @property
    def train_mode_teachers(self) -> frozenset[str]:
        """Frozen networks that forward in train mode (batch statistics): OFD's teachers, as its authors run them."""
        t = self.feature_template
        return frozenset(self.teachers) if t is not None and t.teacher_train_mode else frozenset()

    def loss(self, logits: Tensor, targets: Tensor, soft_targets: Sequence[Tensor], reduce: str = "sum") -> dict[str, Tensor]:
        """CE plus this method's distillation term against each soft target (``distill_loss``)."""
        return distill_loss(logits, targets, soft_targets, self.weights, reduce, self.distill)

    @property
    def frozen(self) -> frozenset[str]:
        """Networks that never learn (run in eval mode without gradients)."""
        return frozenset()

    @property
    def pausable(self) -> frozenset[str]:
        """Networks that may skip a step (their BatchNorm statistics can be frozen then)."""
        return frozenset()

    def step(self, logits: Mapping[str, Tensor], targets: Tensor) -> StepOutput:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(teachers={self.teachers}, students={self.students}, {self.weights}, {self.distill})"
