"""Training throughput with one process against several (torchrun, gloo on the CPU or NCCL on GPUs).

  python benchmarks/ddp_throughput.py --out benchmarks/results/ddp-cpu.md

Times ``--steps`` training steps (after ``--warmup``) of the default pair on Fashion-MNIST images for:
- 1 process with 1 thread, and 1 process with ``--procs`` threads, at the per-process batch;
- ``--procs`` processes with 1 thread each (torchrun), each at the per-process batch (so the global
  batch is ``--procs`` times larger), SwitOKD with every step learning and with the teacher paused on
  every step (``method.options.force_mode=expert``), each with the two gradient reductions: the bucketed
  all-reduce after the backward (``train.ddp=false``) and one torch DistributedDataParallel per network,
  whose all-reduce overlaps the backward (``train.ddp=true``). The two reductions run interleaved,
  ``--repeats`` times each, so that a drift of the machine hits both; the table gives the median.
``--modes learning`` or ``--modes paused`` times one of the two SwitOKD modes.
Images/s count every process's images.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
# --modes: the multi-process SwitOKD steps timed, each as (its row's words, method.force_mode)
MODES = {"learning": ("every step learning", ""), "paused": ("teacher paused every step", "expert")}


def child(args) -> None:
    """One process of a variant: time steps, print one JSON line from rank 0."""
    from switokd.config import load_config
    from switokd.train.trainer import Trainer

    torch.set_num_threads(args.threads)
    cfg = load_config(ROOT / "configs" / "fashion_mnist.yaml", [
        "method.name=switokd", f"train.batch_size={args.batch}", f"train.threads={args.threads}",
        "train.progress=false", "data.limit_test=100", f"data.limit_train={args.images}", "data.val_split=0",
        f"train.ddp={str(args.ddp).lower()}", *([f"method.options.force_mode={args.force}"] if args.force else [])])
    tr = Trainer(cfg, writable=False)
    for net in tr.networks.values():
        net.model.train()
    tr.train_loader.set_epoch(0)
    batches = list(tr.train_loader.batches())[: args.warmup + args.steps]
    images = 0
    for i, (x, y) in enumerate(batches):
        if i == args.warmup:
            tr.dist.barrier() if tr.dist.world_size > 1 else None
            t0 = time.perf_counter()
        tr.train_step(x, y)
        if i >= args.warmup:
            images += len(y)
    dt = time.perf_counter() - t0
    world = tr.dist.world_size
    if tr.dist.is_main:
        print(json.dumps({"img_s": images * world / dt, "step_s": dt / args.steps,
                          "precision": f"{tr.precision.name} ({tr.precision.reason})"}), flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(variant: str, procs: int, threads: int, args, ddp: bool = False, force: str = "") -> dict:
    cmd = [__file__, "--child", "--threads", str(threads), "--batch", str(args.batch),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--images", str(args.images)]
    if ddp:
        cmd.append("--ddp")
    if force:
        cmd += ["--force", force]
    if procs > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={procs}", "--master_port",
               str(free_port()), *cmd]
    else:
        cmd = [sys.executable, *cmd]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if r.returncode != 0:
        raise SystemExit(f"{variant} failed:\n{r.stderr[-3000:]}")
    res = json.loads([ln for ln in r.stdout.splitlines() if ln.startswith("{")][-1])
    res.update(variant=variant, procs=procs, threads=threads)
    print(f"{variant}: {res['img_s']:.0f} img/s", file=sys.stderr, flush=True)
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--batch", type=int, default=128, help="per-process batch")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--images", type=int, default=12000, help="training images loaded (enough for the steps)")
    p.add_argument("--out")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--repeats", type=int, default=3, help="interleaved runs of each reduction")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES),
                   help="the multi-process SwitOKD steps to time: every step learning, the teacher paused (both)")
    p.add_argument("--ddp", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--force", default="", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args)
        return 0
    n = args.procs
    rows = [run("1 process, 1 thread", 1, 1, args), run(f"1 process, {n} threads", 1, n, args)]
    for mode, force in (MODES[m] for m in dict.fromkeys(args.modes)):
        times: dict[bool, list[dict]] = {False: [], True: []}
        for _ in range(args.repeats):  # interleaved: bucketed, DDP, bucketed, DDP, ...
            for ddp in (False, True):
                times[ddp].append(run(f"{n} x 1, {mode}, {'ddp' if ddp else 'bucketed'}", n, 1, args,
                                      ddp=ddp, force=force))
        for ddp in (False, True):
            runs = sorted(times[ddp], key=lambda r: r["img_s"])
            med = dict(runs[len(runs) // 2])
            med["variant"] = (f"{n} processes x 1 thread, {mode}, "
                              f"{'one DistributedDataParallel per network (train.ddp=true)' if ddp else 'bucketed all-reduce'}")
            med["all"] = [round(r["img_s"]) for r in times[ddp]]
            rows.append(med)
    from switokd.train.runinfo import machine_summary
    machine = re.sub(r", \d+ torch threads", "", machine_summary(torch.device("cpu")))
    cmd = "python benchmarks/ddp_throughput.py " + " ".join(sys.argv[1:] if argv is None else argv)
    lines = ["# Training throughput: one process against several", "", f"- command: `{cmd}`",
             f"- machine: {machine} (threads: per variant)",
             f"- date: {time.strftime('%Y-%m-%d')}",
             f"- precision: {', '.join(sorted({r['precision'] for r in rows}))}",
             f"- default pair (WRN-16-2 teacher, WRN-16-1 student), Fashion-MNIST 1x28x28, batch {args.batch} per process, "
             f"{args.steps} timed steps after {args.warmup} warm-up steps; images/s over all processes;",
             f"SwitOKD; {args.repeats} interleaved runs of each reduction, median (all runs in brackets)", "",
             "| variant | images/s | s per step | vs 1 process, 1 thread |", "|---|---:|---:|---:|"]
    base = rows[0]["img_s"]
    for r in rows:
        runs = f" ({', '.join(map(str, r['all']))})" if "all" in r else ""
        lines.append(f"| {r['variant']} | {r['img_s']:.0f}{runs} | {r['step_s']:.3f} | {r['img_s'] / base:.2f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
