"""``switokd bench``: what a shipped model costs per image on this CPU.

Each model (an ONNX file run by ONNX Runtime, or a checkpoint's network run by PyTorch eager for comparison)
is warmed up, then timed call by call; the models take turns within every round, so that a slow moment of a
shared machine falls on all of them alike and the ratios taken in one run are fair. Batch 1 gives the latency
(median and 90th percentile of the calls); a larger batch gives the throughput (images over the median call).
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .export import ExportError, load_network, read_sidecar


@dataclass
class BenchModel:
    """One model to time: a name, what it is, its input shape (C, H, W) and its size on disk."""

    name: str
    kind: str  # "onnx" or "pytorch"
    source: str
    input_shape: tuple[int, int, int]
    size_bytes: int
    make_runner: Callable[[int], Callable[[np.ndarray], Any]] = field(repr=False)  # threads -> run(batch)

    @classmethod
    def onnx(cls, path: str | Path, name: str | None = None) -> "BenchModel":
        path = Path(path)
        if not path.is_file():
            raise ExportError(f"{path} not found")
        shape = _onnx_input_shape(path)

        def make(threads: int):
            import onnxruntime as ort
            opts = ort.SessionOptions()
            opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
            try:
                sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            except Exception as e:
                raise ExportError(f"{path} is not a loadable ONNX model ({str(e).splitlines()[0][:200]})") from None
            inp = sess.get_inputs()[0].name
            return lambda x: sess.run(None, {inp: x})

        return cls(name or path.name, "onnx", str(path), shape, path.stat().st_size, make)

    @classmethod
    def pytorch(cls, checkpoint: str | Path, network: str) -> "BenchModel":
        model, info = load_network(checkpoint, network)
        size = sum(t.numel() * t.element_size() for t in model.state_dict().values())

        def make(threads: int):
            torch.set_num_threads(threads)

            def run(x: np.ndarray):
                with torch.inference_mode():
                    return model(torch.from_numpy(x))
            return run

        return cls(f"pytorch eager ({network} of {Path(checkpoint).name})", "pytorch", str(checkpoint),
                   (info.in_chans, info.image_size, info.image_size), size, make)


def _onnx_input_shape(path: Path) -> tuple[int, int, int]:
    """(C, H, W) from the sidecar, else from the model's input (its batch dimension left out)."""
    try:
        info = read_sidecar(path)
        return info.in_chans, info.image_size, info.image_size
    except ExportError:
        pass
    try:
        import onnx
        dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
        c, h, w = (d.dim_value for d in dims[1:4])
    except Exception as e:
        raise ExportError(f"{path}: no sidecar ({path}.json) and no readable N x C x H x W input "
                          f"({str(e).splitlines()[0][:120] if str(e) else type(e).__name__})") from None
    if not (c and h and w):
        raise ExportError(f"{path}: its input shape is not fixed beyond the batch; give it a sidecar ({path}.json)")
    return c, h, w


def _time_calls(run: Callable[[np.ndarray], Any], x: np.ndarray, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        run(x)
        out.append(time.perf_counter() - t)
    return out


def bench(models: Sequence[BenchModel], threads: int = 1, batches: Sequence[int] = (1, 256),
          seconds: float = 3.0, round_s: float = 0.05) -> list[dict[str, Any]]:
    """Time every model at every batch size, interleaved; returns per model its latency (ms: median, p90) and
    throughput (images/s) per batch size. ``seconds`` is roughly the timed time per model and batch size."""
    if threads < 1:
        raise ExportError(f"--threads must be >= 1, got {threads}")
    if not batches or any(b < 1 for b in batches):
        raise ExportError(f"--batch sizes must be >= 1, got {list(batches)}")
    runners = [m.make_runner(threads) for m in models]
    rng = np.random.default_rng(0)
    results: list[dict[str, Any]] = [{"latency_ms": {}, "throughput": {}} for _ in models]
    for b in batches:
        inputs = [rng.standard_normal((b, *m.input_shape), dtype=np.float32) for m in models]
        reps = []
        for run, x in zip(runners, inputs):  # warm up, and find how many calls make a round of ~round_s
            warm = _time_calls(run, x, 3)
            t_end = time.perf_counter() + min(0.5, 20 * max(warm))
            while time.perf_counter() < t_end:
                warm += _time_calls(run, x, 1)
            reps.append(max(1, int(round_s / statistics.median(warm))))
        rounds = max(5, int(seconds / round_s))
        samples: list[list[float]] = [[] for _ in models]
        for _ in range(rounds):
            for i, (run, x) in enumerate(zip(runners, inputs)):
                samples[i] += _time_calls(run, x, reps[i])
        for i, s in enumerate(samples):
            med = statistics.median(s)
            results[i]["latency_ms"][b] = {"median": 1e3 * med, "p90": 1e3 * float(np.percentile(s, 90)),
                                           "calls": len(s)}
            results[i]["throughput"][b] = b / med
    return results


def bench_table(models: Sequence[BenchModel], results: Sequence[dict[str, Any]], batches: Sequence[int],
                threads: int) -> list[str]:
    """A Markdown table: per model, file size, input shape, batch-1 latency and large-batch throughput."""
    small, large = min(batches), max(batches)
    head = f"| model | size | input | latency, batch {small} (median / p90) |"
    rule = "|---|---:|---|---:|"
    if large != small:
        head += f" throughput, batch {large} |"
        rule += "---:|"
    rows = [head, rule]
    for m, r in zip(models, results):
        lat = r["latency_ms"][small]
        size = f"{m.size_bytes / 1024:,.0f} KiB" + (" (weights)" if m.kind == "pytorch" else "")
        row = (f"| {m.name} | {size} | {'x'.join(map(str, m.input_shape))} | "
               f"{lat['median']:.3f} / {lat['p90']:.3f} ms |")
        if large != small:
            row += f" {r['throughput'][large]:,.0f} img/s |"
        rows.append(row)
    rows.append(f"({threads} thread{'s' if threads > 1 else ''}; models interleaved round by round; "
                f"{os.cpu_count()} CPUs on this machine)")
    return rows


__all__ = ["BenchModel", "bench", "bench_table"]
