"""A student you can ship: export a trained network (ONNX, TorchScript, torch.export's .pt2, safetensors) and
predict on image files. Each format is one entry of ``EXPORTERS``: a function that writes the file and returns
the logits of the model read back from it, so that every format is checked against PyTorch the same way.

Every export writes a JSON sidecar beside the model (``FILE.json``) with what a user needs to feed it:
the model name, input channels and size, the normalisation mean/std and the class names. The input is
a float32 N x C x H x W batch of images scaled to [0, 1] and normalised, ``(x / 255 - mean) / std``;
the batch dimension is dynamic.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..version import __version__
from ..train.checkpoint import CheckpointError, load_training_checkpoint, load_weights
from ..data.readers import IMAGE_SUFFIXES, DatasetError, load_image
from ..data.transforms import Normalize

from ..registry import Registry

# name -> fn(model, info, out, example) -> logits of the model read back from ``out`` (the check)
EXPORTERS: Registry = Registry("export format")
ONNX_TOLERANCE = 1e-4  # max abs logit difference allowed between ONNX Runtime and PyTorch (fp32)


from ..errors import ExportError  # noqa: E402  (re-exported)


@dataclass
class ModelInfo:
    """What a deployed network needs besides its weights; written as the export's sidecar."""

    model: str
    network: str
    num_classes: int
    in_chans: int
    image_size: int
    mean: list[float]
    std: list[float]
    classes: list[str]
    source: str = ""
    model_args: dict = field(default_factory=dict)  # the factory's keyword arguments (networks.NAME.model_args)
    format: str = "pytorch"
    switokd_version: str = __version__
    input: str = "float32 N x C x H x W, (x / 255 - mean) / std per channel; N is dynamic"
    output: str = "logits N x num_classes (softmax for probabilities)"


def _shipped_module(method: str, checkpoint: str | Path) -> str | None:
    """The owned module that ships in a network's place (``Method.shipped_module``), read from the method's
    class, for a checkpoint that does not record it: one with method modules cannot be exported right without
    knowing it."""
    from ..methods import resolve_method
    try:
        return getattr(resolve_method(method), "shipped_module", None)
    except (KeyError, ImportError) as e:
        raise ExportError(f"{checkpoint} was trained by method {method!r}, which owns modules of this network, and "
                          f"it cannot be loaded here ({e.args[0] if e.args else e}): make it importable so export "
                          "knows which model ships") from None


def load_network(checkpoint: str | Path, network: str) -> tuple[nn.Module, ModelInfo]:
    """One trained network of a switokd checkpoint, in eval mode, with its input description."""
    from .. import config as C
    from ..models.branches import BranchNet, build_backbone

    ckpt = load_training_checkpoint(checkpoint)
    nets = ckpt["networks"]
    if network not in nets:
        raise ExportError(f"{checkpoint} has no network {network!r}; it has {', '.join(sorted(nets))} (--network)")
    cfg = C.from_dict(ckpt["config"])
    net_cfg = cfg.network(network)
    if nets[network].get("optimizer") is None:
        raise ExportError(f"network {network!r} of {checkpoint} is frozen (the {cfg.method.name} method's fixed "
                          f"teacher, loaded from {net_cfg.checkpoint}); export it from its own run instead")
    data = ckpt.get("data")
    if data is None:  # a v1 checkpoint: read the data set's shape from its files
        from ..data import load_dataset
        d = load_dataset(cfg.data.name, cfg.data.dir, cfg.data.image_size, 0, 1, cfg.data.channels)
        data = {"num_classes": d.num_classes, "in_chans": d.in_chans, "image_size": d.image_size,
                "mean": list(d.mean), "std": list(d.std), "classes": d.class_names}
    try:
        model = build_backbone(net_cfg, data["num_classes"], data["in_chans"], data["image_size"])
    except (KeyError, ValueError) as e:
        raise ExportError(f"cannot build {net_cfg.model!r} for network {network!r}: {e.args[0]}") from None
    load_weights(model, nets[network]["model"], f"{checkpoint}, network {network!r}")
    owned = ckpt.get("method_modules", {}).get(network, {})
    if "shipped_modules" in ckpt:  # recorded at training time (Method.shipped_module)
        ships = ckpt["shipped_modules"].get(network)
    else:  # a checkpoint written before that: the method's class says
        ships = _shipped_module(cfg.method.name, checkpoint) if owned else None
    if ships:  # a module the method owns ships in the network's place (PCL's temporal mean): Method.shipped
        load_weights(model, {k[len(ships) + 1:]: v for k, v in owned.items() if k.startswith(ships + ".")},
                     f"{checkpoint}, the {cfg.method.name} method's {ships!r} of network {network!r}")
    if isinstance(model, BranchNet):  # ship the deployed branch as the plain model, no wrapper
        model = model.deployed()
    model.eval()
    info = ModelInfo(net_cfg.model, network, data["num_classes"], data["in_chans"], data["image_size"],
                     [float(v) for v in data["mean"]], [float(v) for v in data["std"]], list(data["classes"]),
                     source=str(checkpoint), model_args=dict(net_cfg.model_args))
    return model, info


