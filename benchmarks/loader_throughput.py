"""The streaming loader's images/s against what training consumes.

  python benchmarks/loader_throughput.py --out benchmarks/results/loader-cpu.md

Writes JPEG files into a temporary image folder (ImageNet-like: 300x250 px decoded to a 224 px
random-resized crop; and small: 72x72 px to 64 px with a padded crop), iterates the streaming loader with
1 and 2 worker processes, and times training steps of a pair on batches of the same shape.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def write_jpegs(root: Path, n: int, size: tuple[int, int]) -> None:
    g = np.random.default_rng(0)
    for split, count in (("train", n), ("val", max(8, n // 10))):
        for c in range(4):
            (root / split / f"c{c}").mkdir(parents=True)
        for i in range(count):
            # Smooth random images compress like photos, unlike white noise.
            small = g.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
            Image.fromarray(small).resize(size, Image.BICUBIC).save(root / split / f"c{i % 4}" / f"{i}.jpg", quality=90)


def loader_rate(data_dir: Path, image_size: int, batch: int, workers: int, batches: int) -> float:
    from switokd.data import StreamingLoader, load_dataset

    s = load_dataset("image_folder", str(data_dir), image_size=image_size, in_memory=False)
    ld = StreamingLoader(s.train_files, s.train_y, batch, s.mean, s.std, train=True, image_size=image_size,
                         crop_padding=s.crop_padding, workers=workers)
    ld.set_epoch(0)
    it = ld.batches()
    next(it)  # workers started, first batch decoded
    t0, n = time.perf_counter(), 0
    for _, (x, _) in zip(range(batches), it):
        n += len(x)
    return n / (time.perf_counter() - t0)


def train_rate(teacher: str, student: str, image_size: int, batch: int, steps: int) -> float:
    from switokd.config import load_config
    from switokd.data import DataSplits
    from switokd.train.trainer import Trainer

    x = torch.randint(0, 256, (batch * (steps + 1), 3, image_size, image_size), dtype=torch.uint8)
    y = torch.randint(0, 4, (len(x),))
    data = DataSplits("synthetic", x, y, x[:batch], y[:batch], 4, (0.5,) * 3, (0.25,) * 3, 0)
    cfg = load_config(ROOT / "configs" / "fashion_mnist.yaml", [
        f"networks.teacher.model={teacher}", f"networks.student.model={student}", f"train.batch_size={batch}",
        "train.progress=false", "data.augment=false", "data.val_split=0"])  # a throughput: no validation split
    tr = Trainer(cfg, data=data, writable=False)
    for net in tr.networks.values():
        net.model.train()
    tr.train_loader.set_epoch(0)
    batches = list(tr.train_loader.batches())
    tr.train_step(*batches[0])
    t0 = time.perf_counter()
    for xb, yb in batches[1:steps + 1]:
        tr.train_step(xb, yb)
    return batch * steps / (time.perf_counter() - t0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=600)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--train-steps", type=int, default=3)
    p.add_argument("--out")
    args = p.parse_args(argv)
    from switokd.train.runinfo import machine_summary

    cases = [("ImageNet-like, 300x250 JPEG -> 224 px random-resized crop", (300, 250), 224, "resnet34", "resnet18"),
             ("small, 72x72 JPEG -> 64 px padded crop", (72, 72), 64, "wrn16_2", "wrn16_1")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, size, image_size, teacher, student) in enumerate(cases):
            root = Path(tmp) / f"case{i}"
            write_jpegs(root, args.images, size)
            batches = max(1, args.images // args.batch - 1)
            rates = {w: loader_rate(root, image_size, args.batch, w, batches) for w in args.workers}
            consume = train_rate(teacher, student, image_size, args.batch, args.train_steps)
            rows.append((name, rates, consume, f"{teacher} + {student}"))
            print(name, rates, consume, file=sys.stderr, flush=True)
    cmd = "python benchmarks/loader_throughput.py " + " ".join(sys.argv[1:] if argv is None else argv)
    lines = ["# Streaming loader: images/s decoded against images/s trained", "", f"- command: `{cmd}`",
             f"- machine: {machine_summary(torch.device('cpu'))}", f"- date: {time.strftime('%Y-%m-%d')}",
             f"- batch {args.batch}; the loader decodes, crops, flips and normalises on the CPU; training runs the "
             "pair's SwitOKD step (fp32/bf16 as `auto` picks) on batches of the same shape", "",
             "| images | " + " | ".join(f"loader, {w} worker(s)" for w in args.workers) + " | training consumes | "
             "loader / training |", "|---|" + "---:|" * (len(args.workers) + 2)]
    for name, rates, consume, pair in rows:
        best = max(rates.values())
        lines.append(f"| {name} | " + " | ".join(f"{rates[w]:.0f} img/s" for w in args.workers)
                     + f" | {consume:.1f} img/s ({pair}) | {best / consume:.1f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
