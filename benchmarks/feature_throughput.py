"""The feature methods' training step against a bare hand-written loop doing the same work.

For each (teacher, student) pair and each feature method it times, on the same pre-made batches:
  bare     the frozen teacher's forward (eval, no_grad) and the student's, with the same forward hooks on the same
           modules (switokd.models.features.FeatureTap), CE + weight x the same FeatureLoss module (its
           connectors built the same way), one backward, one SGD step over the student and the module
  switokd  Trainer.train_step with the method (the trainer's own hooks, modules, optimizer, telemetry)
interleaved step by step (each step's variants on one batch, the order rotating), and prints the median over
steps of switokd / bare with a bootstrap 95% interval. It also reports CRD's memory: its buffers with the
memory bank and with the queue for a data set of --crd-images images, and the negatives gathered per step.

  python benchmarks/feature_throughput.py --out benchmarks/results/feature-throughput-cpu.md
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from switokd import config as C
from switokd.data import DataSplits
from switokd.methods.features import FEATURE_LOSSES, create_feature_loss
from switokd.models.features import FeatureTap
from switokd.train.trainer import Trainer

PAIRS = [("wrn16_2", "wrn16_1"), ("resnet18", "mobilenetv2_x0.5")]


def synthetic(n: int, classes: int = 100) -> DataSplits:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    y = torch.randint(0, classes, (n,), generator=g)
    return DataSplits("synthetic", x, y, x[:256], y[:256], classes, (0.5,) * 3, (0.25,) * 3, 4)


def make_trainer(method: str, teacher: str, student: str, data: DataSplits, batch: int, threads: int) -> Trainer:
    import tempfile
    from switokd.models import create_model
    weights = Path(tempfile.mkdtemp()) / f"{teacher}.pt"  # a frozen teacher needs weights: any will time the same
    torch.save(create_model(teacher, data.num_classes, 3, 32).state_dict(), weights)
    cfg = C.load_config(None, [f"method.name={method}", f"networks.teacher.model={teacher}",
                               f"networks.teacher.checkpoint={weights}",
                               f"networks.student.model={student}", f"train.batch_size={batch}", "train.progress=false",
                               "train.precision=fp32", f"train.threads={threads}", "data.augment=false"])
    tr = Trainer(cfg, data=data, writable=False)
    for name, net in tr.networks.items():
        net.model.train(not net.frozen or name in tr.method.train_mode_teachers)
    return tr


class Bare:
    """The hand-written loop with the same hooks, module and loss."""

    def __init__(self, tr: Trainer) -> None:
        torch.manual_seed(0)
        self.teacher = tr.networks["teacher"].model
        self.student = tr.networks["student"].model
        m = tr.method.feature_modules["student"]["teacher"]
        self.loss = create_feature_loss(m.name, **{k: getattr(m, k) for k in ("student_paths", "teacher_paths")})
        self.loss.context = {"labels": tr.data.train_y, "teacher": self.teacher}
        self.taps = {"s": FeatureTap(self.student, self.loss.student_paths), "t": FeatureTap(self.teacher,
                                                                                            self.loss.teacher_paths)}
        shapes_s = {p: v.shape for p, v in _dry(self.student, self.taps["s"]).items()}
        shapes_t = {p: v.shape for p, v in _dry(self.teacher, self.taps["t"]).items()}
        self.loss.build([shapes_s[p] for p in self.loss.student_paths], [shapes_t[p] for p in self.loss.teacher_paths])
        self.weight = tr.method.feature_weight
        self.opt = torch.optim.SGD([*self.student.parameters(), *self.loss.parameters()], lr=0.1, momentum=0.9,
                                   weight_decay=5e-4)
        self.train_mode = tr.method.train_mode_teachers

    def step(self, x, y, index):
        with torch.no_grad():
            self.teacher(x)
        ft = self.taps["t"].pop()
        logits = self.student(x)
        fs = self.taps["s"].pop()
        term = self.loss([fs[p] for p in self.loss.student_paths], [ft[p].detach() for p in self.loss.teacher_paths],
                         index)
        loss = F.cross_entropy(logits, y) + self.weight * term
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)


def _dry(model, tap):
    mode = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(2, 3, 32, 32))
    model.train(mode)
    return tap.pop()


def ratio_ci(ratios: list[float], n_boot: int = 1000) -> tuple[float, float, float]:
    rng = random.Random(0)
    boots = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(n_boot))
    return statistics.median(ratios), boots[int(0.025 * n_boot)], boots[int(0.975 * n_boot)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=FEATURE_LOSSES.names())
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--images", type=int, default=2048)
    p.add_argument("--crd-images", type=int, default=60000)
    p.add_argument("--pairs", nargs="+", default=[f"{t}:{s}" for t, s in PAIRS])
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    data = synthetic(a.images)
    lines = [f"# Feature methods: a training step against a bare loop doing the same work",
             "", f"- command: `python benchmarks/feature_throughput.py {' '.join(sys.argv[1:] if argv is None else argv)}`",
             f"- machine: {_machine()}, {a.threads} threads, fp32, batch {a.batch} (32x32 images, 100 classes), "
             f"{a.steps} timed steps after {a.warmup}, interleaved", f"- date: {time.strftime('%Y-%m-%d')}", "",
             "| pair | method | bare (ms/step) | switokd (ms/step) | switokd / bare (median, 95% CI) |",
             "|---|---|---:|---:|---|"]
    for pair in a.pairs:
        teacher, student = pair.split(":")
        for method in a.methods:
            tr = make_trainer(method, teacher, student, data, a.batch, a.threads)
            bare = Bare(tr)
            g = torch.Generator().manual_seed(1)
            batches = []
            for _ in range(a.steps + a.warmup):
                idx = torch.randint(0, a.images, (a.batch,), generator=g)
                x = (data.train_x[idx].float() / 255 - 0.5) / 0.25
                batches.append((x, data.train_y[idx], idx))
            times = {"bare": [], "switokd": []}
            for i, (x, y, idx) in enumerate(batches):
                order = ["bare", "switokd"] if i % 2 == 0 else ["switokd", "bare"]
                for v in order:
                    t0 = time.perf_counter()
                    if v == "bare":
                        bare.step(x, y, idx)
                    else:
                        tr._batch_images = idx
                        tr.train_step(x, y)
                    if i >= a.warmup:
                        times[v].append(time.perf_counter() - t0)
            r = ratio_ci([s / b for s, b in zip(times["switokd"], times["bare"])])
            lines.append(f"| {teacher} -> {student} | {method} | {1000 * statistics.median(times['bare']):.1f} | "
                         f"{1000 * statistics.median(times['switokd']):.1f} | {r[0]:.3f} ({r[1]:.3f}-{r[2]:.3f}) |")
            print(lines[-1], flush=True)
    crd = create_feature_loss("crd")
    crd.context = {"labels": torch.arange(a.crd_images) % 100}
    crd.build([torch.Size((2, 64, 1, 1))], [torch.Size((2, 128, 1, 1))])
    bank = sum(b.numel() * b.element_size() for b in crd.buffers())
    q = create_feature_loss("crd", queue=True)
    # The queue's size does not depend on N, but it holds at most N / 10 negatives: size N for its K.
    q.context = {"labels": torch.arange(max(a.crd_images, 10 * q.nce_k)) % 100}
    q.build([torch.Size((2, 64, 1, 1))], [torch.Size((2, 128, 1, 1))])
    queue = sum(b.numel() * b.element_size() for b in q.buffers())
    gather = 2 * a.batch * (crd.k + 1) * crd.feat_dim * 4
    lines += ["", f"CRD's memory for {a.crd_images:,} training images (128-d, fp32): the memory bank's buffers "
              f"{bank / 2**20:.1f} MiB (two N x 128 banks and the class index), the queue's {queue / 2**20:.1f} MiB "
              f"(two K x 128, K = {q.k}), whatever N (from N = 10 K up); the negatives gathered per step at batch {a.batch}: "
              f"{gather / 2**20:.0f} MiB (2 x batch x (K + 1) x 128 x 4 bytes, K = {crd.k})."]
    print(lines[-1])
    if a.out:
        a.out.write_text("\n".join(lines) + "\n")
    return 0


def _machine() -> str:
    from switokd.train.runinfo import machine_summary
    return machine_summary()


if __name__ == "__main__":
    sys.exit(main())
