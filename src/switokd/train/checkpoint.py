"""Checkpoint files: safe loading, atomic writing, and the checks that make a bad file a one-line error.

A checkpoint holds only tensors and plain containers (dicts, lists, numbers, strings), so it is
always read with ``torch.load(weights_only=True)``: a file that asks to build any other object is
refused before anything in it runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import random
import re
import time
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch

CHECKPOINT_FORMAT = "switokd-checkpoint-v2"
# v1 (before mid-epoch checkpoints) holds the same plain data without the loader position:
# it loads, and continues at the start of the epoch after the one it was written at.
ACCEPTED_FORMATS = ("switokd-checkpoint-v1", CHECKPOINT_FORMAT)
# Key -> type every training checkpoint must have.
REQUIRED = {"format": str, "config": dict, "epoch": int, "step": int, "networks": dict, "scaler": dict,
            "switch_totals": dict, "rng": dict, "history": list, "best": dict}


from .. import config as C
from ..errors import CheckpointError, CheckpointWriteError  # noqa: E402  (re-exported)
from ..runs import files as F


def _why_unreadable(e: Exception) -> str:
    text = str(e)
    m = re.search(r"(Trying to load unsupported GLOBAL [^\n]*|Unsupported global: [^\n]*)", text)
    if m:
        what = m.group(1).split("GLOBAL")[-1].split("global:")[-1].strip().rstrip(".")
        return f"refused: it asks to load {what}, which a checkpoint never needs (only tensors and plain " \
               "containers are allowed); nothing in it was run"
    if isinstance(e, __import__("pickle").UnpicklingError):
        return "refused: it is not a plain-tensor checkpoint (a pickle the safe loader cannot read); nothing in it was run"
    if "zip archive" in text or "central directory" in text:
        return "it is truncated or corrupt (not a complete PyTorch zip archive)"
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"it is not a PyTorch checkpoint ({type(e).__name__}{': ' + first[:120] if first else ''})"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with every failure turned into a ``CheckpointError``."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory; give its last.pt (or use --resume {path})")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch.load raises many types on foreign or damaged files
        raise CheckpointError(f"checkpoint {path} cannot be read: {_why_unreadable(e)}") from None


def check_training_checkpoint(ckpt: Any, path: str | Path) -> dict[str, Any]:
    """The structure every training checkpoint has; anything else is a ``CheckpointError`` naming the fault."""
    if not isinstance(ckpt, dict) or ckpt.get("format") not in ACCEPTED_FORMATS:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path} is not a switokd training checkpoint (format {found!r}; expected one of "
                              f"{', '.join(ACCEPTED_FORMATS)})")
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}")
    wrong = [f"{k} is {type(ckpt[k]).__name__}, expected {t.__name__}" for k, t in REQUIRED.items()
             if not isinstance(ckpt[k], t) or (t is int and isinstance(ckpt[k], bool))]
    if wrong:
        raise CheckpointError(f"{path}: malformed checkpoint ({'; '.join(wrong)})")
    for name, net in ckpt["networks"].items():
        if not isinstance(net, dict) or not isinstance(net.get("model"), dict) or \
                not all(isinstance(v, torch.Tensor) for v in net["model"].values()):
            raise CheckpointError(f"{path}: network {name!r} has no state_dict of tensors")
        if net.get("optimizer") is not None and not isinstance(net["optimizer"], dict):
            raise CheckpointError(f"{path}: network {name!r} has a malformed optimizer state")
    if isinstance(ckpt.get("config"), dict):
        ckpt["config"] = C.upgrade_saved_config(ckpt["config"])
    return ckpt


def load_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by the trainer (``last.pt``/``best.pt``), loaded safely and checked."""
    return check_training_checkpoint(load_checkpoint(path), path)


def resolve_resume_path(path: str | Path) -> Path:
    """``--resume`` takes a run directory (its ``last.pt``) or a checkpoint file."""
    p = Path(path)
    if p.is_dir():
        if not (p / F.LAST).is_file():
            raise CheckpointError(f"run directory {p} has no last.pt to resume from")
        return p / F.LAST
    return p


