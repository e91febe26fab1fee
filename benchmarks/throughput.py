"""Throughput of every method against a bare hand-written PyTorch loop doing the same work.

For each teacher/student pair and input shape it times, on the same pre-made batches:
  bare          minimal loop: both networks forward, CE, one backward, both optimizers step
  bare-expert   teacher forward (autograd on, its logits kept until the student's forward is done, as
                any step that decides from both networks' logits must) + student forward/backward/step
  bare-expert-nograd  the same with the teacher forward under no_grad (a stricter floor)
  vanilla, dml, kdcl, switokd-learning, switokd-expert  (Trainer.train_step + its telemetry)
  loader        the in-memory loader alone (shuffle, crop, flip, normalise)
and prints each method's time per step as a ratio to the bare loop doing the same work.

Timing is interleaved step by step: timed step i of every variant runs on the same batch, one
after the other (the order rotates each step), so slow drift in a shared machine's load hits
all variants alike. A ratio is the median over steps of t_method[i] / t_reference[i], with a
bootstrap 95% interval over steps. `vanilla` vs `bare` (the same work) shows the noise floor.

It also times each method's own logic alone, without the networks: ``method.step`` on fixed
logits, the backward of its losses into those logits, and the trainer's telemetry. That is the
only work a method adds to the bare loop, measured without the networks' noise.

  python benchmarks/throughput.py --device cpu --out benchmarks/results/throughput-cpu.md
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from switokd import config as C
from switokd.data import DataSplits, TensorLoader
from switokd.models import create_model
from switokd.train.trainer import Trainer

METHODS = [("vanilla", None, "bare"), ("dml", None, "bare"), ("kdcl", None, "bare"),
           ("switokd", "learning", "bare"), ("switokd", "expert", "bare-expert")]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic(n: int, chans: int, size: int, classes: int = 10) -> DataSplits:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, chans, size, size), generator=g, dtype=torch.uint8)
    y = torch.randint(0, classes, (n,), generator=g)
    return DataSplits("synthetic", x, y, x[:256], y[:256], classes, (0.5,) * chans, (0.25,) * chans, 4)


class Bare:
    """The hand-written limit: no method, no telemetry, same models, optimizer and precision."""

    def __init__(self, teacher: str, student: str, data: DataSplits, device, precision: str, channels_last: bool):
        self.device = device
        self.dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        mf = torch.channels_last if channels_last else torch.contiguous_format
        self.t = create_model(teacher, data.num_classes, data.in_chans, data.image_size).to(device, memory_format=mf).train()
        self.s = create_model(student, data.num_classes, data.in_chans, data.image_size).to(device, memory_format=mf).train()
        mk = lambda m: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4, fused=True)  # noqa: E731
        self.ot, self.os = mk(self.t), mk(self.s)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype) if self.dtype else contextlib.nullcontext()

    def both(self, x, y):
        with self.autocast():
            zt, zs = self.t(x), self.s(x)
        loss = F.cross_entropy(zt.float(), y) + F.cross_entropy(zs.float(), y)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.ot)
        self.scaler.step(self.os)
        self.scaler.update()
        self.ot.zero_grad(set_to_none=True)
        self.os.zero_grad(set_to_none=True)

    def expert(self, x, y, grad_teacher=True):
        with self.autocast():
            with contextlib.nullcontext() if grad_teacher else torch.no_grad():
                zt = self.t(x)
            zs = self.s(x)
        del zt  # both logits existed together, as before any decision; the teacher's graph goes now
        loss = F.cross_entropy(zs.float(), y)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.os)
        self.scaler.update()
        self.os.zero_grad(set_to_none=True)


def bench_pair(teacher: str, student: str, chans: int, size: int, args, device) -> list[dict]:
    data = synthetic(args.loader_images, chans, size)
    overrides = [f"train.precision={args.precision}", f"train.channels_last={str(args.channels_last).lower()}",
                 f"train.batch_size={args.batch_size}", f"train.device={device}", "train.progress=false",
                 f"networks.teacher.model={teacher}", f"networks.student.model={student}",
                 "networks.teacher.lr=0.01", "networks.student.lr=0.01"]
    variants, logic = {}, {}
    for name, force, _ in METHODS:
        o = overrides + [f"method.name={name}"] + ([f"method.options.force_mode={force}"] if force else [])
        tr = Trainer(C.load_config(None, o), data=data, writable=False)
        for net in tr.networks.values():
            net.model.train()
        label = f"{name}-{force}" if force else name
        variants[label] = (lambda tr=tr: (lambda x, y: tr.meters.record(tr.train_step(x, y))))()
        logic[label] = method_logic_time(tr, args.batch_size, data.num_classes, device)
    bare = Bare(teacher, student, data, device, args.precision, args.channels_last)
    variants["bare"] = bare.both
    variants["bare-expert"] = bare.expert
    variants["bare-expert-nograd"] = lambda x, y: bare.expert(x, y, grad_teacher=False)

    loader = TensorLoader(data.train_x, data.train_y, args.batch_size, data.mean, data.std, train=True,
                          crop_padding=data.crop_padding, hflip=True, device=device, channels_last=args.channels_last)
    batches = [b for _, b in zip(range(4), loader)]
    for fn in variants.values():  # warm up every variant before timing any
        for x, y in batches[: args.warmup]:
            fn(x, y)
    times = time_interleaved(variants, batches, args.steps, device)
    loader_times = []
    for r in range(args.repeats):
        loader.set_epoch(r)
        sync(device)
        t0 = time.perf_counter()
        n = 0
        for _, y in loader:
            n += len(y)
        sync(device)
        loader_times.append((time.perf_counter() - t0) / n)
    rows = []
    med = {k: statistics.median(v) for k, v in times.items()}
    for name, force, ref in METHODS:
        label = f"{name}-{force}" if force else name
        r, lo, hi = paired_ratio(times[label], times[ref])
        rows.append({"variant": label, "ms": 1e3 * med[label], "ips": args.batch_size / med[label],
                     "ratio": r, "ci": (lo, hi), "ref": ref,
                     "logic_ms": 1e3 * logic[label], "logic_share": logic[label] / med[ref]})
    for k in ("bare", "bare-expert", "bare-expert-nograd"):
        rows.append({"variant": k, "ms": 1e3 * med[k], "ips": args.batch_size / med[k], "ref": ""})
    r, lo, hi = paired_ratio(times["switokd-expert"], times["bare-expert-nograd"])
    rows.append({"variant": "switokd-expert", "ratio": r, "ci": (lo, hi), "ref": "bare-expert-nograd"})
    r, lo, hi = paired_ratio(times["switokd-expert"], times["switokd-learning"])
    rows.append({"variant": "switokd-expert", "ratio": r, "ci": (lo, hi), "ref": "switokd-learning"})
    loader_ips = 1 / min(loader_times)
    fastest = max(r["ips"] for r in rows if r.get("ips") and not r["variant"].startswith("bare"))
    rows.append({"variant": "loader", "ms": 1e3 * args.batch_size / loader_ips, "ips": loader_ips,
                 "ratio": loader_ips / fastest, "ref": "x faster than the fastest method consumes"})
    return rows


def time_interleaved(variants: dict, batches: list, steps: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds per step of every variant, step i of each on batch i, the variants' order rotating each step."""
    names = list(variants)
    times: dict[str, list[float]] = {k: [] for k in names}
    for i in range(steps):
        x, y = batches[i % len(batches)]
        j = i % len(names)
        for k in names[j:] + names[:j]:
            sync(device)
            t0 = time.perf_counter()
            variants[k](x, y)
            sync(device)
            times[k].append(time.perf_counter() - t0)
    return times


