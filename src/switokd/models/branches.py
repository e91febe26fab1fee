"""Branches on any backbone: a model split at a named module into a shared trunk and m copies of the rest, as
the online branch methods (ONE, OKDDip, PCL, FFL) train one network. The trunk runs once per batch; each
branch ends in its own classifier. ``BranchNet.deployed()`` is the plain model a user ships: the trunk and one
branch, with no wrapper.

A model splits if its forward is a plain sequence: an ``nn.Sequential`` (nested ones are flattened), or a
model that says so with ``sequence()`` (our families and the torchvision-named ResNets). The split point is a
module path in that sequence (``layer4`` of a ResNet, ``features.7``) where the branches begin, or a stage
name: ``stageK`` puts stage K and everything after it in the branches.

Example:
    >>> import torch
    >>> from switokd.models import create_model
    >>> from switokd.models.branches import BranchNet
    >>> net = BranchNet(create_model("resnet20", 10, 3, 32), "stage3", branches=3)
    >>> tuple(net(torch.randn(2, 3, 32, 32)).shape), len(net.branches)
    ((2, 10), 3)
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from .features import stage_paths


def sequence(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """The model's forward as a plain list of (module path, module), nested ``nn.Sequential`` flattened; a
    ``ConfigError`` if it is not one."""
    if hasattr(model, "sequence") and not isinstance(model, nn.Sequential):
        items = model.sequence()
    elif isinstance(model, nn.Sequential):
        items = [(name, m) for name, m in model.named_children()]
    else:
        raise ConfigError(f"model {type(model).__name__}'s forward is not a plain sequence of modules, so it cannot "
                          "be split into a trunk and branches; give an nn.Sequential, or a model with a "
                          "sequence() method listing (path, module) in forward order")
    out: list[tuple[str, nn.Module]] = []
    for name, m in items:
        path = f"{prefix}{name}"
        out += sequence(m, path + ".") if isinstance(m, nn.Sequential) else [(path, m)]
    return out


def split_index(model: nn.Module, items: list[tuple[str, nn.Module]], split: str, network: str) -> int:
    """Where the branches begin in ``items``: the module ``split`` names, or after the stage before ``stageK``."""
    stages = stage_paths(model)
    paths = [p for p, _ in items]

    def index_of(path: str) -> int:
        hits = [i for i, p in enumerate(paths) if p == path or p.startswith(path + ".")]
        if not hits:
            raise ConfigError(f"config key 'networks.{network}.split': {split!r} is not a module of the model's "
                              f"sequence (its modules: {', '.join(paths[:6])}, ...)")
        return hits[0]

    if split in stages and split.startswith("stage") and split[5:].isdigit():
        k = int(split[5:])
        before = "stem" if k == 1 else f"stage{k - 1}"
        end = [i for i, p in enumerate(paths) if p == stages[before] or p.startswith(stages[before] + ".")]
        if not end:
            raise ConfigError(f"config key 'networks.{network}.split': stage {before!r} ({stages[before]}) is not in "
                              "the model's sequence")
        return end[-1] + 1
    return index_of(stages.get(split, split))


def _reinit(module: nn.Module, scheme: Any) -> None:
    """A fresh initialisation for a branch copy (the references draw each branch anew): the family's scheme,
    or each layer's own ``reset_parameters``."""
    for m in module.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    if scheme is not None:
        scheme.apply(module)


