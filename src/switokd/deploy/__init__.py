"""A student you can ship: export (ONNX, TorchScript, safetensors), int8 quantization checked on the test split,
a latency benchmark, and prediction on image files."""
from .export import (FORMATS, ONNX_TOLERANCE, ExportError, ModelInfo, export, image_files, load_network,
                     onnx_session, predict, preprocess, read_sidecar, run_onnx, sample_batch)

__all__ = ["FORMATS", "ONNX_TOLERANCE", "ExportError", "ModelInfo", "export", "image_files", "load_network",
           "onnx_session", "predict", "preprocess", "read_sidecar", "run_onnx", "sample_batch"]
