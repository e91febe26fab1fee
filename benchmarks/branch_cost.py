"""What a branch method costs to train, beside the two-network methods and m separate networks (issue 41).

Each arm is built as the branch grid builds it (``switokd.race.plan``: vanilla, DML, KDCL and SwitOKD train the
config's teacher and student; ONE, OKDDip, PCL and FFL train the student split into 3 branches, no teacher),
plus ``dml-x3``: DML over three separate copies of the student, the m networks a branch method replaces. Every
arm trains whole epochs through ``Trainer.train_epoch`` (loader, forward, method, backward, step), interleaved:
round r trains one epoch of every arm, in an order that rotates each round, so slow drift in a shared
machine's load hits every arm alike. Round 0 is a warm-up. It prints each arm's images/s (median over rounds)
and its epoch time over DML's on the same round (median, with the range). Nothing is written but ``--out``.

    python benchmarks/branch_cost.py --out benchmarks/results/branch-cost-cpu.md
    python benchmarks/branch_cost.py --rounds 2 --overrides data.limit_train=800    # a quick look
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


from switokd import config as C
from switokd.race.plan import plan
from switokd.train.runinfo import machine_summary
from switokd.train.trainer import Trainer

ARMS = ("vanilla", "dml", "kdcl", "switokd", "one", "okddip", "pcl", "ffl", "dml-x3")
# The branch grid's clean condition (benchmarks/methods.sh branches-clean), one thread as its lanes.
GRID = ("data.limit_train=1500", "data.val_split=500", "train.epochs=30", "train.threads=1", "train.progress=false")


def arm_config(config: str | None, arm: str, overrides: list[str]) -> C.Config:
    if arm == "dml-x3":  # the m networks a branch method replaces: three separate students, mutual learning
        base = C.load_config(config, overrides)
        student = next(n for n in C.to_dict(base)["networks"] if n["role"] == "student")
        nets = [{**student, "name": f"student{k}"} for k in range(3)]
        return C.load_config(config, [*overrides, "method.name=dml", "networks=" + json.dumps(nets)])
    spec = plan(config, [arm], [0], overrides, Path("unused"))[-1]
    return C.load_config(config, [o for o in spec.overrides if not o.startswith(("train.out_dir", "train.run_name"))])


def main(argv: list[str] | None = None, data=None) -> int:
    """``data``: DataSplits to train on instead of the config's (the tests' synthetic images)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/fashion_mnist.yaml")
    p.add_argument("--arms", nargs="+", default=list(ARMS), help=f"default: {' '.join(ARMS)}")
    p.add_argument("--rounds", type=int, default=5, help="epochs per arm, the first a warm-up (default 5)")
    p.add_argument("--overrides", nargs="*", default=[], help="config overrides after the grid's (key=value)")
    p.add_argument("--out", help="also write the table here (markdown)")
    args = p.parse_args(argv)
    if args.rounds < 2:
        p.error("--rounds must be at least 2 (the first is a warm-up)")
    if "dml" not in args.arms:
        p.error("--arms must include dml: every epoch time is read against DML's")
    config, overrides = args.config or None, [*GRID, *args.overrides]  # "": the built-in defaults
    trainers = {a: Trainer(arm_config(config, a, overrides), data=data, writable=False) for a in args.arms}
    times: dict[str, list[float]] = {a: [] for a in args.arms}
    images: dict[str, list[float]] = {a: [] for a in args.arms}
    for r in range(args.rounds):
        order = args.arms[r % len(args.arms):] + args.arms[:r % len(args.arms)]
        for a in order:
            tr = trainers[a]
            s = tr.train_epoch()
            tr.epoch += 1
            if r:
                times[a].append(s["train_time_s"])
                images[a].append(s["images_per_s"])
        print(f"round {r}: " + ", ".join(f"{a} {times[a][-1]:.2f} s" for a in args.arms if r), file=sys.stderr)
    tr0 = trainers["dml"]
    lines = [f"# Branch methods' training cost ({tr0.device.type}, {tr0.precision.name})", "",
             f"- command: `python benchmarks/branch_cost.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
             f"- machine: {machine_summary(tr0.device, tr0.cfg.train.threads)}",
             f"- data: {tr0.data.name}, {len(tr0.train_loader)} steps of batch {tr0.cfg.train.batch_size} an epoch; "
             f"{args.rounds - 1} timed epochs per arm after one warm-up, interleaved", "",
             "| arm | networks trained | images/s (median) | epoch time / DML's (median, range) |", "|---|---|---:|---|"]
    for a in args.arms:
        tr = trainers[a]
        nets = ", ".join(f"{n}: {net.cfg.model}" + (f" x{len(net.model.branches)} branches"
                                                    if hasattr(net.model, "branches") else "")
                         for n, net in tr.networks.items())
        ratios = [t / d for t, d in zip(times[a], times["dml"])]
        lines.append(f"| {a} | {nets} | {statistics.median(images[a]):.0f} | {statistics.median(ratios):.2f} "
                     f"({min(ratios):.2f}-{max(ratios):.2f}) |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
