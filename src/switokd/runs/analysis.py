"""What a run's logs say, in figures and in words: when the switch fired, who was ahead, whether the student
shared the teacher's mistakes, how far training converged and how much the networks memorised noisy labels.

Pure functions over ``files.RunLogs`` (a run's ``epochs.jsonl``, ``steps.jsonl`` and ``report.json``); the
sweep's tables and the report's paragraphs are built from them, so both say the same thing.
"""
from __future__ import annotations

from typing import Callable, Sequence

from .files import RunLogs, pair_means
from .stats import fmt

# A teacher's backward pass costs about twice its forward pass, so a paused step (forward only, for the
# student's soft targets) saves about two thirds of that step's teacher compute.
BACKWARD_SHARE = 2.0 / 3.0


def curve(run: RunLogs, net: str) -> list[tuple[int, float]]:
    """(epoch, test accuracy) at every evaluated epoch."""
    return [(e["epoch"], e["test"][net]["acc"]) for e in run.epochs if net in e.get("test", {})]


def last_quarter_change(run: RunLogs, net: str) -> float | None:
    """Max minus min of the test accuracy over the evaluations in the last quarter of the epochs (the run's
    plateau test: below 0.5 point it has plateaued). None with fewer than two such evaluations."""
    pts = curve(run, net)
    if not pts:
        return None
    last = pts[-1][0]
    tail = [a for e, a in pts if e > 0.75 * last]
    return max(tail) - min(tail) if len(tail) >= 2 else None


def peak(run: RunLogs, net: str) -> tuple[float, int] | None:
    """The highest test accuracy and its epoch (optimistic: chosen on the test split)."""
    pts = curve(run, net)
    if not pts:
        return None
    e, a = max(pts, key=lambda p: (p[1], -p[0]))
    return a, e


def memorisation(run: RunLogs, net: str) -> list[tuple[int, float, float]]:
    """(epoch, share predicted as the noisy label, as the true label) on the noisy-labelled sample."""
    return [(e["epoch"], e["memorisation"][net]["noisy_label"], e["memorisation"][net]["true_label"])
            for e in run.epochs if net in e.get("memorisation", {})]


def expert_by_epoch(run: RunLogs, pair: str) -> list[tuple[int, float]]:
    return [(e["epoch"], e["switch"]["expert_share"][pair]) for e in run.epochs
            if pair in e.get("switch", {}).get("expert_share", {})]


def run_pairs(run: RunLogs) -> list[str]:
    """The run's teacher->student pairs (from its epochs, or its steps)."""
    pairs = {p for e in run.epochs for p in e.get("switch", {}).get("expert_share", {})}
    return sorted(pairs or set(run.pairs))


def _ranges(epochs: list[int]) -> str:
    out, start, prev = [], None, None
    for e in epochs + [None]:  # type: ignore[list-item]
        if start is not None and (e is None or e != prev + 1):
            out.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = None
        if e is not None and start is None:
            start = e
        prev = e
    return ", ".join(out)


def fired_when(run: RunLogs, pair: str) -> str:
    """When the switch was in expert mode: "never", or the epochs and the busiest one."""
    rows = [(e, s) for e, s in expert_by_epoch(run, pair) if s > 0]
    if not rows:
        return "never"
    top = max(rows, key=lambda r: r[1])
    if len(rows) == 1:
        return f"epoch {top[0]} ({top[1]:.1%} of its steps)"
    return f"epochs {_ranges([e for e, _ in rows])} (most in epoch {top[0]}: {top[1]:.1%} of its steps)"


def pair_stats(run: RunLogs, pair: str) -> dict[str, float]:
    """The pair's statistics averaged over the run (report.json's switch_stats, else the epochs' means)."""
    stats = run.report.get("switch_stats", {}).get(pair)
    return stats if stats else pair_means(run.epochs).get(pair, {})


