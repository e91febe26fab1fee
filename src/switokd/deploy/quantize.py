"""int8 ONNX models: ONNX Runtime's static quantization, calibrated on real images and checked on the test split.

The scheme (``SCHEME``): QDQ format (QuantizeLinear/DequantizeLinear pairs around float operators, which ONNX
Runtime fuses into int8 kernels and any ONNX runtime can still read), int8 symmetric weights, uint8 asymmetric
activations per tensor (a ReLU's non-negative range then uses all 256 levels), ranges from the calibration
images' min/max, after ONNX Runtime's pre-processing (shape inference, graph optimisation). The weights' scale is
per output channel or per tensor, whichever agrees better with the fp32 model's top-1 on training images held
out from calibration (never the test split): on the demo's student per-channel weights lost 1.4 points of
top-1 and per-tensor weights 0.4 (benchmarks/results/int8-schemes.md), while on other students per-channel
was as good or better, so neither is right for every network.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .export import ExportError, ModelInfo, onnx_session, preprocess, run_onnx

SCHEME = {"type": "int8", "format": "QDQ", "weights": "int8, symmetric", "activations": "uint8, asymmetric, per tensor",
          "calibration_method": "MinMax", "preprocessing": "onnxruntime quant_pre_process (shape inference, "
          "graph optimisation)"}
GRANULARITIES = {"per output channel": True, "per tensor": False}  # the weights' scale: per_channel=...
SELECTION_IMAGES = 1000  # training images, held out from calibration, on which the granularity is chosen


from ..errors import AccuracyDropError  # noqa: E402  (re-exported)


def _require_quantization():
    try:
        from onnxruntime import quantization  # noqa: F401
    except ImportError:
        raise ExportError("int8 export needs onnxruntime's quantization tools: pip install 'switokd[export]'") from None


def calibration_inputs(checkpoint: str | Path, info: ModelInfo, n: int, directory: str | Path | None,
                       data_dir: str | None = None, offset: float = 0.0) -> tuple[torch.Tensor, str]:
    """Calibration inputs, normalised as the network saw its data in training (without random crops and
    flips): ``n`` training images of the checkpoint's data set, evenly spaced over the split (``offset``, a
    fraction of the spacing, shifts them: 0.5 gives images between the calibration ones), or the image
    files of ``directory`` (all of them, or the first ``n``), decoded as ``predict`` does."""
    if n < 1:
        raise ExportError(f"--calibration-images must be >= 1, got {n}")
    if directory is not None:
        from .export import image_files
        files = image_files([directory])[:n]
        return preprocess(files, info), f"{len(files)} image files of {directory}"
    data = _splits(checkpoint, data_dir, test=False)
    total = len(data.train_x)
    k = min(n, total)
    idx = ((torch.arange(k) + offset) * total / k).long().clamp_max(total - 1)
    from ..data.transforms import Normalize
    return Normalize(info.mean, info.std)(data.train_x[idx]), f"{k} training images of {data.name}"


def _splits(checkpoint: str | Path, data_dir: str | None, test: bool, limit_test: int = 0):
    from .. import config as C
    from ..train.checkpoint import load_training_checkpoint
    from ..data import DatasetError, load_dataset

    d = C.from_dict(load_training_checkpoint(checkpoint)["config"]).data
    root = data_dir or d.dir
    try:
        return load_dataset(d.name, root, d.image_size, 0, limit_test if test else 1, d.channels)
    except DatasetError as e:
        raise ExportError(f"int8 export needs the {'test' if test else 'training'} split of {d.name} to "
                          f"{'check' if test else 'calibrate'} on: {e} (or give --data-dir DIR)") from None


def eval_split(checkpoint: str | Path, info: ModelInfo, limit: int, data_dir: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The checkpoint's test split (the first ``limit`` images, 0: all), normalised as in evaluation."""
    from ..data.transforms import Normalize
    data = _splits(checkpoint, data_dir, test=True, limit_test=limit)
    return Normalize(info.mean, info.std)(data.test_x), data.test_y


def onnx_accuracy(session, x: torch.Tensor, y: torch.Tensor, batch: int = 500) -> float:
    """Top-1 accuracy (%) of an ONNX Runtime session."""
    correct = sum(int((run_onnx(session, x[i:i + batch]).argmax(1) == y[i:i + batch]).sum())
                  for i in range(0, len(x), batch))
    return 100.0 * correct / max(len(x), 1)


class _Reader:
    """ONNX Runtime's CalibrationDataReader over a tensor of inputs, in batches."""

    def __init__(self, name: str, x: torch.Tensor, batch: int = 64) -> None:
        self.items = iter([{name: x[i:i + batch].numpy().astype(np.float32)} for i in range(0, len(x), batch)])

    def get_next(self):
        return next(self.items, None)


