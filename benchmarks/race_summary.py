"""The race beside the full grid (issue 30): compute spent, and whether the race found the grid's winner.

    python benchmarks/race_summary.py [--grid benchmarks/results/methods] [--race benchmarks/results/race]
    python benchmarks/race_summary.py --suffix=-x2      # the longer race (LONG=2) against the base grid
    python benchmarks/race_summary.py --prefix=branches-  # the branch methods' race against their grid (issue 41)

For each condition with both a grid (``benchmarks/methods.sh``) and a race (``benchmarks/race.sh``) on the same
machine: the runs or trials, the training images seen, the run time summed over runs (training and evaluation)
and the elapsed time; then the grid's best student (the method with the highest mean last-epoch test accuracy
of its students over the seeds), the method the validation split favours in the grid (what a race could at
best pick), the race's winner (chosen on validation), and how far the race's pick trails the grid's best,
paired by seed on the grid's own runs (both methods ran every seed there). With ``--suffix`` it reads the longer
races (``LONG=k bash benchmarks/race.sh``: no grid ran at that size) and sets each winner's students beside the
base grid's best. Where the longer race ran on another CPU than the base race, its run time is scaled to the
base machine by the median ratio of the two races' training seconds for the same trial and epoch (the same
computation: a trial's epochs are the same work at either length). It reads files only.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from switokd.runs.files import read_jsonl
from switokd.runs.stats import fmt, group_by, mean_std

CONDITIONS = ("clean", "sym40-noaug", "few50", "pairs100")


def students(report: dict, key: str = "last_acc") -> float | None:
    vals = [v.get(key) for v in report["networks"].values() if v["role"] == "student"]
    return None if not vals or any(v is None for v in vals) else sum(vals) / len(vals)


def run_compute(run_dir: Path) -> tuple[float, float, int]:
    """(images, run seconds, epochs) from a run's epochs.jsonl."""
    f = run_dir / "epochs.jsonl"
    if not f.is_file():
        return 0.0, 0.0, 0
    rows = read_jsonl(f)
    images = sum(e.get("images", e.get("images_per_s", 0.0) * e.get("train_time_s", 0.0)) for e in rows)
    return images, sum(e.get("epoch_time_s", e.get("train_time_s", 0.0)) for e in rows), len(rows)


def grid_side(root: Path) -> dict | None:
    if not (root / "results.json").is_file():
        return None
    reports = json.loads((root / "results.json").read_text())
    runs = [p for p in (root / "runs").iterdir() if p.is_dir()] if (root / "runs").is_dir() else []
    images = seconds = 0.0
    for r in runs:  # every run of the experiment, the teachers trained alone included
        i, s, _ = run_compute(r)
        images, seconds = images + i, seconds + s
    by = group_by(reports, lambda r: r["method"])
    test = {m: {r["seed"]: students(r) for r in rs} for m, rs in by.items()}
    val = {m: [students(r, "last_val_acc") for r in rs] for m, rs in by.items()}
    best = max(test, key=lambda m: mean_std(list(test[m].values()))[0])
    best_val = max(val, key=lambda m: mean_std([v for v in val[m] if v is not None] or [0.0])[0])
    return {"runs": len(runs), "images": images, "seconds": seconds, "test": test, "best": best, "best_val": best_val}


def race_side(root: Path) -> dict | None:
    if not (root / "race.json").is_file():
        return None
    data = json.loads((root / "race.json").read_text())
    elapsed = [json.loads(p.read_text())["seconds"] for p in root.glob("elapsed-*.json")]
    return {"trials": len(data["trials"]), "images": data["totals"]["images"], "seconds": data["totals"]["wall_time_s"],
            "elapsed": sum(elapsed) if elapsed else None, "winner": (data["winner"] or {}).get("arm"),
            "done": data["done"], "decisions": data["decisions"],
            "test": {a: {t["seed"]: t["test"] for t in data["trials"] if t["arm"] == a and t["state"] == "complete"
                         and t["kind"] == "arm"} for a in {t["arm"] for t in data["trials"]}}}


def paired(a: dict[int, float], b: dict[int, float]) -> str:
    diffs = [a[s] - b[s] for s in a if s in b and a[s] is not None and b[s] is not None]
    return fmt(diffs, sign=True) if diffs else "—"


