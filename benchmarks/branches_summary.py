"""The branch methods' grid (issue 41; benchmarks/methods.sh branches-<condition>), read from each
experiment's results.json: per condition, each method's student (for a branch method, its deployed branch: the
same WRN-16-1) at the last epoch, the branches' ensemble (a branch method's), its difference from DML's and from vanilla's paired by seed, and its training
cost (training images per second and run time, mean over seeds).

  python benchmarks/branches_summary.py                    # benchmarks/results/methods/branches-*
  python benchmarks/branches_summary.py --root runs/methods # a grid still running (its results.json so far)
  python benchmarks/branches_summary.py --readme            # one row per method, one column per condition

Run times are wall-clock with two runs side by side on 2 cores (one thread each), so they compare runs of one
grid with each other, not with another machine.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from methods_summary import acc, cell, paired
from switokd.runs.stats import group_by, mean_std

CONDITIONS = ("clean", "sym40-noaug", "few50", "pairs100")


def load(root: Path) -> dict[str, dict[str, list[dict]]]:
    out = {}
    for cond in CONDITIONS:
        path = root / f"branches-{cond}" / "results.json"
        if path.is_file():
            out[cond] = group_by(json.loads(path.read_text()), lambda r: r["method"])
    return out


def condition_table(by: dict[str, list[dict]]) -> list[str]:
    out = ["| method | seeds | student last (%) | its ensemble (%) | − DML (paired) | − vanilla (paired) | training img/s "
           "| run time (s) | run time / DML's |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    dml_time = mean_std([r["wall_time_s"] for r in by.get("dml", [])])[0] if "dml" in by else None
    for m, runs in by.items():
        dml = cell(paired(runs, by["dml"]), sign=True) if "dml" in by and m != "dml" else ""
        van = cell(paired(runs, by["vanilla"]), sign=True) if "vanilla" in by and m != "vanilla" else ""
        wall = [r["wall_time_s"] for r in runs]
        ratio = f"{mean_std(wall)[0] / dml_time:.2f}" if dml_time else ""
        ens = [r["networks"]["student"].get("last_parts", {}).get("ensemble") for r in runs]
        out.append(f"| {m} | {len(runs)} | {cell(acc(runs, 'student', 'last_acc'))} | "
                   f"{cell([e for e in ens if e is not None])} | {dml} | {van} | "
                   f"{cell([r['images_per_s'] for r in runs], 0)} | {cell(wall, 0)} | {ratio} |")
    return out


def matrix(grids: dict[str, dict[str, list[dict]]]) -> list[str]:
    methods = list(dict.fromkeys(m for by in grids.values() for m in by))
    out = ["| method | " + " | ".join(grids) + " | run time / DML's |", "|---|" + "---:|" * (len(grids) + 1)]
    for m in methods:
        cells = [cell(acc(by[m], "student", "last_acc")) if m in by else "—" for by in grids.values()]
        ratios = [mean_std([r["wall_time_s"] for r in by[m]])[0] / mean_std([r["wall_time_s"] for r in by["dml"]])[0]
                  for by in grids.values() if m in by and "dml" in by]
        cost = f"{min(ratios):.2f}-{max(ratios):.2f}" if ratios else ""
        out.append(f"| {m} | " + " | ".join(cells) + f" | {cost} |")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=str(Path(__file__).parent / "results" / "methods"))
    p.add_argument("--readme", action="store_true", help="one row per method, one column per condition")
    args = p.parse_args(argv)
    grids = load(Path(args.root))
    if not grids:
        print(f"branches_summary: no branches-*/results.json under {args.root}", file=sys.stderr)
        return 2
    if args.readme:
        print("\n".join(matrix(grids)))
        return 0
    for cond, by in grids.items():
        print(f"### {cond}\n\n" + "\n".join(condition_table(by)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