class BranchNet(nn.Module):
    """A trunk and ``branches`` copies of the rest of ``model``; ``forward`` returns the deployed branch's logits
    (the others' are read by the method through their hooks, ``branches.K``).

    Args:
        model: the backbone (its forward a plain sequence, see ``sequence``).
        split: where the branches begin: a module path of the sequence, or a stage name.
        branches: how many (m >= 2).
        deployed: which branch ships (``deployed()``) and gives the network's logits.
        network: its name, for errors.
    """

    def __init__(self, model: nn.Module, split: str, branches: int = 3, deployed: int = 0, network: str = "model"):
        super().__init__()
        if branches < 2:
            raise ConfigError(f"config key 'networks.{network}.branches': at least 2, got {branches}")
        if not 0 <= deployed < branches:
            raise ConfigError(f"config key 'networks.{network}.deployed_branch': 0..{branches - 1}, got {deployed}")
        items = sequence(model)
        i = split_index(model, items, split, network)
        if i <= 0 or i >= len(items):
            raise ConfigError(f"config key 'networks.{network}.split': {split!r} leaves no trunk or no branch")
        self.trunk = nn.Sequential(*[m for _, m in items[:i]])
        rest = nn.Sequential(*[m for _, m in items[i:]])
        scheme = getattr(model, "init_scheme", None)
        copies = [rest] + [copy.deepcopy(rest) for _ in range(branches - 1)]
        for c in copies[1:]:
            _reinit(c, scheme)
        self.branches = nn.ModuleList(copies)
        self.deployed_index = deployed
        self.split = split
        self._at = i
        self.per_view = False  # the training loader draws one view per branch (PCL), set by the trainer
        self.keep_outputs = False  # evaluation: keep every branch's logits of the last forward (``outputs``)
        self.outputs: list[Tensor] = []
        self._backbone = [model]  # the original model (its modules are the trunk's and branch 0's); not registered

    @classmethod
    def from_parts(cls, trunk: nn.Module, branch: nn.Module, branches: int = 3, deployed: int = 0) -> "BranchNet":
        """A BranchNet from a trunk and a branch you built (for a model whose forward is not a plain sequence):
        ``branch`` maps the trunk's output to logits; the other branches are copies of it drawn anew. Return it
        from a ``package.module:factory`` (``networks.NAME.model``), leaving ``networks.NAME.branches`` at 0."""
        return cls(nn.Sequential(trunk, branch), "1", branches, deployed)

    def forward(self, x: Tensor) -> Tensor:
        """The deployed branch's logits of ``x`` ([N, C, H, W]); or, given one view per branch ([N, m, C, H, W],
        as PCL trains), branch k's of view k, the trunk run once per view."""
        if self.per_view and x.dim() == 5:
            if x.shape[1] != len(self.branches):
                raise ValueError(f"BranchNet: {x.shape[1]} views for {len(self.branches)} branches; give one per branch")
            # A view sliced out of [N, m, C, H, W] is strided across the views: one copy each, in the input's layout.
            fmt = torch.channels_last if x.stride(2) == 1 else torch.contiguous_format
            outs = [b(self.trunk(x[:, k].contiguous(memory_format=fmt))) for k, b in enumerate(self.branches)]
            self.outputs = outs if self.keep_outputs else []
            return outs[self.deployed_index]
        h = self.trunk(x)
        outs = [b(h) for b in self.branches]
        self.outputs = outs if self.keep_outputs else []
        return outs[self.deployed_index]

    def deployed(self) -> nn.Module:
        """The plain model that ships: a copy of the backbone (its own class and parameter names, as
        ``create_model`` builds it) holding the trunk and the deployed branch's weights."""
        model = copy.deepcopy(self._backbone[0])
        if self.deployed_index:
            rest = [m for _, m in sequence(model)[self._at:]]
            for dst, src in zip(rest, self.branches[self.deployed_index]):
                dst.load_state_dict(src.state_dict())
        return model.train(self.training)


def build_backbone(n: Any, num_classes: int, in_chans: int, image_size: int) -> nn.Module:
    """``networks.NAME``'s model: ``model`` from the registry (or ``package.module:factory``), split into a
    ``BranchNet`` when ``branches`` is set."""
    from . import create_model
    model = create_model(n.model, num_classes, in_chans, image_size, **n.model_args)
    if n.branches:
        model = BranchNet(model, n.split or "stage3", n.branches, n.deployed_branch, n.name)
    return model


__all__ = ["BranchNet", "build_backbone", "sequence", "split_index"]
