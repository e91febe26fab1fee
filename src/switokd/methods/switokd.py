"""SwitOKD (Qian et al., ECCV 2022) and UniOKD (its authors' successor): a per-step switch between learning
and expert mode for every (teacher, student) pair (docs/method.md)."""
from __future__ import annotations

from itertools import product
from typing import Callable, ClassVar, Mapping

import torch
from torch import Tensor

from ..core.losses import cross_entropy
from ..core.switching import SwitchStats, pair_sums, stats_from_sums, switch_weight, uniokd_weight
from .base import METHODS, Method, MethodOptionError, StepOutput


FORCE_MODES = (None, "learning", "expert")


def pair_name(teacher: str, student: str) -> str:
    """The key of a (teacher, student) pair in ``StepOutput.switches`` and the logs: ``"teacher->student"``."""
    return f"{teacher}->{student}"


class Switched(Method):
    """What every switching method shares: its pairs, one decision per pair per step, the forced mode.

    Subclasses set ``weight`` (the eps rule) and ``stats_tau`` (the temperature of G) and build the losses
    from ``decide_pairs``.
    """

    weight: ClassVar[Callable[[Tensor, Tensor], Tensor]] = staticmethod(switch_weight)

    def __init__(self, roles, *, force_mode: str | None = None, freeze_teacher_bn: bool = False, **kw) -> None:
        super().__init__(roles, **kw)
        if force_mode not in FORCE_MODES:
            raise ValueError(f"{self.name} option force_mode must be one of "
                             f"{', '.join(repr(m) for m in FORCE_MODES if m)} or unset, got {force_mode!r}")
        if not isinstance(freeze_teacher_bn, bool):
            raise ValueError(f"{self.name} option freeze_teacher_bn must be true or false, got {freeze_teacher_bn!r}")
        self.force_mode = force_mode  # hold every switch in one mode (ablations, benchmarks)
        self.freeze_paused_bn = freeze_teacher_bn  # a paused teacher keeps its BatchNorm statistics
        if not self.teachers or not self.students:
            raise ValueError(f"method {self.name!r} needs at least one teacher and one student")
        self.pairs = list(product(self.teachers, self.students))

    @property
    def stats_tau(self) -> float:
        return self.weights.tau

    @property
    def pausable(self) -> frozenset[str]:
        return frozenset(self.teachers)

    def decide_pairs(self, logits: Mapping[str, Tensor], targets: Tensor) -> tuple[dict[str, SwitchStats], dict[str, bool]]:
        """Every pair's statistics and mode: one reduction across processes and one host sync for all pairs."""
        sums = self.reduce(torch.stack([pair_sums(logits[t], logits[s], targets, self.stats_tau)
                                        for t, s in self.pairs]))
        stats = {pair_name(t, s): stats_from_sums(row, self.weight) for (t, s), row in zip(self.pairs, sums)}
        # The step's one host synchronisation; a held mode pays it too, so that it costs what a real step costs.
        flags = torch.stack([st.expert for st in stats.values()]).tolist()
        if self.force_mode is not None:
            flags = [self.force_mode == "expert"] * len(stats)
        return stats, dict(zip(stats, flags))

    def learning_students(self, teacher: str, expert: Mapping[str, bool]) -> list[str]:
        """The students whose pair with ``teacher`` is in learning mode (none: the teacher is paused)."""
        return [s for s in self.students if not expert[pair_name(teacher, s)]]

    def output(self, losses: dict[str, dict[str, Tensor]], stats, expert) -> StepOutput:
        # Keep the cohort's network order so that summing the losses is order-stable.
        return StepOutput(losses, tuple(n for n in self.names if n in losses), stats, expert)


class SwitOKDCohort(Switched):
    """SwitOKD for any mix of teachers and students (docs/method.md, "More than two networks").

    Every (teacher, student) pair is a switch. A student learns from every other network. A teacher is
    paused when all its pairs are in expert mode; otherwise it learns from the students whose pair is in
    learning mode and from the other teachers.
    """

    name = "switokd"
    recipe_source = "hfutqian/SwitOKD's training scripts (tau 1, CE and KL 1:1, no tau^2)"

    def step(self, logits: Mapping[str, Tensor], targets: Tensor) -> StepOutput:
        stats, expert = self.decide_pairs(logits, targets)
        losses = {s: self.loss(logits[s], targets, [logits[u] for u in self.names if u != s]) for s in self.students}
        for t in self.teachers:
            learning = self.learning_students(t, expert)
            if learning:  # else every switch of this teacher is in expert mode: paused
                soft = [logits[s] for s in learning] + [logits[u] for u in self.teachers if u != t]
                losses[t] = self.loss(logits[t], targets, soft)
        return self.output(losses, stats, expert)


class SwitOKDPair(SwitOKDCohort):
    """The two-network method exactly as in docs/method.md, one teacher and one student.

    LEARNING: both learn CE + KL(p_other^tau || p_self^tau) and both step.
    EXPERT (G > delta and d_T < d_S): only the student learns; the teacher takes
    no backward pass and no step. (The cohort rules with one pair.)
    """

    def __init__(self, roles, **kw) -> None:
        super().__init__(roles, **kw)
        if len(self.teachers) != 1 or len(self.students) != 1:
            raise ValueError("SwitOKDPair needs exactly one teacher and one student; use SwitOKD for cohorts")
        self.teacher, self.student = self.teachers[0], self.students[0]
        self.pair = pair_name(self.teacher, self.student)


