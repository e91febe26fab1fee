"""Intermediate features of any model, by module path (as torchdistill's forward hooks take them).

A path names a submodule the way ``model.get_submodule`` does (``layer2``, ``layer3.1.bn2``, ``features.13``);
its **output** is recorded at every forward. ``PATH:input`` records the module's **input** instead, taken by a
forward pre-hook before the module runs, so that an in-place module (``ReLU(inplace=True)``, as torchvision's
ResNets use) cannot have rectified it yet: ``layer4.1.relu:input`` is the last block's pre-activation (its
``relu`` runs twice, and the last call, after the residual sum, is the one kept). Our own families also name
their stages: ``stem``, ``stage1`` .. ``stageN``, ``pool``, ``stageK:pre`` (the stage's output before its
last activation) and, on WRNs and ResNets, ``stageK:act`` (the stage as the next one sees it, activated), so
that one config works for wrn, resnet_cifar, mobilenet and the torchvision-named ResNets. A recorded output that
a later module changes in place (an in-place ReLU after a BatchNorm) is an error at ``pop()``, naming the path.

Example:
    >>> import torch
    >>> from switokd.models import create_model
    >>> from switokd.models.features import FeatureTap
    >>> net = create_model("resnet20", 10, 3, 32)
    >>> with FeatureTap(net, ["stage2", "pool"]) as tap:
    ...     logits = net(torch.randn(2, 3, 32, 32))
    ...     feats = tap.pop()
    >>> tuple(feats["stage2"].shape), tuple(feats["pool"].shape)
    ((2, 32, 16, 16), (2, 64, 1, 1))
"""
from __future__ import annotations

import difflib
from typing import Any, Mapping, Sequence

from torch import Tensor, nn

from ..errors import ConfigError

INPUT = ":input"


def stage_paths(model: nn.Module) -> dict[str, str]:
    """A model's stage names (``stem``, ``stage1``.., ``pool``, ``stageK:pre``, ``stageK:act``) -> module paths;
    {} if it names none."""
    return dict(getattr(model, "feature_stages", None) or {})


def resolve_path(model: nn.Module, path: str, network: str = "model") -> tuple[nn.Module, bool]:
    """The submodule ``path`` names (a stage name, a module path, either with ``:input``) and whether its input
    is asked for; an unknown path is a ``ConfigError`` naming the network, the path and the nearest names."""
    stages = stage_paths(model)
    real = stages.get(path, path)
    want_input = real.endswith(INPUT)
    name = real[: -len(INPUT)] if want_input else real
    try:
        module = model.get_submodule(name) if name else model
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n] + list(stages)
        near = difflib.get_close_matches(name, names, n=3, cutoff=0.5) or names[:3]
        raise ConfigError(f"network {network!r} has no module {path!r}; nearest: {', '.join(near)}") from None
    return module, want_input


class FeatureTap:
    """Forward hooks on a model's modules by path; ``pop()`` hands over what the last forward recorded (and keeps
    nothing past it). Hooks add no host synchronisation: they keep references, and clone only an in-place
    module's input.

    Args:
        model: any ``nn.Module`` (torchvision, timm, Hugging Face, yours); a ``DistributedDataParallel`` wrapper
            works too (the hooks sit on the inner module).
        paths: module paths or stage names, each optionally ending in ``:input``.
        network: the network's name, for errors.
    """

    def __init__(self, model: nn.Module, paths: Sequence[str], network: str = "model") -> None:
        inner = getattr(model, "module", model) if isinstance(model, nn.parallel.DistributedDataParallel) else model
        self.paths = list(dict.fromkeys(paths))
        self.network = network
        self.store: dict[str, Tensor] = {}
        self.versions: dict[str, int] = {}  # each recorded output's version counter, to catch in-place changes
        self.handles: list[Any] = []
        for path in self.paths:
            module, want_input = resolve_path(inner, path, network)
            if want_input:
                inplace = bool(getattr(module, "inplace", False))
                self.handles.append(module.register_forward_pre_hook(self._pre(path, inplace)))
            else:
                self.handles.append(module.register_forward_hook(self._post(path)))

    def _pre(self, path: str, inplace: bool):
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0]
            self.store[path] = x.clone() if inplace else x  # an in-place module would rectify it next
        return hook

    def _post(self, path: str):
        def hook(module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
            x = out[0] if isinstance(out, (tuple, list)) else out
            self.store[path] = x
            if isinstance(x, Tensor) and not x.is_inference():  # dicts, model outputs: no version to check
                self.versions[path] = x._version
        return hook

    def pop(self) -> dict[str, Tensor]:
        """What the last forward recorded, by path; the tap holds nothing after it. A recorded output that a later
        module changed in place (an in-place ReLU after a BatchNorm) is an error naming the path: it no longer
        holds what the module returned, and ``NEXT:input`` of that in-place module does."""
        out, versions, self.store, self.versions = self.store, self.versions, {}, {}
        for path, v in versions.items():
            if out[path]._version != v:
                raise ValueError(f"network {self.network!r}: the output of {path!r} was changed in place after it was "
                                 "recorded (an in-place module such as ReLU(inplace=True) follows it, or an in-place "
                                 "op in its parent's forward); record that module's input instead, as "
                                 "'<its path>:input', or another module's output")
        return out

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles, self.store, self.versions = [], {}, {}

    def __enter__(self) -> "FeatureTap":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def name_stages(model: nn.Module, stages: Mapping[str, str]) -> nn.Module:
    """Attach stage names to ``model`` (``feature_stages``) and return it."""
    model.feature_stages = dict(stages)  # type: ignore[assignment]
    return model


__all__ = ["FeatureTap", "resolve_path", "stage_paths", "name_stages", "INPUT"]
