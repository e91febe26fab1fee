"""Synchronous successive halving over arms, as pure functions of what the trials have reported.

An *arm* is one method entry (``dml``, ``kd+ls``, or a method with sampled hyperparameters); its *trials* are
its seeds. The race trains every arm's trials to the first rung's epoch, ranks the arms by the mean over their
seeds of the students' validation accuracy there (pooled seeds: a lucky seed cannot carry an arm), keeps the
top 1/eta of them (at least one) and stops the rest; the kept arms' trials continue from their checkpoints to
the next rung, and so on to the last epoch.

Synchronous, not asynchronous (ASHA, Optuna's pruners): a race has a handful of arms known up front, and an
asynchronous rule promotes whichever arm reports first while the others are still training (with one report
at a rung, that one is in its top 1/eta), which for a fixed set of a few methods decides on less than it
could. Waiting for the rung costs idle workers only when arms are fewer than workers.

Everything here is deterministic and free of I/O, so any worker of a race reaches the same decisions from
the same reports, and a race run again resumes where it stopped.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence


def rung_epochs(epochs: int, eta: float = 3.0, min_epochs: int | None = None,
                rungs: Sequence[int] | None = None) -> list[int]:
    """The epochs at which the race decides, increasing and ending at ``epochs``.

    Args:
        epochs: the runs' length (``train.epochs``).
        eta: the reduction factor: each rung keeps 1/eta of the arms, and rungs are eta times apart.
        min_epochs: the first rung (default: epochs / eta^2, rounded, at least 1).
        rungs: explicit rung epochs instead (``epochs`` is appended if missing).

    Example:
        >>> rung_epochs(30), rung_epochs(20), rung_epochs(40, eta=2, min_epochs=5), rung_epochs(30, rungs=[5, 15])
        ([3, 10, 30], [2, 7, 20], [5, 10, 20, 40], [5, 15, 30])
    """
    if epochs < 1:
        raise ValueError(f"race: epochs must be >= 1, got {epochs}")
    if rungs:
        out = sorted(set(int(r) for r in rungs) | {epochs})
        if out[0] < 1 or out[-1] > epochs:
            raise ValueError(f"race: rungs must be epochs in 1..{epochs}, got {list(rungs)}")
        return out
    if eta <= 1:
        return [epochs]
    first = max(1, round(epochs / eta ** 2)) if min_epochs is None else int(min_epochs)
    if not 1 <= first <= epochs:
        raise ValueError(f"race: min_epochs must be in 1..{epochs}, got {min_epochs}")
    out = [epochs]
    while True:
        e = round(out[0] / eta)
        if e < first or e >= out[0]:
            break
        out.insert(0, e)
    if out[0] != first and first < out[0]:
        out.insert(0, first)
    return out


def _deciding_before(rungs: Sequence[int], epoch: float) -> str:
    """The deciding rungs (all but the last) before ``epoch``, as "4, 13" ("" if none)."""
    return ", ".join(str(r) for r in list(rungs)[:-1] if r < epoch)


def rungs_before_decay(rungs: Sequence[int], milestones: Mapping[str, Sequence[int]]) -> str | None:
    """A warning when a deciding rung falls before a network's first learning-rate step, else None.

    Methods ranked at the first learning rate need not keep that order after the step: at twice the grid's
    epochs on pairs100 a rung at epoch 13, before the step at 18, stopped DIST, which trained on was the best
    (``benchmarks/results/race/README.md``).

    Args:
        rungs: the rung epochs (the last, which decides nothing, is ignored).
        milestones: each network's step-schedule milestones, by name (networks without steps left out).

    Example:
        >>> rungs_before_decay([4, 13, 40], {"student": [18, 26, 34]}) is not None
        True
        >>> rungs_before_decay([20, 30, 40], {"student": [18, 26, 34]}) is None
        True
    """
    last = rungs[-1] if rungs else 0
    steps = {n: min(m) for n, m in milestones.items() if m and 0 < min(m) < last}  # steps within the run
    if not steps:
        return None
    first = min(steps.values())
    early = _deciding_before(rungs, first)
    if not early:
        return None
    return (f"race: rung(s) at epoch {early} fall before the first learning-rate step "
            f"(epoch {first}, {', '.join(sorted(n for n, e in steps.items() if e == first))}); an order at the first "
            f"learning rate may not last after it: consider --rungs after epoch {first}")


def rungs_before_memorising(rungs: Sequence[int], label_noise: float) -> str | None:
    """A warning when the training labels are noisy and a deciding rung falls before half the run, else None.

    With noisy labels the methods that resist memorising them lead only once the others start to: on
    sym40-noaug (40 epochs) from about epoch 17, and PCL, the grid's best by 8.5 points, was stopped at the
    rung of epoch 4 while the race picked DML. Read from the grid's own curves, a rung at epoch 20 would have
    kept it (``benchmarks/results/race/README.md``).

    Example:
        >>> rungs_before_memorising([4, 13, 40], 0.4) is not None
        True
        >>> rungs_before_memorising([20, 30, 40], 0.4) is None and rungs_before_memorising([4, 13, 40], 0.0) is None
        True
    """
    if label_noise <= 0 or len(rungs) < 2:
        return None
    half = rungs[-1] / 2
    early = _deciding_before(rungs, half)
    if not early:
        return None
    return (f"race: {label_noise:.0%} of the training labels are noisy and rung(s) at epoch "
            f"{early} fall before half the run: the methods that resist memorising the noise "
            f"lead only once the others memorise it; consider --rungs from epoch {math.ceil(half)}")


def keep_count(n: int, eta: float) -> int:
    """How many of ``n`` arms a rung keeps: ceil(n / eta), at least 1."""
    return max(1, math.ceil(n / eta)) if eta > 1 else n


def promote(scores: Mapping[str, float], eta: float, order: Sequence[str]) -> list[str]:
    """The arms a rung keeps: the top ``keep_count`` by score, ties to the earlier arm in ``order``."""
    ranked = sorted(scores, key=lambda a: (-scores[a], list(order).index(a)))
    return ranked[:keep_count(len(scores), eta)]


@dataclass
class TrialView:
    """What the schedule needs of one trial.

    ``kind`` is "arm" (ranked), or "teacher" (a teacher trained alone for offline arms, never ranked).
    ``stops`` are the epochs its segments end at: every rung for an arm, the last epoch alone for a teacher
    and for a *protected* arm (vanilla, when offline arms learn from its teachers: it must finish). ``reported``
    maps an evaluated epoch to the students' mean validation accuracy. ``needs`` is the trial whose run must
    finish first (an offline arm's teacher).
    """

    number: int
    arm: str
    seed: int
    kind: str = "arm"
    stops: list[int] = field(default_factory=list)
    reported: dict[int, float] = field(default_factory=dict)
    finished: bool = False  # complete or pruned
    needs: int | None = None


@dataclass
class Decision:
    rung: int  # the rung's epoch
    scores: dict[str, float]  # arm -> mean over seeds of the students' validation accuracy there
    kept: list[str]
    stopped: list[str]


@dataclass
class Schedule:
    """Where a race stands: the rungs decided so far, the trials to stop, and each trial's next segment."""

    decisions: list[Decision]
    pruned: dict[int, int]  # trial number -> the rung epoch it stopped at
    next_stop: dict[int, int]  # trial number -> the epoch its next segment trains to (runnable now)
    waiting: list[int]  # trials that wait for a rung's decision or for another trial
    done: bool  # every trial finished or stopped


def schedule(trials: Sequence[TrialView], rungs: Sequence[int], eta: float, protected: Sequence[str] = ()) -> Schedule:
    """Decide every rung whose reports are all in, and say what each trial does next.

    A rung is decided once every trial of every arm still racing has reported at its epoch. The last rung
    stops nobody: its arms are the finishers, ranked by the caller.
    """
    rungs = list(rungs)
    order = list(dict.fromkeys(t.arm for t in trials if t.kind == "arm"))
    by_arm: dict[str, list[TrialView]] = {}
    for t in trials:
        if t.kind == "arm":
            by_arm.setdefault(t.arm, []).append(t)
    alive = list(order)
    decisions: list[Decision] = []
    stopped_at: dict[str, int] = {}
    frontier = 0  # index of the first undecided rung
    for i, epoch in enumerate(rungs[:-1]):
        if not all(epoch in t.reported for a in alive for t in by_arm[a]):
            break
        scores = {a: sum(t.reported[epoch] for t in by_arm[a]) / len(by_arm[a]) for a in alive}
        kept = promote(scores, eta, order)
        kept += [a for a in alive if a in protected and a not in kept]
        kept = [a for a in order if a in kept]
        stopped = [a for a in alive if a not in kept]
        decisions.append(Decision(epoch, scores, kept, stopped))
        for a in stopped:
            stopped_at[a] = epoch
        alive = kept
        frontier = i + 1
    open_epoch = rungs[frontier]  # arms still racing may train up to here
    by_number = {t.number: t for t in trials}
    pruned: dict[int, int] = {}
    next_stop: dict[int, int] = {}
    waiting: list[int] = []
    for t in trials:
        if t.finished:
            continue
        if t.kind == "arm" and t.arm in stopped_at:
            pruned[t.number] = stopped_at[t.arm]
            continue
        if t.needs is not None and not by_number[t.needs].finished:
            waiting.append(t.number)
            continue
        reached = max(t.reported, default=0)
        todo = [s for s in t.stops if s > reached]
        if not todo:  # trained to its last stop: the caller finishes it
            next_stop[t.number] = t.stops[-1]
            continue
        limit = open_epoch if t.kind == "arm" and t.arm not in protected else rungs[-1]
        if todo[0] <= limit:
            next_stop[t.number] = todo[0]
        else:
            waiting.append(t.number)
    done = all(t.finished or t.number in pruned for t in trials)
    return Schedule(decisions, pruned, next_stop, waiting, done)


__all__ = ["rung_epochs", "rungs_before_decay", "rungs_before_memorising", "keep_count", "promote", "TrialView", "Decision", "Schedule", "schedule"]