def paired_ratio(a: list[float], b: list[float], resamples: int = 2000) -> tuple[float, float, float]:
    """Median of the per-step ratios a[i] / b[i] and its bootstrap 95% interval."""
    r = torch.tensor(a, dtype=torch.float64) / torch.tensor(b, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, len(r), (resamples, len(r)), generator=g)
    boot = r[idx].median(dim=1).values.sort().values
    return r.median().item(), boot[int(0.025 * resamples)].item(), boot[int(0.975 * resamples) - 1].item()


def method_logic_time(tr: Trainer, batch_size: int, num_classes: int, device: torch.device, reps: int = 200) -> float:
    """Median seconds of a method's own work on fixed logits: step, backward into the logits, telemetry."""
    g = torch.Generator().manual_seed(1)
    base = {n: torch.randn(batch_size, num_classes, generator=g).to(device) for n in tr.networks}
    y = torch.randint(0, num_classes, (batch_size,), generator=g).to(device)
    dtype = tr.precision.dtype
    ts = []
    for i in range(reps + 10):
        logits = {n: z.clone().to(dtype or z.dtype).requires_grad_() for n, z in base.items()}
        sync(device)
        t0 = time.perf_counter()
        out = tr.method.step(logits, y)
        loss = sum(out.losses[n]["loss"] for n in out.stepping)
        if out.stepping:
            loss.backward()
        tr.meters.record(out)
        sync(device)
        if i >= 10:
            ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def fmt(rows: list[dict]) -> str:
    out = ["| variant | ms/step (median) | images/s | ratio (median of per-step ratios) | 95% interval | to | method logic alone, ms (share of the reference step) |",
           "|---|---:|---:|---:|---|---|---:|"]
    for r in rows:
        ms = "" if r.get("ms") is None else f"{r['ms']:.2f}"
        ips = "" if r.get("ips") is None else f"{r['ips']:.0f}"
        ratio = "" if r.get("ratio") is None else f"{r['ratio']:.3f}"
        ci = f"{r['ci'][0]:.3f} to {r['ci'][1]:.3f}" if r.get("ci") else ""
        logic = f"{r['logic_ms']:.2f} ({100 * r['logic_share']:.2f}%)" if r.get("logic_ms") is not None else ""
        out.append(f"| {r['variant']} | {ms} | {ips} | {ratio} | {ci} | {r['ref']} | {logic} |")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="auto: bf16 where the device computes it natively, else fp32")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=24, help="timed steps per variant (interleaved)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5, help="loader epochs timed (best)")
    p.add_argument("--loader-images", type=int, default=20000)
    p.add_argument("--pairs", default="wrn16_2:resnet20,wrn16_4:wrn16_1,wrn16_2:mobilenetv2_x0.5")
    p.add_argument("--shapes", default="1x28,3x32")
    p.add_argument("--out", help="write the markdown results here")
    args = p.parse_args(argv)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    from switokd.train.engine import resolve_precision
    from switokd.train.runinfo import machine_summary
    args.precision = resolve_precision(args.precision, device)[0]
    cmd = "python " + " ".join([sys.argv[0]] + sys.argv[1:])
    lines = [f"# Throughput: methods vs the bare PyTorch loop ({device.type}, {args.precision})", "",
             f"- command: `{cmd}`", f"- machine: {machine_summary(device)}",
             f"- date: {time.strftime('%Y-%m-%d')}; batch {args.batch_size}, {args.steps} interleaved steps per "
             f"variant, channels_last={args.channels_last}", ""]
    print("\n".join(lines), flush=True)
    for pair in args.pairs.split(","):
        teacher, student = pair.split(":")
        for shape in args.shapes.split(","):
            c, s = (int(v) for v in shape.split("x"))
            rows = bench_pair(teacher, student, c, s, args, device)
            block = f"## {teacher} / {student}, {c}x{s}x{s}\n\n{fmt(rows)}\n"
            print(block, flush=True)
            lines.append(block)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