def explain(run: RunLogs) -> list[str]:
    """A short plain-language account of the run's switch, for a reader who is not an ML specialist."""
    method = run.report.get("method", "its method")
    pairs = run_pairs(run)
    if not pairs:
        return [f"This run used {method}, which has no switch: every network learned on every step."]
    out = []
    paused = run.report.get("paused_share", {})
    noisy = {e["epoch"]: e["memorisation"] for e in run.epochs if "memorisation" in e}  # under label noise
    for pair in pairs:
        teacher, student = pair.split("->")
        who = "The teacher" if teacher == "teacher" else f"The teacher {teacher}"
        whom = "the student" if student == "student" else f"the student {student}"
        share = run.report.get("expert_share", {}).get(pair)
        if share is None:
            per = expert_by_epoch(run, pair)
            steps = [e.get("steps", 1) for e in run.epochs if pair in e.get("switch", {}).get("expert_share", {})]
            share = sum(s * n for (_, s), n in zip(per, steps)) / max(sum(steps), 1)
        st = pair_stats(run, pair)
        d_t, d_s = st.get("teacher_label_distance"), st.get("student_label_distance")
        rho, eps = st.get("shared_ratio"), st.get("epsilon")
        when = fired_when(run, pair)
        if share == 0:
            s1 = f"{who} was never paused for {whom}: the switch did not act on any step."
        else:
            saved = BACKWARD_SHARE * paused.get(teacher, share)
            s1 = (f"{who} was paused for {whom} on {share:.1%} of the training steps, in "
                  f"{when}. On those steps it only ran forward to give the student its predictions, skipping its "
                  f"own learning; that saved about {saved:.1%} of the teacher's training compute.")
        s2 = ""
        if d_t is not None and d_s is not None:
            lead = "teacher" if d_t < d_s else "student"
            labels = "training labels, some of them deliberately wrong here," if noisy else "correct labels"
            s2 = (f" On average the {lead} was closer to the {labels} (distance to the labels: teacher "
                  f"{d_t:.2f}, student {d_s:.2f}; lower is better).")
        first = next((ep for ep, v in expert_by_epoch(run, pair) if v > 0), None)
        if first in noisy and teacher in noisy[first]:
            fit = noisy[first][teacher]["noisy_label"]
            s2 += (f" The first pause came in epoch {first}; by the end of it the teacher predicted the wrong label "
                   f"for {fit:.0%} of the training images whose label had been changed.")
        s3 = ""
        if rho is not None and eps is not None:
            if rho >= eps:
                s3 = (f" On average the student made largely the same mistakes as the teacher: it shared {rho:.0%} "
                      f"of the probability the teacher put on wrong classes, more than the {eps:.0%} below which the "
                      "switch pauses a teacher that is ahead"
                      + (" (the pauses came where it dipped below)." if share else "."))
            else:
                s3 = (f" On average the student's mistakes differed from the teacher's: it shared only {rho:.0%} of "
                      f"the probability the teacher put on wrong classes, below the {eps:.0%} at which the switch "
                      "pauses a teacher that is ahead.")
        if share == 0:
            s4 = " So this run trained exactly as mutual learning (DML) would."
        elif share < 0.05:
            s4 = (" The pauses were rare, so this run trained almost as mutual learning (DML) would; its results "
                  "can differ from DML's only through those few steps.")
        else:
            s4 = (" During the pauses the student learned from a fixed teacher, as in offline distillation, and the "
                  "teacher resumed learning once the student had caught up.")
        out.append(s1 + s2 + s3 + s4)
    return out


# ----------------------------------------------------------------------------- a grid's tables


def _ms(values: Sequence[float | None], digits: int = 2, scale: float = 1.0, sign: bool = False) -> str:
    vals = [v for v in values if v is not None]
    text = fmt(vals, digits, scale) if vals else "–"
    return ("+" + text if vals and not text.startswith("-") else text) if sign else text


