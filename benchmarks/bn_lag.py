"""BatchNorm lag in a run's checkpoint: each learning network's validation accuracy with its running statistics,
then with statistics re-estimated on the training split (``switokd.train.evaluation.refreshed_batchnorm``, what
a race's rungs now read). A large difference means the running statistics lag the weights: a rung there reads
the lag, not the learning.

    python benchmarks/bn_lag.py runs/race/branches-few50/ffl-seed0 runs/race/branches-few50/one-seed0
"""
from __future__ import annotations

import sys

from switokd.train.evaluation import refreshed_batchnorm
from switokd.train.trainer import Trainer


def main(argv: list[str] | None = None) -> int:
    runs = sys.argv[1:] if argv is None else argv
    if not runs:
        print(__doc__, file=sys.stderr)
        return 2
    print("| run | epoch | network | val acc, running statistics (%) | val acc, re-estimated (%) |\n|---|---:|---|---:|---:|")
    for run in runs:
        tr = Trainer.from_checkpoint(run, evaluate_only=True)
        split = "val" if tr.val_loader is not None else "test"
        before = tr.evaluate(split)
        with refreshed_batchnorm(tr):
            after = tr.evaluate(split)
        for n, net in tr.networks.items():
            if not net.frozen:
                print(f"| {run} | {tr.epoch} | {n} | {before[n]['acc']:.1f} | {after[n]['acc']:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
