"""The summary tables of the seeded grids (README), read from their results.json files.

  python benchmarks/evidence_summary.py                      # the 2-epoch evidence grid (benchmarks/results/evidence)
  python benchmarks/evidence_summary.py --grid conditions    # the long-training grid (benchmarks/results/conditions)

One row per experiment and student: each method's last-epoch accuracy (mean ± sample std over seeds), SwitOKD's
expert share, SwitOKD minus DML paired by seed (mean ± std of the per-seed differences) and SwitOKD's verdict
against DML, KDCL and vanilla (a difference within one standard deviation is a tie, as in the sweeps' tables).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from switokd.runs.stats import mean_std, verdict
from switokd.sweep import group_by_method, network_share

METHODS = ["vanilla", "kd", "dml", "kdcl", "switokd"]
SETTINGS = {  # grid -> experiment folder -> what it is (benchmarks/evidence.sh, conditions.sh have the commands)
    "evidence": {
        "a": "default pair, WRN-16-2 → WRN-16-1",
        "b": "paper's lr protocol (student lr 0.01), WRN-16-2 → WRN-16-1",
        "c": "MobileNet → ResNet-20 (the switch fires)",
        "d-2t1s": "2T1S: WRN-16-2 + ResNet-20 → WRN-16-1",
        "d-1t2s": "1T2S: WRN-16-2 → ResNet-20 + WRN-16-1",
    },
    "conditions": {
        "clean": "clean labels, 2,000 images, 40 epochs",
        "clean80": "clean labels, 2,000 images, 80 epochs",
        "sym40": "40% symmetric noise, 2,000 images, 40 epochs",
        "sym40-noaug": "40% symmetric noise, no augmentation",
        "pairflip30-noaug": "30% pair-flip noise, no augmentation",
        "few50": "50 labels per class (500 images), 100 epochs",
        "drift": "drift: 5 phases, 2 classes = 80% of each",
        "pairs100": "100 classes (pairs), ResNet-20 → WRN-16-1, student lr 0.01",
        "pairflip30-noaug-xfam": "30% pair-flip noise, no augmentation, MobileNet → ResNet-20",
    },
}


def paired(ours: list[dict], theirs: list[dict], net: str) -> str:
    """SwitOKD minus the other method, seed by seed: mean ± std of the differences."""
    by_seed = {r["seed"]: r["networks"][net]["last_acc"] for r in theirs}
    diffs = [r["networks"][net]["last_acc"] - by_seed[r["seed"]] for r in ours if r["seed"] in by_seed]
    if not diffs:
        return ""
    m, s = mean_std(diffs)
    return f"{m:+.2f} ± {s:.2f}"


def rows(root: Path, settings: dict[str, str]) -> list[str]:
    grids = {exp: group_by_method(json.loads((root / exp / "results.json").read_text()))
             for exp in settings if (root / exp / "results.json").is_file()}
    methods = [m for m in METHODS if any(m in by for by in grids.values())]  # the grid's methods only
    out = ["| exp | setting | student | " + " | ".join(methods) + " | SwitOKD expert share | SwitOKD − DML, paired "
           "| vs DML | vs KDCL | vs vanilla |",
           "|---|---|---|" + "---:|" * len(methods) + "---:|---:|---|---|---|"]
    for exp, by in grids.items():
        setting = settings[exp]
        ours = by.get("switokd", [])
        if not ours:
            continue
        students = [n for n, i in ours[0]["networks"].items() if i["role"] == "student"]
        for net in students:
            acc = {m: mean_std([r["networks"][net]["last_acc"] for r in runs]) for m, runs in by.items()
                   if net in runs[0]["networks"]}
            cells = [f"{acc[m][0]:.2f} ± {acc[m][1]:.2f}" if m in acc else "" for m in methods]
            share = network_share(ours, "expert_share", lambda p: p.endswith("->" + net))
            share = share + "%" if share != "-" else share
            vs = [verdict(acc["switokd"], acc[m]) if m in acc else "" for m in ("dml", "kdcl", "vanilla")]
            out.append(f"| ({exp}) | {setting}, {len(ours)} seeds | {net} | " + " | ".join(cells)
                       + f" | {share} | {paired(ours, by.get('dml', []), net)} | " + " | ".join(vs) + " |")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grid", choices=sorted(SETTINGS), default="evidence")
    p.add_argument("--dir", help="the grid's results folder (default benchmarks/results/<grid>)")
    args = p.parse_args(argv)
    root = Path(args.dir) if args.dir else Path(__file__).parent / "results" / args.grid
    print("\n".join(rows(root, SETTINGS[args.grid])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