def paired_table(by_method: dict[str, list[RunLogs]], seed_of: Callable[[RunLogs], int],
                 reference: str = "switokd") -> str:
    """``reference`` minus each other method, student by student, paired by seed (the same seed gives the same
    initial weights and data order): the per-seed differences and their mean ± std ("" without that method)."""
    ours = {seed_of(r): r for r in by_method.get(reference, [])}
    if not ours:
        return ""
    any_run = next(iter(ours.values()))
    students = [n for n, i in any_run.report.get("networks", {}).items() if i.get("role") == "student"]
    rows = [f"| student | {reference} − | seeds | per seed (points) | mean ± std |", "|---|---|---:|---|---:|"]
    for net in students:
        for method, runs in by_method.items():
            if method == reference:
                continue
            diffs = []
            for r in runs:
                o = ours.get(seed_of(r))
                a = o and o.report["networks"].get(net, {}).get("last_acc")
                b = r.report.get("networks", {}).get(net, {}).get("last_acc")
                if a is not None and b is not None:
                    diffs.append(a - b)
            if diffs:
                rows.append(f"| {net} | {method} | {len(diffs)} | {', '.join(f'{d:+.2f}' for d in diffs)} | "
                            f"{_ms(diffs, sign=True)} |")
    return "\n".join(rows)


def switch_table(runs: Sequence[RunLogs]) -> str:
    """Every switching run's pairs: expert share, when it fired, and the run's mean ρ, ε, d_T and d_S."""
    rows = ["| run | pair | expert share | when it fired | mean ρ | mean ε | mean d_T | mean d_S |",
            "|---|---|---:|---|---:|---:|---:|---:|"]
    for run in runs:
        for pair in run_pairs(run):
            st = pair_stats(run, pair)
            share = run.report.get("expert_share", {}).get(pair)
            cells = [st.get(k) for k in ("shared_ratio", "epsilon", "teacher_label_distance", "student_label_distance")]
            rows.append(f"| {run.name} | {pair} | {'–' if share is None else f'{share:.2%}'} | {fired_when(run, pair)} | "
                        + " | ".join("–" if c is None else f"{c:.3f}" for c in cells) + " |")
    return "\n".join(rows) if len(rows) > 2 else ""


def curve_table(by_method: dict[str, list[RunLogs]]) -> str:
    """Per method and network, mean ± std over seeds: the peak test accuracy and the last, the drop from one to
    the other, the change over the last quarter of the epochs (plateau below 0.5 point) and, under label noise,
    the end's share of noisy-labelled training images predicted as their noisy and as their true label."""
    noisy = any("memorisation" in e for runs in by_method.values() for r in runs for e in r.epochs)
    drift = any("drift" in e for runs in by_method.values() for r in runs for e in r.epochs)
    head = "| method | network | peak acc (%) | peak epoch | last acc (%) | peak − last | last-quarter change |"
    if noisy:
        head += " noisy-label fit (%) | true-label fit (%) |"
    if drift:
        head += " last phase's classes (%) | other classes (%) |"
    rows = [head, "|---|---|" + "---:|" * (head.count("|") - 3)]
    for method, runs in by_method.items():
        for net in runs[0].networks:
            peaks = [peak(r, net) for r in runs]
            last = [curve(r, net)[-1][1] if curve(r, net) else None for r in runs]
            drop = [p[0] - a for p, a in zip(peaks, last) if p is not None and a is not None]
            cells = [_ms([p[0] for p in peaks if p]), _ms([p[1] for p in peaks if p], 0), _ms(last), _ms(drop),
                     _ms([last_quarter_change(r, net) for r in runs])]
            if noisy:
                ends = [memorisation(r, net)[-1] for r in runs if memorisation(r, net)]
                cells += [_ms([m[1] for m in ends], 1, 100.0), _ms([m[2] for m in ends], 1, 100.0)]
            if drift:
                ends_d = [next((e["drift"] for e in reversed(r.epochs) if "test_acc_group" in e.get("drift", {})),
                               None) for r in runs]
                cells += [_ms([d["test_acc_group"].get(net) for d in ends_d if d]),
                          _ms([d["test_acc_rest"].get(net) for d in ends_d if d])]
            rows.append(f"| {method} | {net} | " + " | ".join(cells) + " |")
    return "\n".join(rows)