@METHODS.register("switokd")
def switokd(roles, **kw) -> Method:
    """SwitOKD: pauses a teacher while its distillation gap to a student is too large.

    One teacher and one student use the pair form; any other mix the cohort form.
    """
    kinds = list(roles.values())
    if kinds.count("teacher") == 1 and kinds.count("student") == 1:
        return SwitOKDPair(roles, **kw)
    return SwitOKDCohort(roles, **kw)


switokd.option_names = SwitOKDCohort.option_names  # type: ignore[attr-defined]
switokd.offline = False  # type: ignore[attr-defined]


@METHODS.register()
class UniOKD(Switched):
    """UniOKD (Qian et al., 2025; the authors' CIFAR script): SwitOKD's switch with its own eps, a
    teacher-correctness mask and mode-dependent temperatures (docs/method.md, "UniOKD").

    eps = exp(-(2 - d_T) d_T / (d_T + d_S)), delta = d_S - eps d_T, statistics at tau = 1; expert mode when
    G > delta and d_T < d_S. With m_i = 1 where the teacher's top-1 is the label:

    - expert: the teacher is paused; the student learns
      CE + expert_weight * mean_i w_i KL_i(p_T^expert_tau || p_S^expert_tau), w_i = m_i + (d_T / 2)(1 - m_i);
    - learning: the teacher learns CE + teacher_weight * KL(p_S^learn_tau || p_T^learn_tau), the student
      CE + student_weight * KL(p_T^learn_tau || p_S^learn_tau).

    In a cohort every pair is its own switch; a student sums its terms over the teachers (and learns from the
    other students as in learning mode), a teacher over its learning students (and the other teachers), and
    a teacher is paused when all its pairs are in expert mode.
    """

    name = "uniokd"
    weight = staticmethod(uniokd_weight)
    recipe_source = "hfutqian/UniOKD UniOKD_code/Train/main.py (its own temperatures and weights: method.options)"

    def __init__(self, roles, *, expert_tau: float = 4.0, expert_weight: float = 32.0, learn_tau: float = 2.0,
                 teacher_weight: float = 4.0, student_weight: float = 8.0, **kw) -> None:
        for key in ("tau", "tau2", "kl_weight", "warmup_epochs"):
            if kw.get(key) is not None:
                raise MethodOptionError("method 'uniokd' sets its temperatures and weights by its own options "
                                        "(expert_tau, learn_tau, expert_weight, teacher_weight, student_weight), not "
                                        "method.tau, method.tau2, method.kl_weight or method.warmup_epochs",
                                        f"method.{key}")
        if kw.get("loss") not in (None, "kl"):
            raise MethodOptionError(f"method 'uniokd' is defined with the KL loss (its weights 32, 4 and 8 are set "
                                    f"for KL at its temperatures), not {kw['loss']!r}", "method.loss")
        super().__init__(roles, **kw)
        for k, v in dict(expert_tau=expert_tau, learn_tau=learn_tau).items():
            if v <= 0:
                raise ValueError(f"uniokd {k} must be > 0, got {v}")
        self.expert_tau, self.learn_tau = float(expert_tau), float(learn_tau)
        self.expert_weight, self.teacher_weight, self.student_weight = (
            float(expert_weight), float(teacher_weight), float(student_weight))

    @property
    def stats_tau(self) -> float:
        return 1.0

    def describe_recipe(self) -> str:
        return (f"recipe uniokd: CE {self.weights.ce_weight:g}; expert {self.expert_weight:g} x KL at tau "
                f"{self.expert_tau:g}, learning {self.teacher_weight:g} (teacher) and {self.student_weight:g} (student) "
                f"x KL at tau {self.learn_tau:g}; from {self.recipe_source}")

    def _total(self, logits: Tensor, targets: Tensor, terms: list[Tensor]) -> dict[str, Tensor]:
        ce = cross_entropy(logits, targets)
        kl = sum(terms)
        return {"ce": ce, "kl": kl, "loss": self.weights.ce_weight * ce + kl}

    def step(self, logits: Mapping[str, Tensor], targets: Tensor) -> StepOutput:
        stats, expert = self.decide_pairs(logits, targets)
        kl, losses = self.distill, {}
        # Where each teacher's top-1 is the label (the mask m), for the pairs in expert mode.
        right = {t: (logits[t].detach().argmax(dim=1) == targets).float() for t in self.teachers
                 if any(expert[pair_name(t, s)] for s in self.students)}
        for s in self.students:
            terms = []
            for t in self.teachers:
                if expert[pair_name(t, s)]:
                    # Trust the teacher fully where it is right, by d_T / 2 (its off-label mass) where wrong.
                    w = right[t] + stats[pair_name(t, s)].teacher_label_distance / 2 * (1.0 - right[t])
                    terms.append(self.expert_weight * kl(logits[t], logits[s], targets, tau=self.expert_tau, weight=w))
                else:
                    terms.append(self.student_weight * kl(logits[t], logits[s], targets, tau=self.learn_tau))
            terms += [self.student_weight * kl(logits[u], logits[s], targets, tau=self.learn_tau)
                      for u in self.students if u != s]
            losses[s] = self._total(logits[s], targets, terms)
        for t in self.teachers:
            learning = self.learning_students(t, expert)
            if learning:
                peers = learning + [u for u in self.teachers if u != t]
                losses[t] = self._total(logits[t], targets, [
                    self.teacher_weight * kl(logits[u], logits[t], targets, tau=self.learn_tau) for u in peers])
        return self.output(losses, stats, expert)
