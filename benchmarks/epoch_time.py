"""Wall time of one epoch of the default Fashion-MNIST run, per precision.

  python benchmarks/epoch_time.py --precisions fp32 bf16
Prints the training time (evaluation excluded) and images/s of epoch 1 for each precision.
"""
from __future__ import annotations

import argparse
import sys
import tempfile

from switokd.config import load_config
from switokd.train.trainer import Trainer


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/fashion_mnist.yaml")
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    print("| precision | epoch train time (s) | images/s |\n|---|---:|---:|")
    for prec in args.precisions:
        with tempfile.TemporaryDirectory() as d:
            cfg = load_config(args.config, [f"train.precision={prec}", "train.epochs=1", "train.progress=false",
                                            f"train.out_dir={d}", "train.run_name=t", *args.overrides])
            tr = Trainer(cfg)
            tr._open_run()
            s = tr.train_epoch()
            tr._close_run()
        print(f"| {prec} | {s['train_time_s']:.1f} | {s['images_per_s']:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