def load_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """A ``.safetensors`` file's tensors (the format holds tensors only: nothing in it can run)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} not found")
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise CheckpointError(f"{path}: reading .safetensors needs the safetensors package: "
                              "pip install 'switokd[export]'") from None
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types on a damaged header or data
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path} cannot be read as safetensors ({first})") from None


def extract_state_dict(path: str | Path, network: str) -> dict[str, torch.Tensor]:
    """A network's weights from a switokd checkpoint, a ``.safetensors`` file or a plain state_dict file (saved
    with ``torch.save``); all three are read without running any code."""
    if Path(path).suffix == ".safetensors":
        return load_safetensors(path)
    ckpt = load_checkpoint(path)
    if isinstance(ckpt, dict) and "networks" in ckpt:
        nets = check_training_checkpoint(ckpt, path)["networks"]
        if network not in nets:
            raise CheckpointError(f"checkpoint {path} has no network {network!r} (it has {sorted(nets)}); "
                                  "set networks.NAME.checkpoint_network to choose one")
        return nets[network]["model"]
    if isinstance(ckpt, dict) and ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return ckpt
    raise CheckpointError(f"{path} is neither a switokd checkpoint nor a state_dict of tensors")


@dataclass
class WeightsReport:
    """What ``load_weights`` did: tensors loaded as they were, adapted (a stem conv's input channels), left
    at their initialisation (not in the file, or of another shape), and the file's tensors it did not use."""

    loaded: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        total = len(self.loaded) + len(self.adapted) + len(self.left)
        parts = [f"{len(self.loaded)} of {total} tensors loaded"]
        if self.adapted:
            parts.append(f"{len(self.adapted)} adapted ({', '.join(self.adapted)})")
        if self.left:
            shown = ", ".join(self.left[:6]) + (f", ... {len(self.left) - 6} more" if len(self.left) > 6 else "")
            parts.append(f"{len(self.left)} left at their initialisation ({shown})")
        if self.unused:
            parts.append(f"{len(self.unused)} of the file's unused")
        return "; ".join(parts) + "".join(f". {n}" for n in self.notes)


def adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """A stem conv's RGB weight ``[O, 3, k, k]`` for ``in_chans`` input channels, by timm's rule: summed over
    the three colours for one channel (on a gray image, which is three equal colour planes, it answers as the
    RGB weight does); for another count, the colours repeated in turn and scaled by 3 / in_chans, which keeps
    the weight's overall scale (exactly the RGB answer on equal planes when in_chans is a multiple of 3)."""
    if weight.shape[1] != 3:
        raise CheckpointError(f"cannot adapt a stem conv of {weight.shape[1]} input channels (only RGB, 3)")
    w = weight.float()
    if in_chans == 1:
        w = w.sum(dim=1, keepdim=True)
    else:
        w = w.repeat(1, -(-in_chans // 3), 1, 1)[:, :in_chans] * (3.0 / in_chans)
    return w.to(weight.dtype)


def load_weights(model: torch.nn.Module, state: Mapping[str, torch.Tensor], what: str,
                 strict: bool = True) -> WeightsReport:
    """Load ``state`` into ``model``: strictly (every tensor present and of its shape, or a one-line error
    naming the first that is not), or not (``strict=False``: a tensor of another shape, such as a new
    classifier head, stays at its initialisation; the stem conv of another input-channel count is adapted by
    ``adapt_input_conv``). A model's ``upgrade_state_dict`` renames an older layout first."""
    upgrade = getattr(model, "upgrade_state_dict", None)
    if upgrade is not None:
        state = upgrade(state)
    own = model.state_dict()
    if strict:
        missing = [k for k in own if k not in state]
        extra = [k for k in state if k not in own]
        shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
                  if k in state and tuple(state[k].shape) != tuple(v.shape)]
        if missing or extra or shapes:
            parts = []
            if missing:
                parts.append(f"{len(missing)} missing (first {missing[0]})")
            if extra:
                parts.append(f"{len(extra)} unexpected (first {extra[0]})")
            if shapes:
                parts.append(f"{len(shapes)} of another shape (first {shapes[0]}, checkpoint vs model)")
            raise CheckpointError(f"{what}: the weights do not fit the model: {'; '.join(parts)} "
                                  "(networks.NAME.checkpoint_strict=false loads what fits)")
        model.load_state_dict(state)
        return WeightsReport(loaded=list(own))
    report, merged = WeightsReport(unused=[k for k in state if k not in own]), dict(own)
    stem = next((k for k, v in own.items() if v.dim() == 4), None)  # the first conv's weight
    for k, v in own.items():
        src = state.get(k)
        if src is None:
            report.left.append(k)
        elif tuple(src.shape) == tuple(v.shape):
            merged[k] = src
            report.loaded.append(k)
        elif k == stem and src.dim() == 4 and src.shape[0] == v.shape[0] and src.shape[2:] == v.shape[2:] \
                and src.shape[1] == 3:
            merged[k] = adapt_input_conv(src, v.shape[1])
            report.adapted.append(f"{k}: 3 -> {v.shape[1]} input channels")
        else:
            report.left.append(k)
            if k == stem and getattr(model, "small_input", False):
                report.notes.append(f"{k}: small images use the CIFAR stem ({tuple(v.shape[2:])} kernel, stride 1); "
                                    f"the file's is {tuple(src.shape[2:])}, an ImageNet stem, left unloaded")
    if not report.loaded and not report.adapted:
        raise CheckpointError(f"{what}: no tensor of the file fits the model (its first: {next(iter(state), 'none')})")
    model.load_state_dict(merged)
    return report


def save_atomic(obj: Any, path: str | Path) -> None:
    """Write to a temporary file, flush it to disk, then rename over ``path``.

    A crash or a failed write (full disk, I/O error, read-only directory) never leaves a
    half-written file at ``path``: the previous checkpoint stays as it was.
    """
    path = Path(path)
    try:
        F.write_atomic(path, lambda f: torch.save(obj, f), sync=True)
    except OSError as e:
        raise CheckpointWriteError(f"cannot write checkpoint {path}: {e.strerror or e}; "
                                   f"the previous checkpoint there (if any) is intact") from None


def rng_state() -> dict[str, Any]:
    """Every RNG the run touches, as tensors and plain numbers."""
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {"torch": torch.get_rng_state(),
                             "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64),
                                        "gauss": gauss}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    py = state.get("python")
    if isinstance(py, dict):
        random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    elif py is not None:  # v1 checkpoints: the plain tuple
        random.setstate(py)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class CheckpointSchedule:
    """When to write a checkpoint inside an epoch: every ``every_steps`` steps and/or every ``every_s`` seconds
    (0 turns either off; epoch ends always write one)."""

    def __init__(self, every_steps: int = 0, every_s: float = 0.0) -> None:
        self.every_steps, self.every_s = every_steps, every_s
        self.last = time.monotonic()

    def due(self, step: int) -> bool:
        if self.every_steps and step % self.every_steps == 0:
            return True
        return bool(self.every_s) and time.monotonic() - self.last >= self.every_s

    def written(self) -> None:
        self.last = time.monotonic()
