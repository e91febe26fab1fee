"""The methods grid's tables (benchmarks/results/methods/), read from each experiment's results.json.

  python benchmarks/methods_summary.py                 # every experiment found, to stdout
  python benchmarks/methods_summary.py --root DIR      # another folder of experiments (e.g. runs/methods)
  python benchmarks/methods_summary.py --status        # how far the grid is: the finished runs per experiment
  python benchmarks/methods_summary.py --readme        # the README's tables (students by method, which to use)
  python benchmarks/methods_summary.py --against benchmarks/results/methods-2026-12-02-565f5ba   # before / now

Per experiment, one row per method: the student's and the teacher's accuracy at the last and at the best
epoch (mean ± sample std over seeds), the student's difference from DML's and from KD's and the teacher's
from DML's, paired by seed (mean ± std of the per-seed differences), the expert share and the teacher compute saved. Then "Which method
should I use?": per experiment, the best student by last-epoch accuracy, its margins, spread and teacher,
and the compute SwitOKD and UniOKD saved. A method with fewer seeds than the others is marked with its count.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from switokd.runs.analysis import BACKWARD_SHARE
from switokd.runs.stats import fmt, group_by, mean_std

SETTINGS = {  # experiment -> what it is (benchmarks/methods.sh has the commands)
    "clean": "clean labels, 1,000 images, 30 epochs",
    "sym40-noaug": "40% symmetric noise, no augmentation, 1,000 images, 40 epochs (the main job's config)",
    "few50": "50 labels per class (500 images), 40 epochs",
    "pairs100": "100 classes (image pairs), 2,000 images, ResNet-20 → WRN-16-1, multistep lr 0.1, 20 epochs",
    "offline10k": "offline, clean labels, 10,000 images, 15 epochs, teachers trained alone",
}
OFFLINE = ("kd", "kd+ls", "dkd", "dkd+ls", "dist")
# benchmarks/methods.sh: methods x 3 seeds (the teachers trained alone for offline10k are not in results.json)
RUNS = {"clean": 36, "sym40-noaug": 21, "few50": 21, "pairs100": 36, "offline10k": 12}


def chosen_on_val(reports) -> bool:
    return bool(reports) and all(r.get("best_chosen_on") == "val" for r in reports)


def acc(runs, role: str, which: str) -> list[float]:
    """Per run, the mean over its networks of ``role`` of ``which`` (one student: that student's)."""
    out = []
    for r in runs:
        vals = [v.get(which) for v in r["networks"].values() if v["role"] == role]
        out.append(None if any(x is None for x in vals) else sum(vals) / len(vals))
    return out


def paired(ours, theirs, which: str = "last_acc", role: str = "student") -> list[float]:
    """Per seed, ``role``'s accuracy in ``ours`` minus in ``theirs`` (the seeds both have)."""
    by_seed = {r["seed"]: acc([r], role, which)[0] for r in theirs}
    return [acc([r], role, which)[0] - by_seed[r["seed"]] for r in ours if r["seed"] in by_seed]


def saved(runs) -> list[float]:
    """The share of the teachers' training compute a paused teacher saved (backward and step: ~2/3 of a step)."""
    return [BACKWARD_SHARE * (sum(r.get("paused_share", {}).values()) / max(len(r.get("paused_share", {})), 1))
            for r in runs]


def cell(values: list[float], digits: int = 2, scale: float = 1.0, sign: bool = False, unit: str = "") -> str:
    return fmt(values, digits, scale, sign, unit) if values else ""


def pct(values: list[float]) -> str:
    """A share as a percentage cell: ``27.0 ± 1.2%``, or ``27.0% (n=1)`` for one run."""
    return cell(values, 1, 100.0, unit="%")


def experiment_table(by: dict[str, list[dict]]) -> list[str]:
    seeds = max(len(v) for v in by.values())
    best = "best (val-chosen)" if chosen_on_val([r for v in by.values() for r in v]) else "best (test maximum)"
    out = [f"| method | seeds | student last | student {best} | student val (last) | teacher last | teacher {best} | "
           "− DML (paired) | − KD (paired) | teacher − DML (paired) | expert share | teacher compute saved |",
           "|---|---:|" + "---:|" * 10]
    for m, runs in by.items():
        mark = f"{len(runs)}" + (" (of %d)" % seeds if len(runs) < seeds else "")
        dml = cell(paired(runs, by["dml"]), sign=True) if "dml" in by and m != "dml" else ""
        kd = cell(paired(runs, by["kd"]), sign=True) if "kd" in by and m != "kd" else ""
        teacher_role = "teacher"
        frozen = m in OFFLINE
        tl = "" if frozen else cell(acc(runs, teacher_role, "last_acc"))
        tb = "" if frozen else cell(acc(runs, teacher_role, "best_acc"))
        tdml = cell(paired(runs, by["dml"], role="teacher"), sign=True) if "dml" in by and m != "dml" and not frozen else ""
        expert = [sum(r.get("expert_share", {}).values()) / max(len(r.get("expert_share", {})), 1) for r in runs]
        has_switch = any(r.get("expert_share") for r in runs)
        val = [v for v in acc(runs, "student", "last_val_acc") if v is not None] if chosen_on_val(runs) else []
        out.append(f"| {m} | {mark} | {cell(acc(runs, 'student', 'last_acc'))} | {cell(acc(runs, 'student', 'best_acc'))} "
                   f"| {cell(val)} | {tl or '(frozen)'} | {tb or '(frozen)'} | {dml} | {kd} | {tdml} | "
                   f"{pct(expert) if has_switch else ''} | {pct(saved(runs)) if has_switch else ''} |")
    return out


def which_method(grids: dict[str, dict[str, list[dict]]], alone: dict[str, list[dict]] | None = None) -> list[str]:
    out = ["| condition | best student (last epoch, test) | its accuracy | − DML (paired) | − KD (paired) | its teacher | "
           "best on validation | SwitOKD saved | UniOKD saved |", "|---|---|---:|---:|---:|---:|---|---:|---:|"]
    for exp, by in grids.items():
        best = max(by, key=lambda m: mean_std(acc(by[m], "student", "last_acc"))[0])
        on_val = (max(by, key=lambda m: mean_std([v for v in acc(by[m], "student", "last_val_acc") if v is not None]
                                                 or [0.0])[0]) if chosen_on_val([r for v in by.values() for r in v]) else "—")
        runs = by[best]
        seeds = max(len(v) for v in by.values())
        label = best + (f" ({len(runs)} of {seeds} seeds)" if len(runs) < seeds else "")
        if best not in OFFLINE:
            teacher = cell(acc(runs, "teacher", "last_acc"))
        else:  # the frozen teacher is the vanilla run's own
            teachers = by["vanilla"] if "vanilla" in by else (alone or {}).get(exp, [])
            teacher = f"{cell(acc(teachers, 'teacher', 'last_acc'))} (frozen)" if teachers else "(frozen)"
        dml = cell(paired(runs, by["dml"]), sign=True) if "dml" in by and best != "dml" else "—"
        kd = cell(paired(runs, by["kd"]), sign=True) if "kd" in by and best != "kd" else "—"
        sw = pct(saved(by["switokd"])) if "switokd" in by else ""
        uni = pct(saved(by["uniokd"])) if "uniokd" in by else ""
        out.append(f"| {exp} | {label} | {cell(acc(runs, 'student', 'last_acc'))} | {dml} | {kd} | {teacher} | {on_val} | "
                   f"{sw} | {uni} |")
    return out


def method_matrix(grids: dict[str, dict[str, list[dict]]]) -> list[str]:
    """The README's method table: one row per method, the student's last-epoch accuracy per condition."""
    methods = list(dict.fromkeys(m for by in grids.values() for m in by))
    out = ["| method | " + " | ".join(grids) + " |", "|---|" + "---:|" * len(grids)]
    for m in methods:
        out.append(f"| {m} | " + " | ".join(cell(acc(by[m], "student", "last_acc")) if m in by else "—"
                                            for by in grids.values()) + " |")
    return out


def side_by_side(old: dict[str, dict[str, list[dict]]], new: dict[str, dict[str, list[dict]]]) -> list[str]:
    """Each method's student (last epoch, test) in an earlier grid and in this one, condition by condition."""
    exps = [e for e in new if e in old]
    methods = list(dict.fromkeys(m for g in (new, old) for e in exps for m in g[e]))
    out = ["| method | " + " | ".join(f"{e}: before | {e}: now" for e in exps) + " |",
           "|---|" + "---:|---:|" * len(exps)]
    for m in methods:
        cells = []
        for e in exps:
            cells += [cell(acc(g[e][m], "student", "last_acc")) if m in g[e] else "—" for g in (old, new)]
        out.append(f"| {m} | " + " | ".join(cells) + " |")
    return out


def load(root: Path) -> dict[str, list[dict]]:
    return {exp: json.loads((root / exp / "results.json").read_text()) for exp in SETTINGS
            if (root / exp / "results.json").is_file()}


def alone_teachers(root: Path, exp: str) -> list[dict]:
    """The reports of the teachers an experiment trained alone for its offline methods (offline10k), by seed."""
    runs = sorted((root / exp / "runs").glob("teacher-alone-seed*/report.json"))
    return [{**json.loads(p.read_text()), "seed": int(p.parent.name.rsplit("seed", 1)[1])} for p in runs]


def status(reports: dict[str, list[dict]]) -> list[str]:
    """The finished runs of each experiment (its results.json), by seed, against the grid's total."""
    out = ["| experiment | finished runs | of |", "|---|---|---:|"]
    for exp, total in RUNS.items():
        by_seed = group_by(reports.get(exp, []), lambda r: r["seed"])
        done = "; ".join(f"seed {seed}: {', '.join(r['method'] for r in runs)}" for seed, runs in sorted(by_seed.items()))
        count = sum(len(v) for v in by_seed.values())
        out.append(f"| {exp} | {count}{' (' + done + ')' if done else ''} | {total} |")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=str(Path(__file__).parent / "results" / "methods"))
    p.add_argument("--status", action="store_true", help="the finished runs per experiment, not the tables")
    p.add_argument("--readme", action="store_true", help="the README's two tables: students by method and condition, "
                   "and which method to use")
    p.add_argument("--against", metavar="OLD_ROOT", help="an earlier grid's folder: each method's student there and "
                   "here, side by side")
    args = p.parse_args(argv)
    root = Path(args.root)
    reports = load(root)
    if args.status:
        print("\n".join(status(reports)))
        return 0
    grids = {exp: group_by(runs, lambda r: r["method"]) for exp, runs in reports.items()}
    if not grids:
        print(f"methods_summary: no results.json under {root}", file=sys.stderr)
        return 2
    if args.against:
        old = {exp: group_by(runs, lambda r: r["method"]) for exp, runs in load(Path(args.against)).items()}
        print("\n".join(side_by_side(old, grids)))
        return 0
    alone = {exp: alone_teachers(root, exp) for exp in grids}
    if args.readme:
        print("\n".join(method_matrix(grids)) + "\n")
        print("\n".join(which_method(grids, alone)))
        return 0
    for exp, by in grids.items():
        print(f"### {exp}: {SETTINGS[exp]}\n")
        print("\n".join(experiment_table(by)) + "\n")
        if alone[exp]:
            print(f"Teachers trained alone, frozen for every method ({len(alone[exp])} seeds): last epoch "
                  f"{cell(acc(alone[exp], 'teacher', 'last_acc'))}, validation-chosen epoch "
                  f"{cell(acc(alone[exp], 'teacher', 'best_acc'))}.\n")
    print("### Which method should I use?\n")
    print("\n".join(which_method(grids, alone)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
