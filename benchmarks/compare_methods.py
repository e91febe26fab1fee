"""Train the same config with several methods (and seeds) and tabulate every network's accuracy.

Each run is a normal training run (its own run directory with config.yaml, steps.jsonl,
epochs.jsonl, last.pt and report.json); the table is written after every run, so a stopped
comparison keeps what finished.

  python benchmarks/compare_methods.py --config configs/fashion_mnist.yaml \\
      --methods vanilla dml kdcl switokd --out benchmarks/results/compare-fashion-mnist.md

Extra ``key=value`` arguments are config overrides applied to every run (e.g. ``train.epochs=2``).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from switokd.config import load_config
from switokd.trainer import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import machine  # noqa: E402


def run_one(config: str, method: str, seed: int, overrides: list[str], out_dir: str) -> dict:
    name = f"{Path(config).stem}-{method}-seed{seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    cfg = load_config(config, [*overrides, f"method.name={method}", f"train.seed={seed}",
                               f"train.out_dir={out_dir}", f"train.run_name={name}"])
    return Trainer(cfg).fit()


def table(reports: list[dict]) -> str:
    """One row per method and network: last-epoch accuracy (mean over seeds, and each seed), best, shares."""
    out = ["| method | network | model | last-epoch acc (mean) | per seed | best-epoch acc (mean) | "
           "expert share per pair / paused share | train time |",
           "|---|---|---|---:|---|---:|---|---:|"]
    by_method: dict[str, list[dict]] = {}
    for r in reports:
        by_method.setdefault(r["method"], []).append(r)
    for method, runs in by_method.items():
        shares = "; ".join(f"{p} {100 * v:.1f}%" for p, v in runs[0].get("expert_share", {}).items())
        paused = "; ".join(f"{t} paused {100 * v:.1f}%" for t, v in runs[0].get("paused_share", {}).items())
        for net in runs[0]["networks"]:
            last = [r["networks"][net]["last_acc"] for r in runs]
            best = [r["networks"][net]["best_acc"] for r in runs]
            seeds = ", ".join(f"{a:.2f}" for a in last)
            secs = statistics.mean(r["train_time_s"] for r in runs)
            extra = "; ".join(s for s in (shares, paused) if s) if len(runs) == 1 else "see report.json"
            out.append(f"| {method} | {net} | {runs[0]['networks'][net]['model']} | {statistics.mean(last):.2f}% | "
                       f"{seeds} | {statistics.mean(best):.2f}% | {extra} | {secs:.0f} s |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--methods", nargs="+", default=["vanilla", "dml", "kdcl", "switokd"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--out-dir", default="runs/compare", help="where the runs' directories go")
    p.add_argument("--out", help="write the markdown table here (rewritten after every run)")
    p.add_argument("overrides", nargs="*", help="key=value config overrides for every run")
    args = p.parse_args(argv)
    cmd = "python " + " ".join([sys.argv[0]] + (sys.argv[1:] if argv is None else argv))
    import torch

    header = [f"# {Path(args.config).stem}: methods compared", "", f"- command: `{cmd}`",
              f"- machine: {machine(torch.device('cpu'))}", f"- date: {time.strftime('%Y-%m-%d')}",
              "- accuracy: top-1 on the test split after the last epoch (best epoch also shown; it is chosen on "
              "the test split, so it is optimistic)", ""]
    reports = []
    for seed in args.seeds:
        for method in args.methods:
            reports.append(run_one(args.config, method, seed, args.overrides, args.out_dir))
            text = "\n".join(header) + "\n" + table(reports) + "\n"
            print(text, flush=True)
            if args.out:
                Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
