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

import numpy as np

from switokd.report import METHOD_COLORS as COLOURS, read_run

PAIR = "teacher->student"


def by_epoch(runs, value) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Epochs where every run has a value, and the mean and std over the runs there."""
    per = [{e["epoch"]: v for e in r.epochs if (v := value(e)) is not None} for r in runs]
    epochs = sorted(set.intersection(*(set(p) for p in per)))
    vals = np.array([[p[e] for e in epochs] for p in per], dtype=float)
    return np.array(epochs), vals.mean(0), vals.std(0, ddof=1) if len(runs) > 1 else np.zeros(len(epochs))


def band(ax, x, m, s, colour, label, style="-"):
    ax.plot(x, m, style, color=colour, label=label)
    ax.fill_between(x, m - s, m + s, color=colour, alpha=0.15, linewidth=0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", type=Path)
    p.add_argument("--out", type=Path, help="default DIR/switch.png")
    args = p.parse_args(argv)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs: dict[str, list] = {}
    for d in sorted((args.dir / "runs").iterdir()):
        run = read_run(d)
        runs.setdefault(run.report.get("method", d.name.split("-seed")[0]), []).append(run)
    ours = runs["switokd"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    band(ax, *by_epoch(ours, lambda e: 100 * e["switch"]["expert_share"][PAIR]), COLOURS["switokd"],
         "SwitOKD: expert-mode steps")
    noisy = any("memorisation" in e for e in ours[0].epochs)
    for method in ("dml", "switokd") if noisy else ():
        band(ax, *by_epoch(runs[method], lambda e: 100 * e["memorisation"]["teacher"]["noisy_label"]
                           if "memorisation" in e else None),
             COLOURS[method], f"{method}: teacher predicts the flipped label", style="--")
    ax.set(title="When the switch fired", xlabel="epoch",
           ylabel="% of steps / % of flipped images" if noisy else "% of steps")
    ax.set_ylim(bottom=0)  # shares: the band's lower edge can dip below 0, the share cannot
    ax = axes[1]
    band(ax, *by_epoch(ours, lambda e: e["train"]["pair"][PAIR]["gap"]), "black", "G (gap)")
    band(ax, *by_epoch(ours, lambda e: e["train"]["pair"][PAIR]["threshold"]), "tab:orange", "δ (threshold)")
    ax.set(title="SwitOKD: G against δ (epoch means)", xlabel="epoch")
    ax = axes[2]
    for method, rs in sorted(runs.items(), key=lambda kv: list(COLOURS).index(kv[0]) if kv[0] in COLOURS else 99):
        band(ax, *by_epoch(rs, lambda e: e["test"]["student"]["acc"] if "test" in e else None),
             COLOURS.get(method, "grey"), method, style="o-")
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
