"""Which int8 scheme keeps a student's accuracy: ONNX Runtime static quantization variants, measured.

  python benchmarks/quantization_schemes.py --checkpoint RUN/last.pt [--network student] [--out FILE.md]

For one network of a checkpoint: the fp32 ONNX model and each scheme's int8 model, their top-1 on the whole
test split, file size and one-thread latency (batch 1, median of interleaved repeats) and throughput (batch 256).
`switokd export --quantize int8` uses the first two rows' scheme (switokd/deploy/quantize.py, SCHEME), with the
weights' scale per output channel or per tensor, whichever agrees better with fp32 on held-out training images.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from switokd.deploy import export
from switokd.deploy.bench import BenchModel, bench
from switokd.deploy.export import ModelInfo, onnx_session
from switokd.deploy.quantize import calibration_inputs, eval_split, onnx_accuracy, quantize_onnx
from switokd.train.runinfo import machine_summary


def schemes():
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType
    qdq, qop = QuantFormat.QDQ, QuantFormat.QOperator
    u8, s8 = QuantType.QUInt8, QuantType.QInt8
    return {
        "QDQ, per-channel s8 weights, u8 activations, MinMax": dict(quant_format=qdq, per_channel=True, weight_type=s8, activation_type=u8),
        "QDQ, per-tensor s8 weights, u8 activations, MinMax": dict(quant_format=qdq, per_channel=False, weight_type=s8, activation_type=u8),
        "QDQ, per-channel s8 weights, s8 activations, MinMax": dict(quant_format=qdq, per_channel=True, weight_type=s8, activation_type=s8),
        "QDQ, per-channel s8 weights, u8 activations, Entropy": dict(quant_format=qdq, per_channel=True, weight_type=s8, activation_type=u8, calibrate_method=CalibrationMethod.Entropy),
        "QDQ, per-channel s8 weights, u8 activations, Percentile 99.999": dict(quant_format=qdq, per_channel=True, weight_type=s8, activation_type=u8, calibrate_method=CalibrationMethod.Percentile),
        "QOperator, per-channel s8 weights, u8 activations, MinMax": dict(quant_format=qop, per_channel=True, weight_type=s8, activation_type=u8),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--network", default="student")
    p.add_argument("--calibration-images", type=int, default=512)
    p.add_argument("--out")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        export(args.checkpoint, args.network, "onnx", fp32)
        info = ModelInfo(**json.loads(Path(str(fp32) + ".json").read_text()))
        calib, source = calibration_inputs(args.checkpoint, info, args.calibration_images, None)
        x, y = eval_split(args.checkpoint, info, 0, None)
        models = [("fp32", fp32)]
        for i, (name, scheme) in enumerate(schemes().items()):
            path = Path(tmp) / f"int8_{i}.onnx"
            t = time.perf_counter()
            quantize_onnx(fp32, path, calib, **scheme)
            print(f"{name}: quantized in {time.perf_counter() - t:.1f}s", file=sys.stderr)
            models.append((name, path))
        accs = {name: onnx_accuracy(onnx_session(path), x, y) for name, path in models}
        timings = bench([BenchModel.onnx(path, name=name) for name, path in models], threads=1, batches=(1, 256))
        for (name, path), t in zip(models, timings):
            rows.append(f"| {name} | {accs[name]:.2f} | {path.stat().st_size / 1024:.0f} KiB | "
                        f"{t['latency_ms'][1]['median']:.3f} | {t['throughput'][256]:,.0f} |")
    text = "\n".join([
        f"# int8 schemes for {info.model} ({args.network} of {args.checkpoint})", "",
        f"- command: `python benchmarks/quantization_schemes.py --checkpoint {args.checkpoint} --network {args.network}`",
        f"- machine: {machine_summary(threads=1)}, ONNX Runtime CPU, 1 thread",
        f"- calibration: {source}; accuracy: top-1 on all {len(y)} test images", "",
        "| model | test acc (%) | file | latency, batch 1 (ms, median) | throughput, batch 256 (img/s) |",
        "|---|---:|---:|---:|---:|", *rows, ""])
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
