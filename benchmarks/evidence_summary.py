"""The summary table of the evidence grid (README, "What SwitOKD does here"), read from its results.json files.

  python benchmarks/evidence_summary.py [--dir benchmarks/results/evidence]

One row per experiment and student: each method's last-epoch accuracy (mean ± sample std over seeds), SwitOKD's
expert share, and SwitOKD against the best other method (a difference within one standard deviation is a tie,
as in the sweeps' own tables).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from switokd.sweep import group_by_method, mean_std, network_share, verdict

METHODS = ["vanilla", "kd", "dml", "kdcl", "switokd"]
SETTINGS = {  # experiment folder: what it is (benchmarks/evidence.sh has the sizes and commands)
    "a": "default pair, WRN-16-2 → WRN-16-1",
    "b": "paper's lr protocol (student lr 0.01), WRN-16-2 → WRN-16-1",
    "c": "MobileNet → ResNet-20 (the switch fires)",
    "d-2t1s": "2T1S: WRN-16-2 + ResNet-20 → WRN-16-1",
    "d-1t2s": "1T2S: WRN-16-2 → ResNet-20 + WRN-16-1",
}


def rows(root: Path) -> list[str]:
    out = ["| exp | setting | student | " + " | ".join(METHODS) + " | SwitOKD expert share | SwitOKD vs best other |",
           "|---|---|---|" + "---:|" * len(METHODS) + "---:|---|"]
    for exp, setting in SETTINGS.items():
        path = root / exp / "results.json"
        if not path.is_file():
            continue
        by = group_by_method(json.loads(path.read_text()))
        ours = by.get("switokd", [])
        if not ours:
            continue
        students = [n for n, i in ours[0]["networks"].items() if i["role"] == "student"]
        for net in students:
            acc = {m: mean_std([r["networks"][net]["last_acc"] for r in runs]) for m, runs in by.items()
                   if net in runs[0]["networks"]}
            cells = [f"{acc[m][0]:.2f} ± {acc[m][1]:.2f}" if m in acc else "" for m in METHODS]
            share = network_share(ours, "expert_share", lambda p: p.endswith("->" + net))
            share = share + "%" if share != "-" else share
            others = {m: a for m, a in acc.items() if m != "switokd"}
            best = max(others, key=lambda m: others[m][0])
            d = acc["switokd"][0] - others[best][0]
            out.append(f"| ({exp}) | {setting}, {len(ours)} seeds | {net} | " + " | ".join(cells)
                       + f" | {share} | {verdict(acc['switokd'], others[best])} ({d:+.2f} vs {best}) |")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", default=str(Path(__file__).parent / "results" / "evidence"))
    args = p.parse_args(argv)
    print("\n".join(rows(Path(args.dir))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