def quantize_onnx(fp32: Path, out: Path, calibration: torch.Tensor, **scheme: Any) -> None:
    """Write ``out``, the int8 version of the float ONNX model ``fp32``, calibrated on ``calibration``, with
    ``SCHEME`` (``scheme`` overrides quantize_static's arguments, ``per_channel`` among them)."""
    _require_quantization()
    import logging
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    args = dict(quant_format=QuantFormat.QDQ, per_channel=False, weight_type=QuantType.QInt8,
                activation_type=QuantType.QUInt8, calibrate_method=CalibrationMethod.MinMax)
    args.update(scheme)
    root = logging.getLogger()
    level = root.level
    # The quantizer logs a warning per 1-D weight (BatchNorm scales) it cannot quantize per channel: not ours to show.
    root.setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            pre = Path(tmp) / "pre.onnx"
            quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=False)
            name = onnx_session(pre).get_inputs()[0].name
            quantize_static(str(pre), str(out), _Reader(name, calibration), **args)
    finally:
        root.setLevel(level)


def agreement(a, b, x: torch.Tensor, batch: int = 500) -> float:
    """The share of inputs on which two ONNX Runtime sessions give the same top-1 class."""
    same = sum(int((run_onnx(a, x[i:i + batch]).argmax(1) == run_onnx(b, x[i:i + batch]).argmax(1)).sum())
               for i in range(0, len(x), batch))
    return same / max(len(x), 1)


def export_int8(checkpoint: str | Path, network: str, out: str | Path, *, calibration_images_n: int = 512,
                calibration_dir: str | Path | None = None, eval_images: int = 0, max_drop: float = 1.0,
                data_dir: str | None = None) -> dict[str, Any]:
    """Export one network as an int8 ONNX model checked against its fp32 ONNX model on the test split.

    Raises ``AccuracyDropError`` (and keeps no int8 file) when int8 loses more than ``max_drop`` points of top-1.
    """
    import json
    from dataclasses import asdict

    from .export import export

    out = Path(out)
    if eval_images < 0:
        raise ExportError(f"--eval-images must be >= 0 (0: the whole test split), got {eval_images}")
    _require_quantization()
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        checked = export(checkpoint, network, "onnx", fp32)  # the float model, checked against PyTorch
        info = ModelInfo(**json.loads(Path(str(fp32) + ".json").read_text()))
        calib, source = calibration_inputs(checkpoint, info, calibration_images_n, calibration_dir, data_dir)
        # The weights' granularity is chosen on images the calibration did not see (a calibration folder is
        # all there may be of the data: then on it), by agreement with the fp32 model: no test image is used.
        if calibration_dir is None:
            held_out, _ = calibration_inputs(checkpoint, info, SELECTION_IMAGES, None, data_dir, offset=0.5)
        else:
            held_out = calib
        fp32_session = onnx_session(fp32)
        candidates = {}
        for name, per_channel in GRANULARITIES.items():
            path = Path(tmp) / f"int8-{per_channel}.onnx"
            quantize_onnx(fp32, path, calib, per_channel=per_channel)
            candidates[name] = (agreement(fp32_session, onnx_session(path), held_out), path)
        chosen = max(candidates, key=lambda k: candidates[k][0])  # ties: per output channel (listed first)
        int8 = candidates[chosen][1]
        x, y = eval_split(checkpoint, info, eval_images, data_dir)
        acc_fp32 = onnx_accuracy(fp32_session, x, y)
        acc_int8 = onnx_accuracy(onnx_session(int8), x, y)
        choice = {"weights_scale": chosen, "selection_images": len(held_out),
                  "top1_agreement_with_fp32": {k: v[0] for k, v in candidates.items()}}
        result = {"out": str(out), "fp32_acc": acc_fp32, "int8_acc": acc_int8, "eval_images": len(y),
                  "calibration": source, "fp32_bytes": fp32.stat().st_size, "int8_bytes": int8.stat().st_size,
                  "max_abs_diff_fp32": checked["max_abs_diff"], **choice}
        if acc_fp32 - acc_int8 > max_drop:
            raise AccuracyDropError(f"int8 loses {acc_fp32 - acc_int8:.2f} points (fp32 {acc_fp32:.2f}%, int8 "
                                    f"{acc_int8:.2f}% on {len(y)} test images), more than --max-drop {max_drop:g}; "
                                    "no int8 file was written")
        shutil.move(str(int8), out)
    info.format = "onnx"
    sidecar = Path(str(out) + ".json")
    side = asdict(info)
    side["quantization"] = {**SCHEME, "weights": f"int8, symmetric, {chosen}", **choice,
                            "calibration_source": source, "calibration_images": len(calib), "test_images": len(y),
                            "fp32_acc": acc_fp32, "int8_acc": acc_int8}
    sidecar.write_text(json.dumps(side, indent=2))
    result["sidecar"] = str(sidecar)
    return result


__all__: Sequence[str] = ["SCHEME", "AccuracyDropError", "export_int8", "quantize_onnx", "onnx_accuracy", "agreement",
                          "calibration_inputs", "eval_split"]
