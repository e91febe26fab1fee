"""The README's figure of a label-noise experiment: when the switch fired, against memorisation and G / δ.

  python benchmarks/conditions_figure.py benchmarks/results/conditions/pairflip30-noaug

Reads the runs' epochs.jsonl under DIR/runs/ (as `benchmarks/conditions.sh` collects them) and writes
DIR/switch.png with three panels over the epochs, each a mean over seeds with a ±std band:
SwitOKD's expert share beside the teachers' fit of the flipped labels; SwitOKD's G and δ; the students' test
accuracy for each method.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from switokd.runs.analysis import curve, expert_by_epoch, memorisation
from switokd.runs.files import read_run
from switokd.runs.report import band, mean_band, method_color, method_groups

PAIR = "teacher->student"


def across_seeds(ax, runs, series, colour: str, style: str, label: str) -> None:
    """The mean over ``runs`` of ``series(run)`` (a list of (epoch, value)) with a ±std band."""
    band(ax, *mean_band([series(r) for r in runs]), colour, style, label)


def pair_stat(key: str):
    return lambda r: [(e["epoch"], e["train"]["pair"][PAIR][key]) for e in r.epochs]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", type=Path)
    p.add_argument("--out", type=Path, help="default DIR/switch.png")
    args = p.parse_args(argv)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = method_groups([read_run(d) for d in sorted((args.dir / "runs").iterdir())])
    ours = runs["switokd"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    across_seeds(ax, ours, lambda r: [(e, 100 * v) for e, v in expert_by_epoch(r, PAIR)],
                 method_color("switokd", 0), "-", "SwitOKD: expert-mode steps")
    noisy = any(memorisation(r, "teacher") for r in ours)
    for method in ("dml", "switokd") if noisy else ():
        across_seeds(ax, runs[method], lambda r: [(e, 100 * a) for e, a, _ in memorisation(r, "teacher")],
                     method_color(method, 0), "--", f"{method}: teacher predicts the flipped label")
    ax.set(title="When the switch fired", xlabel="epoch",
           ylabel="% of steps / % of flipped images" if noisy else "% of steps")
    ax.set_ylim(bottom=0)  # shares: the band's lower edge can dip below 0, the share cannot
    ax = axes[1]
    across_seeds(ax, ours, pair_stat("gap"), "black", "-", "G (gap)")
    across_seeds(ax, ours, pair_stat("threshold"), "tab:orange", "-", "δ (threshold)")
    ax.set(title="SwitOKD: G against δ (epoch means)", xlabel="epoch")
    ax = axes[2]
    for i, (method, group) in enumerate(runs.items()):
        across_seeds(ax, group, lambda r: curve(r, "student"), method_color(method, i), "-", method)
    ax.set(title="Students' test accuracy", xlabel="epoch", ylabel="%")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].legend(fontsize=7, loc="upper left")  # clear of the curves: they rise late
    fig.suptitle(f"{args.dir.name}: mean over {len(ours)} seeds ± std", fontsize=10)
    fig.tight_layout()
    out = args.out or args.dir / "switch.png"
    fig.savefig(out, dpi=100)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
