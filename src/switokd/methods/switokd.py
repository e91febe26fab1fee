"""SwitOKD (Qian et al., ECCV 2022): a per-step switch between learning and expert mode."""
from __future__ import annotations

from itertools import product
from typing import Mapping

import torch
from torch import Tensor

from ..switching import pair_sums, stats_from_sums
from .base import METHODS, Method, StepOutput, distill_loss


FORCE_MODES = (None, "learning", "expert")


def pair_name(teacher: str, student: str) -> str:
    return f"{teacher}->{student}"


def _check_force(force: str | None) -> str | None:
    if force not in FORCE_MODES:
        raise ValueError(f"switokd force_mode must be 'learning', 'expert' or unset, got {force!r}")
    return force


class SwitOKDPair(Method):
    """The two-network method exactly as in docs/method.md, one teacher and one student.

    LEARNING: both learn CE + KL(p_other^tau || p_self^tau) and both step.
    EXPERT (G > delta and d_T < d_S): only the student learns; the teacher takes
    no backward pass and no step.
    """

    name = "switokd"

    def __init__(self, roles, force_mode: str | None = None, **kw) -> None:
        super().__init__(roles, **kw)
        self.force_mode = _check_force(force_mode)
        if len(self.teachers) != 1 or len(self.students) != 1:
            raise ValueError("SwitOKDPair needs exactly one teacher and one student; use SwitOKD for cohorts")
        self.teacher, self.student = self.teachers[0], self.students[0]
        self.pair = pair_name(self.teacher, self.student)

    @property
    def pausable(self) -> frozenset[str]:
        return frozenset(self.teachers)

    def step(self, logits: Mapping[str, Tensor], targets: Tensor) -> StepOutput:
        z_t, z_s = logits[self.teacher], logits[self.student]
        stats = stats_from_sums(self.reduce(pair_sums(z_t, z_s, targets, self.weights.tau)))
        # The step's one host synchronisation; a held mode pays it too, so that it costs what a real step costs.
        expert = bool(stats.expert)
        if self.force_mode is not None:
            expert = self.force_mode == "expert"
        losses = {self.student: distill_loss(z_s, targets, [z_t], self.weights)}
        if not expert:
            losses[self.teacher] = distill_loss(z_t, targets, [z_s], self.weights)
        stepping = tuple(n for n in self.names if n in losses)
        return StepOutput(losses, stepping, {self.pair: stats}, {self.pair: expert})


class SwitOKDCohort(Method):
    """SwitOKD for any mix of teachers and students (docs/method.md, "More than two networks").

    Every (teacher, student) pair is a switch decided by ``switch_stats``. A
    student learns from every other network. A teacher is paused when all its
    pairs are in expert mode; otherwise it learns from the students whose pair is
    in learning mode and from the other teachers.
    """

    name = "switokd"

    def __init__(self, roles, force_mode: str | None = None, **kw) -> None:
        super().__init__(roles, **kw)
        self.force_mode = _check_force(force_mode)
        if not self.teachers or not self.students:
            raise ValueError("method 'switokd' needs at least one teacher and one student")
        self.pairs = list(product(self.teachers, self.students))

    @property
    def pausable(self) -> frozenset[str]:
        return frozenset(self.teachers)

    def step(self, logits: Mapping[str, Tensor], targets: Tensor) -> StepOutput:
        tau = self.weights.tau
        # One reduction across processes and one host synchronisation for all pairs.
        sums = self.reduce(torch.stack([pair_sums(logits[t], logits[s], targets, tau) for t, s in self.pairs]))
        stats = {pair_name(t, s): stats_from_sums(row) for (t, s), row in zip(self.pairs, sums)}
        flags = torch.stack([st.expert for st in stats.values()]).tolist()
        if self.force_mode is not None:
            flags = [self.force_mode == "expert"] * len(stats)
        expert = dict(zip(stats, flags))
        losses = {}
        for s in self.students:
            losses[s] = distill_loss(logits[s], targets, [logits[u] for u in self.names if u != s], self.weights)
        for t in self.teachers:
            learning = [s for s in self.students if not expert[pair_name(t, s)]]
            if not learning:
                continue  # every switch of this teacher is in expert mode: paused
            soft = [logits[s] for s in learning] + [logits[u] for u in self.teachers if u != t]
            losses[t] = distill_loss(logits[t], targets, soft, self.weights)
        # Keep the cohort's network order so that summing the losses is order-stable.
        stepping = tuple(n for n in self.names if n in losses)
        return StepOutput(losses, stepping, stats, expert)


@METHODS.register("switokd")
def switokd(roles, **kw) -> Method:
    """SwitOKD: pauses a teacher while its distillation gap to a student is too large.

    One teacher and one student use the pair form; any other mix the cohort form.
    """
    kinds = list(roles.values())
    if kinds.count("teacher") == 1 and kinds.count("student") == 1:
        return SwitOKDPair(roles, **kw)
    return SwitOKDCohort(roles, **kw)
