"""What a teacher cache saves: offline KD's training step with the live teacher and with the cache, interleaved in
one process, and the time to fill the cache.

    python benchmarks/teacher_cache.py --out benchmarks/results/teacher-cache-cpu.md

Two pairs: the default (WRN-16-2 teaching WRN-16-1, Fashion-MNIST, 1x28x28) and ResNet-34 teaching ResNet-18 on
3x32x32 images (random pixels: only the time counts here). The teacher's weights are a fresh model's (the step
costs the same trained or not). For each pair: fill the cache (``switokd cache``'s code: every view of every
training image, in evaluation batches), then time ``--steps`` training steps with the teacher run live and as many
reading the cache, alternating step by step so that both see the same machine; the ratio of the median steps is
the speed-up. Nothing is asserted: it prints what it measured.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from switokd import config as C
from switokd.data import DataSplits
from switokd.models import create_model
from switokd.train.runinfo import machine_summary
from switokd.train.teacher_cache import fill
from switokd.train.trainer import Trainer


def pair_splits(name: str, n: int) -> DataSplits | None:
    if name == "default":
        return None  # Fashion-MNIST from disk (data.limit_train)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 100, (n,), generator=g)
    return DataSplits("random32", x, y, x[:256], y[:256], 100, (0.5,) * 3, (0.25,) * 3, 4)


PAIRS = {"default": ("wrn16_2", "wrn16_1", 10, 1, 28), "resnet34-18": ("resnet34", "resnet18", 100, 3, 32)}


def measure(pair: str, images: int, steps: int, batch: int, threads: int, work: Path) -> dict:
    teacher, student, classes, chans, size = PAIRS[pair]
    torch.manual_seed(0)
    ck = work / f"{pair}-teacher.pt"
    torch.save(create_model(teacher, classes, chans, size).state_dict(), ck)
    over = ["method.name=kd", f"networks.teacher.model={teacher}", f"networks.student.model={student}",
            f"networks.teacher.checkpoint={ck}", f"networks.teacher.cache={work / (pair + '-cache')}",
            "data.augment_seed=0", "train.epochs=1", f"train.batch_size={batch}", "train.eval_batch_size=256",
            f"train.threads={threads}", "train.progress=false", f"data.limit_train={images}", "train.precision=auto"]
    tr = Trainer(C.load_config("configs/fashion_mnist.yaml" if pair == "default" else None, over),
                 data=pair_splits(pair, images), writable=False)
    t0 = time.perf_counter()
    filled = fill(tr, log=lambda m: None)["teacher"]
    fill_s = time.perf_counter() - t0
    caches = tr.caches
    for net in tr.networks.values():
        net.model.train(not net.frozen)
    tr.train_loader.set_epoch(0)
    batches = list(tr.train_loader.batches())
    times = {"live": [], "cached": []}
    for i in range(2 * steps + 2):
        b = i // 2 % len(batches)
        mode = "live" if i % 2 == 0 else "cached"
        tr.caches = caches if mode == "cached" else {}
        tr.batch = b
        tr._batch_images = tr.train_loader.image_indices(b)
        x, y = batches[b]
        t = time.perf_counter()
        tr.train_step(x, y)
        dt = time.perf_counter() - t
        if i >= 2:  # the first pair warms up
            times[mode].append(dt)
    live, cached = statistics.median(times["live"]), statistics.median(times["cached"])
    return {"pair": f"{teacher} -> {student}", "images": images, "classes": classes, "input": f"{chans}x{size}x{size}",
            "precision": tr.precision.name, "live_ms": 1000 * live, "cached_ms": 1000 * cached, "ratio": live / cached,
            "fill_s": fill_s, "fill_entries": filled["entries"], "bytes": filled["bytes"],
            "bytes_per_view": filled["bytes_per_image_per_view"], "steps": steps, "batch": batch}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20, help="timed steps per mode and pair")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--images", type=int, default=2048, help="training images (one epoch of views is cached)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    p.add_argument("--out", help="also write the table to this markdown file")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for pair in args.pairs:
            rows.append(measure(pair, args.images, args.steps, args.batch, args.threads, Path(work)))
            print(rows[-1], flush=True)
    lines = [f"# Teacher cache: offline KD steps, live teacher against the cache", "",
             f"- command: `python benchmarks/teacher_cache.py {' '.join(argv)}`".rstrip(),
             f"- machine: {machine_summary(threads=args.threads or None)}", f"- date: {time.strftime('%Y-%m-%d')}",
             f"- batch {args.batch}; {args.steps} steps per mode, alternating live and cached step by step; medians",
             "", "| pair | input | precision | live step (ms) | cached step (ms) | speed-up | fill (s) | entries | "
             "bytes per image per view | on disk |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['pair']} | {r['input']}, {r['classes']} classes | {r['precision']} | {r['live_ms']:.1f} | "
                     f"{r['cached_ms']:.1f} | {r['ratio']:.2f}x | {r['fill_s']:.1f} | {r['fill_entries']:,} | "
                     f"{r['bytes_per_view']} | {r['bytes'] / 2**20:.1f} MiB |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