def sides(grid_root: Path, race_root: Path, suffix: str = "", prefix: str = ""):
    """(condition, grid, race, the race's compute cell, its run time over the grid's) where both ran."""
    for c in CONDITIONS:
        g, r = grid_side(grid_root / (prefix + c)), race_side(race_root / (prefix + c + suffix))
        if g is not None and r is not None:
            elapsed = f", {r['elapsed'] / 3600:.2f} h elapsed" if r["elapsed"] else ""
            compute = f"{r['trials']}, {r['images'] / 1e6:.2f} M, {r['seconds'] / 3600:.2f} h{elapsed}"
            yield c, g, r, compute, (r["seconds"] / g["seconds"] if g["seconds"] else float("nan"))


def table(grid_root: Path, race_root: Path, suffix: str = "", prefix: str = "") -> list[str]:
    out = ["| condition | grid: runs, images, run time | race: trials, images, run time, elapsed | race / grid (run time) "
           "| grid's best (test) | best on validation in the grid | race's winner | race's pick − grid's best (paired, test) |",
           "|---|---|---|---:|---|---|---|---:|"]
    for c, g, r, compute, share in sides(grid_root, race_root, suffix, prefix):
        pick = r["winner"]
        trail = "0 (the same)" if pick == g["best"] else (paired(g["test"][pick], g["test"][g["best"]]) if pick in g["test"] else "—")
        out.append(f"| {c} | {g['runs']}, {g['images'] / 1e6:.2f} M, {g['seconds'] / 3600:.2f} h | {compute} | {share:.2f} "
                   f"| {g['best']} | {g['best_val']} | {pick}{'' if r['done'] else ' (unfinished)'} | {trail} |")
    return out


def speed_factor(base: Path, longer: Path) -> float | None:
    """How many times the longer race's CPU trained faster than the base race's: the median, over every trial
    and epoch both ran, of the base race's training seconds over the longer race's (None where none matches)."""
    ratios = []
    for run in sorted((longer / "runs").glob("*/epochs.jsonl")):
        mine = base / "runs" / run.parent.name / "epochs.jsonl"
        if mine.is_file():
            theirs = {e["epoch"]: e.get("train_time_s") for e in read_jsonl(mine)}
            ratios += [theirs[e["epoch"]] / e["train_time_s"] for e in read_jsonl(run)
                       if theirs.get(e["epoch"]) and e.get("train_time_s")]
    return statistics.median(ratios) if ratios else None


def longer_table(grid_root: Path, race_root: Path, suffix: str) -> list[str]:
    """A longer race (``LONG=k``, folder ``<condition><suffix>``) against the grid at the base size: no grid ran
    at the longer size, so this says what the race found there for its compute, and how its winner's students
    compare with the base grid's best (paired by seed: the same data, split and initial weights). Its run time
    over the grid's is taken at the base machine's speed (``speed_factor``; ×1.00 where it could not be measured)."""
    out = [f"| condition | race{suffix}: trials, images, run time, elapsed | its run time / the base grid's "
           "(at the grid machine's speed: × its training speed there) | race's winner "
           "(test, its seeds) | base grid's best (test) | winner − base grid's best (paired, test) |",
           "|---|---|---:|---|---|---:|"]
    for c, g, r, compute, share in sides(grid_root, race_root, suffix):
        pick = r["winner"]
        won = r["test"].get(pick, {}) if pick else {}
        f = speed_factor(race_root / c, race_root / (c + suffix)) or 1.0
        out.append(f"| {c} | {compute} | {share * f:.2f} (×{f:.2f}) | {pick}{'' if r['done'] else ' (unfinished)'}: "
                   f"{fmt(list(won.values()))} | {g['best']}: {fmt(list(g['test'][g['best']].values()))} | "
                   f"{paired(won, g['test'][g['best']])} |")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = Path(__file__).parent / "results"
    p.add_argument("--grid", default=str(here / "methods"))
    p.add_argument("--race", default=str(here / "race"))
    p.add_argument("--suffix", default="", help="the race's folder suffix (e.g. -x2 for LONG=2)")
    p.add_argument("--prefix", default="", help="the experiments' prefix (branches- for issue 41's grid and race)")
    args = p.parse_args(argv)
    if args.prefix and args.suffix:
        p.error("--prefix reads races at the grid's length; it does not combine with --suffix")
    rows = (longer_table(Path(args.grid), Path(args.race), args.suffix) if args.suffix
            else table(Path(args.grid), Path(args.race), prefix=args.prefix))
    if len(rows) == 2:
        print("race_summary: no condition has both a grid and a race", file=sys.stderr)
        return 2
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