def sample_batch(checkpoint: str | Path, info: ModelInfo, n: int = 64) -> tuple[torch.Tensor, str]:
    """A real batch from the run's test split (preprocessed as in evaluation), or random inputs if the data is gone."""
    from .. import config as C
    from ..data import load_dataset

    cfg = C.from_dict(load_training_checkpoint(checkpoint)["config"])
    try:
        d = load_dataset(cfg.data.name, cfg.data.dir, cfg.data.image_size, 0, n, cfg.data.channels)
        x = Normalize(info.mean, info.std)(d.test_x[:n])
        return x, f"{len(x)} test images of {cfg.data.name}"
    except DatasetError:
        g = torch.Generator().manual_seed(0)
        return torch.randn(n, info.in_chans, info.image_size, info.image_size, generator=g), \
            f"{n} random inputs ({cfg.data.name} is not on this machine)"


def export_onnx(model: nn.Module, info: ModelInfo, out: Path, example: torch.Tensor) -> None:
    try:
        import onnxscript  # noqa: F401  (the exporter needs it)
    except ImportError:
        raise ExportError("ONNX export needs onnx and onnxscript: pip install 'switokd[export]'") from None
    big = sum(p.numel() * p.element_size() for p in model.parameters()) > 1.5 * 2**30
    with warnings.catch_warnings(), _quiet_exporter():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example[:2],), str(out), dynamo=True, input_names=["images"], output_names=["logits"],
                          dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1)}}, external_data=big, verbose=False)


class _quiet_exporter:
    """The ONNX exporter logs its stages to stdout and warnings to the logging system; keep the CLI's output ours."""

    def __enter__(self):
        import contextlib
        import io
        import logging
        self._log = logging.getLogger("torch.onnx")
        self._level = self._log.level
        self._log.setLevel(logging.ERROR)
        self._out = contextlib.redirect_stdout(io.StringIO())
        self._out.__enter__()

    def __exit__(self, *exc):
        self._out.__exit__(*exc)
        self._log.setLevel(self._level)


def export_torchscript(model: nn.Module, out: Path, example: torch.Tensor) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example[:2])
        traced.save(str(out))


def export_pt2(model: nn.Module, out: Path, example: torch.Tensor) -> None:
    """torch.export's ExportedProgram (``.pt2``), with a dynamic batch dimension: TorchScript's successor."""
    ep = torch.export.export(model, (example[:2],), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    torch.export.save(ep, str(out))


def export_safetensors(model: nn.Module, info: ModelInfo, out: Path, example: torch.Tensor) -> torch.Tensor:
    """The network's weights as safetensors; returns the logits of a fresh model loaded from the file (the check)."""
    try:
        from safetensors.torch import save_file
    except ImportError:
        raise ExportError("safetensors export needs the safetensors package: pip install 'switokd[export]'") from None
    from ..train.checkpoint import load_safetensors
    from ..models import create_model

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out), metadata={"model": info.model, "network": info.network, "format": "switokd"})
    fresh = create_model(info.model, info.num_classes, info.in_chans, info.image_size, **info.model_args)
    load_weights(fresh, load_safetensors(out), str(out))
    with torch.no_grad():
        return fresh.eval()(example)


@EXPORTERS.register("onnx")
def _onnx(model: nn.Module, info: ModelInfo, out: Path, x: torch.Tensor) -> torch.Tensor:
    export_onnx(model, info, out, x)
    return run_onnx(onnx_session(out), x)


@EXPORTERS.register("torchscript")
def _torchscript(model: nn.Module, info: ModelInfo, out: Path, x: torch.Tensor) -> torch.Tensor:
    export_torchscript(model, out, x)
    with warnings.catch_warnings():  # torch.jit.load is deprecated in favour of torch.export (the pt2 format)
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(out))(x).detach()


@EXPORTERS.register("pt2")
def _pt2(model: nn.Module, info: ModelInfo, out: Path, x: torch.Tensor) -> torch.Tensor:
    export_pt2(model, out, x)
    with torch.no_grad():
        return torch.export.load(str(out)).module()(x).detach()


EXPORTERS.register("safetensors")(export_safetensors)
FORMATS = tuple(EXPORTERS.names())


def onnx_session(path: str | Path):
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportError("running an ONNX model needs onnxruntime: pip install 'switokd[export]'") from None
    try:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for bad files
        raise ExportError(f"{path} is not a loadable ONNX model ({str(e).splitlines()[0][:200]})") from None


def run_onnx(session, x: torch.Tensor) -> torch.Tensor:
    name = session.get_inputs()[0].name
    return torch.from_numpy(session.run(None, {name: x.numpy().astype(np.float32)})[0])


def export(checkpoint: str | Path, network: str, fmt: str, out: str | Path) -> dict[str, Any]:
    """Export one network; check it against PyTorch on a real batch; write the sidecar. Returns what was checked."""
    if fmt not in EXPORTERS:
        raise ExportError(f"unknown format {fmt!r}; use one of {', '.join(EXPORTERS.names())}")
    out = Path(out)
    if out.parent and not out.parent.is_dir():
        raise ExportError(f"output directory {out.parent} does not exist")
    model, info = load_network(checkpoint, network)
    x, what = sample_batch(checkpoint, info)
    with torch.no_grad():
        ref = model(x)
    got = EXPORTERS.get(fmt)(model, info, out, x)
    diff = (got - ref).abs().max().item()
    if fmt in ("onnx", "pt2") and not diff <= ONNX_TOLERANCE:
        out.unlink(missing_ok=True)
        raise ExportError(f"the {fmt} model's logits differ from PyTorch's by {diff:.2e} (> {ONNX_TOLERANCE:g}); "
                          "nothing was kept")
    info.format = fmt
    sidecar = Path(str(out) + ".json")
    sidecar.write_text(json.dumps(asdict(info), indent=2))
    agree = (got.argmax(1) == ref.argmax(1)).float().mean().item()
    return {"out": str(out), "sidecar": str(sidecar), "checked_on": what, "max_abs_diff": diff, "top1_agreement": agree,
            "batch": len(x)}


# ----------------------------------------------------------------------------- prediction


def image_files(paths: Sequence[str | Path]) -> list[Path]:
    """The image files named, and those inside the folders named (recursively, sorted)."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ExportError(f"{p}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder")
            files += found
        elif p.is_file():
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                raise ExportError(f"{p} is not an image file (expected {', '.join(sorted(IMAGE_SUFFIXES))})")
            files.append(p)
        else:
            raise ExportError(f"{p} not found")
    return files


def preprocess(files: Sequence[Path], info: ModelInfo) -> torch.Tensor:
    """Evaluation preprocessing: decode as gray or RGB, resize to the model's size, normalise."""
    mode = "L" if info.in_chans == 1 else "RGB"
    arrays = [load_image(f, mode, info.image_size) for f in files]
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    return Normalize(info.mean, info.std)(x)


def read_sidecar(onnx_path: str | Path) -> ModelInfo:
    path = Path(str(onnx_path) + ".json")
    try:
        data = json.loads(path.read_text())
        return ModelInfo(**{k: data[k] for k in ModelInfo.__dataclass_fields__ if k in data})
    except FileNotFoundError:
        raise ExportError(f"{path} not found: an exported model needs its sidecar (written by switokd export)") from None
    except (ValueError, TypeError) as e:
        raise ExportError(f"{path} is not a valid sidecar ({e})") from None


def predict(files: Sequence[Path], *, checkpoint: str | Path | None = None, network: str = "student",
            onnx: str | Path | None = None, topk: int = 5, batch_size: int = 256) -> list[dict[str, Any]]:
    """Top-k classes and probabilities for each image, through a checkpoint's network or an exported ONNX model."""
    if (checkpoint is None) == (onnx is None):
        raise ExportError("give either --checkpoint (with --network) or --onnx")
    if topk < 1:
        raise ExportError(f"--topk must be >= 1, got {topk}")
    if onnx is not None:
        info, session = read_sidecar(onnx), onnx_session(onnx)
        forward = lambda x: run_onnx(session, x)  # noqa: E731
    else:
        model, info = load_network(checkpoint, network)  # type: ignore[arg-type]
        forward = lambda x: model(x)  # noqa: E731
    k = min(topk, info.num_classes)
    results = []
    with torch.no_grad():
        for i in range(0, len(files), batch_size):
            chunk = list(files[i:i + batch_size])
            probs = torch.softmax(forward(preprocess(chunk, info)).float(), dim=1)
            p, idx = probs.topk(k, dim=1)
            for f, pr, ix in zip(chunk, p.tolist(), idx.tolist()):
                results.append({"file": str(f), "top": [{"class": info.classes[j], "index": j, "prob": v}
                                                        for j, v in zip(ix, pr)]})
    return results


