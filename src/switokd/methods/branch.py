"""Online branch methods: one network split into a shared trunk and m branches (``networks.NAME.branches``,
``switokd.models.branches.BranchNet``), each branch distilled from an ensemble built on the fly. The method
reads every branch's logits through hooks (``branches.K``) and owns its extra modules (ONE's gate), which
step with the network they serve.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor, nn

from ..core.branch_losses import consistency_ramp, soft_kl
from ..core.losses import cross_entropy
from .base import METHODS, Method, MethodOptionError, StepOutput


class BranchMethod(Method):
    """Base: every network of the cohort that is a ``BranchNet`` trains with the method's loss."""

    default_tau = 3.0
    default_tau2 = True
    branch_networks = 3  # a grid's students are split into this many branches where the config sets none
    recipe_source = "the branch methods' shared T = 3 and ramp exp(-5(1 - e/80)^2) (docs/method.md)"

    def __init__(self, roles, *, ramp_epochs: int = 80, **kw) -> None:
        super().__init__(roles, **kw)
        self.ramp_epochs = ramp_epochs
        self.branch_counts: dict[str, int] = {}
        self.epoch = 1

    def bind(self, models: Mapping[str, nn.Module]) -> None:
        from ..models.branches import BranchNet
        self.branch_counts = {n: len(m.branches) for n, m in models.items() if isinstance(m, BranchNet)}
        if not self.branch_counts:
            raise ValueError(f"method {self.name!r} trains networks split into branches: set "
                             "networks.NAME.branches (e.g. 3) and networks.NAME.split (e.g. stage3)")

    def branch_paths(self, net: str) -> list[str]:
        return [f"branches.{k}" for k in range(self.branch_counts[net])]

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.epoch = epoch

    @property
    def ramp(self) -> float:
        return consistency_ramp(self.epoch - 1, self.ramp_epochs)

    def ce_terms(self, net):
        return self.branch_counts[net] + 1 if net in self.branch_counts else 1  # each branch's, the ensemble's

    def schedule_warnings(self, epochs, steps_per_epoch):
        if self.ramp_epochs <= epochs:
            return []
        # The references ramp over 80 of 300 epochs; the same share of this run is the suggestion.
        return [f"{self.name}'s consistency weight ramps over method.options.ramp_epochs={self.ramp_epochs} epochs "
                f"but the run has {epochs}: it ends at {consistency_ramp(epochs - 1, self.ramp_epochs):.2f} of its "
                f"weight. The references ramp over 80 of 300 epochs; the same share here is "
                f"method.options.ramp_epochs={max(1, round(epochs * 80 / 300))}"]

    def setup(self, shapes, labels=None, models=None) -> None:
        for n, m in self.branch_counts.items():
            if n not in self.feature_modules:
                self.feature_modules[n] = nn.ModuleDict(self.build_modules(n, shapes[n], m))

    def step(self, logits: Mapping[str, Tensor], targets: Tensor, features: Mapping[str, Any]) -> StepOutput:
        losses = {n: (self.branch_loss(n, features[n], targets) if n in self.branch_counts
                      else self.loss(logits[n], targets, [])) for n in self.names}
        return StepOutput(losses, tuple(self.names))

    def build_modules(self, net: str, shapes: Mapping[str, Any], m: int) -> dict[str, nn.Module]:
        """The modules the method owns for network ``net`` (its features' shapes, its m branches)."""
        return {}

    def branch_loss(self, net: str, f: Mapping[str, Tensor], targets: Tensor) -> dict[str, Tensor]:
        """The named losses of network ``net`` from its recorded features ``f``."""
        raise NotImplementedError


def _gate(channels: int, m: int) -> nn.Module:
    """ONE's gate: global average pool of the trunk's output, linear to m, BatchNorm1d, ReLU, softmax."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(channels, m), nn.BatchNorm1d(m),
                         nn.ReLU(), nn.Softmax(dim=1))


def one_loss(branch_logits: list[Tensor], gate: Tensor, targets: Tensor, ramp: float, tau: float = 3.0,
             detach: bool = True) -> dict[str, Tensor]:
    """ONE (Lan et al. 2018): each branch's CE, the gated ensemble's CE, and ramp x each branch's KL towards the
    ensemble (detached, as the official code does)."""
    ens = sum(gate[:, k:k + 1] * z for k, z in enumerate(branch_logits))
    ce = sum(cross_entropy(z, targets) for z in branch_logits) + cross_entropy(ens, targets)
    kl = sum(soft_kl(z, ens, tau, detach) for z in branch_logits)
    return {"ce": ce, "kl": kl, "loss": ce + ramp * kl}


@METHODS.register()
class ONE(BranchMethod):
    """On-the-fly native ensemble (Lan et al. 2018): the branches' logits gated by the trunk's pooled feature
    into an ensemble teacher; each branch learns CE + ramp x T^2 KL towards it (T 3)."""

    name = "one"
    recipe_source = "Lan1991Xu/ONE_NeurIPS2018 cifar_one.py, models/cifar/resnet.py, loss/kl_loss.py (T 3, ramp 80)"

    def feature_requests(self) -> dict[str, list[str]]:
        return {n: ["trunk", *self.branch_paths(n)] for n in self.branch_counts}

    def build_modules(self, net, shapes, m):
        return {"gate": _gate(shapes["trunk"][1], m)}

    def branch_loss(self, net, f, targets):
        gate = self.feature_modules[net]["gate"](f["trunk"].float())
        return one_loss([f[p].float() for p in self.branch_paths(net)], gate, targets, self.ramp, self.weights.tau)


def _input_of(branch: nn.Sequential, kind: type) -> str:
    """The index of the last module of ``kind`` in a branch (its input is what the method reads)."""
    idx = [i for i, m in enumerate(branch) if isinstance(m, kind)]
    if not idx:
        raise ValueError(f"the branch has no {kind.__name__} to read its input")
    return str(idx[-1])


def okddip_loss(peers: list[Tensor], peer_features: Tensor, leader: Tensor, query: nn.Module, key: nn.Module,
                targets: Tensor, ramp: float, tau: float = 3.0) -> dict[str, Tensor]:
    """OKDDip (Chen et al. 2020; DefangChen/OKDDip train_GL.py): each peer's target is an attention-weighted
    mix of the peers' logits (its own included; attention from the peers' pooled features, no 1/sqrt(d)), the
    leader's the peers' mean; nothing is detached (the projections learn through the targets)."""
    z = torch.stack(peers, 2)  # [B, C, P]
    q, k = query(peer_features), key(peer_features)  # [B, P, d/8]
    att = torch.softmax(q @ k.transpose(1, 2), dim=-1)  # [B, P, P]
    mixed = z @ att.transpose(1, 2)  # [B, C, P]
    ce = sum(cross_entropy(p, targets) for p in peers) + cross_entropy(leader, targets)
    group = sum(soft_kl(z[:, :, i], mixed[:, :, i], tau, detach=False) for i in range(z.shape[2]))
    lead = soft_kl(leader, z.mean(2), tau, detach=False)
    return {"ce": ce, "kl": group + lead, "loss": ce + ramp * (group + lead)}


@METHODS.register()
class OKDDip(BranchMethod):
    """Online KD with diverse peers (Chen et al. 2020): m - 1 peers distil from attention-weighted mixes of
    each other, and the group leader (the deployed branch) from the peers' mean; T 3, ramp over 80 epochs."""

    name = "okddip"
    recipe_source = "DefangChen/OKDDip train_GL.py, models/model_cifar/resnet_GL.py, utils.py (T 3, factor 8, ramp 80)"

    def bind(self, models):
        super().bind(models)
        self.leader = {n: models[n].deployed_index for n in self.branch_counts}
        self.heads = {n: [_input_of(b, nn.Linear) for b in models[n].branches] for n in self.branch_counts}
        for n, m in self.branch_counts.items():
            if m < 3:
                raise ValueError(f"method 'okddip' needs at least 3 branches on {n} (peers and a leader), got {m}")

    def feature_requests(self):
        return {n: [*self.branch_paths(n), *(f"branches.{k}.{h}:input" for k, h in enumerate(self.heads[n]))]
                for n in self.branch_counts}

    def build_modules(self, net, shapes, m):
        d = shapes[f"branches.0.{self.heads[net][0]}:input"][1]
        return {"query": nn.Linear(d, max(d // 8, 1), bias=False), "key": nn.Linear(d, max(d // 8, 1), bias=False)}

    def ce_terms(self, net):
        return self.branch_counts.get(net, 0) or 1  # the peers' and the leader's: one per branch

    def branch_loss(self, net, f, targets):
        lead = self.leader[net]
        peers = [k for k in range(self.branch_counts[net]) if k != lead]
        h = torch.stack([f[f"branches.{k}.{self.heads[net][k]}:input"].float().flatten(1) for k in peers], 1)
        mods = self.feature_modules[net]
        return okddip_loss([f[f"branches.{k}"].float() for k in peers], h, f[f"branches.{lead}"].float(),
                           mods["query"], mods["key"], targets, self.ramp, self.weights.tau)


class Fusion(nn.Module):
    """FFL's fusion module (Jangho-Kim/FFL-pytorch our_network.py): the branches' last feature maps
    concatenated, a depthwise 3x3 conv, BN, ReLU, a 1x1 conv to one branch's channels, BN, ReLU, global pool,
    linear; convolutions He-normal over fan-out."""

    # The authors' own optimizer for it: the network's learning rate and schedule, weight decay 1e-5.
    param_group = {"weight_decay": 1e-5}

    def __init__(self, channels: int, m: int, num_classes: int) -> None:
        super().__init__()
        c = channels * m
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv1_1 = nn.Conv2d(c, channels, 1, bias=False)
        self.bn1_1 = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, num_classes)
        for conv in (self.conv1, self.conv1_1):
            nn.init.normal_(conv.weight, 0, (2.0 / (conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels)) ** 0.5)

    def forward(self, maps: list[Tensor]) -> Tensor:
        x = torch.relu(self.bn1(self.conv1(torch.cat(maps, 1))))
        x = torch.relu(self.bn1_1(self.conv1_1(x)))
        return self.fc(x.mean((2, 3)))


def ffl_loss(branch_logits: list[Tensor], fused: Tensor, targets: Tensor, ramp: float, tau: float = 3.0) -> dict[str, Tensor]:
    """FFL (Kim et al. 2021; train_FFL.py): CE of every branch and of the fused classifier; ramp x (each branch
    towards the fused logits + the fused towards the branches' mean), every target detached."""
    ens = torch.stack(branch_logits).mean(0)
    ce = sum(cross_entropy(z, targets) for z in branch_logits) + cross_entropy(fused, targets)
    kl = sum(soft_kl(z, fused, tau) for z in branch_logits) + soft_kl(fused, ens, tau)
    return {"ce": ce, "kl": kl, "loss": ce + ramp * kl}


@METHODS.register()
class FFL(BranchMethod):
    """Feature fusion learning (Kim et al. 2021): a fusion module over the branches' last feature maps gives a
    fused classifier; branches and fusion teach each other (T 3, ramp 80); the fusion module has its own weight
    decay (1e-5), as the authors' own optimizer does."""

    name = "ffl"
    recipe_source = "Jangho-Kim/FFL-pytorch train_FFL.py, our_network.py, utils.py (T 3, ramp 80, fusion wd 1e-5)"

    def bind(self, models):
        super().bind(models)
        self.pools = {n: [_input_of(b, nn.AdaptiveAvgPool2d) for b in models[n].branches] for n in self.branch_counts}

    def feature_requests(self):
        return {n: [*self.branch_paths(n), *(f"branches.{k}.{p}:input" for k, p in enumerate(self.pools[n]))]
                for n in self.branch_counts}

    def build_modules(self, net, shapes, m):
        return {"fusion": Fusion(shapes[f"branches.0.{self.pools[net][0]}:input"][1], m, shapes["branches.0"][1])}

    def branch_loss(self, net, f, targets):
        m = self.branch_counts[net]
        fused = self.feature_modules[net]["fusion"]([f[f"branches.{k}.{self.pools[net][k]}:input"].float()
                                                     for k in range(m)])
        return ffl_loss([f[f"branches.{k}"].float() for k in range(m)], fused, targets, self.ramp, self.weights.tau)


def mean_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` to hold its temporal mean: no gradients, and none of the model's forward hooks (the
    feature taps' would write this copy's forwards into their store)."""
    import copy
    mean = copy.deepcopy(model).requires_grad_(False)
    for mod in mean.modules():
        mod._forward_hooks.clear()
        mod._forward_pre_hooks.clear()
    return mean


def ema_update(mean: nn.Module, model: nn.Module, step: int, decay: float = 0.999) -> float:
    """The temporal mean's update after optimizer step ``step`` (from 1): a = min(1 - 1/step, decay), so that it
    is the plain average of the iterates at first (Mean Teacher's ``update_ema_variables`` with the true global
    step; OKDPH passes global_step=0, which makes a = 0 and the "mean" a copy). Parameters only, as the
    references: the mean's BatchNorm statistics come from its own forwards."""
    a = min(1.0 - 1.0 / max(step, 1), decay)
    with torch.no_grad():
        for pm, ps in zip(mean.parameters(), model.parameters()):
            pm.mul_(a).add_(ps.detach(), alpha=1.0 - a)
    return a


def pcl_loss(branch_logits: list[Tensor], ensemble: Tensor, mean_logits: list[Tensor], targets: Tensor, ramp: float,
             tau: float = 3.0) -> dict[str, Tensor]:
    """PCL (Wu & Gong 2021; shaoeric's loss_wrapper.py): the peer ensemble's CE (its gradient reaches the peers'
    features); each peer's CE, ramp x KL towards the peer ensemble (detached), and ramp x the mean over the other peers j of KL towards the temporal
    mean's peer j (detached)."""
    m = len(branch_logits)
    ce = cross_entropy(ensemble, targets) + sum(cross_entropy(z, targets) for z in branch_logits)
    pe = sum(soft_kl(z, ensemble, tau, eps=0.0) for z in branch_logits)
    pm = sum(sum(soft_kl(z, mean_logits[j], tau, eps=0.0) for j in range(m) if j != i) / (m - 1)
             for i, z in enumerate(branch_logits))
    return {"ce": ce, "kl": pe + pm, "loss": ce + ramp * (pe + pm)}


@METHODS.register()
class PCL(BranchMethod):
    """Peer collaborative learning (Wu & Gong 2021): a peer-ensemble head over the branches' pooled features
    teaches every peer, and a temporal mean of the network (weights averaged over steps) teaches each peer
    through the other peers; the temporal mean's deployed branch ships (``switokd export``). T 3, ramp 80
    (the reference's ramp bug is not copied: docs/method.md)."""

    name = "pcl"
    shipped_module = "mean"
    recipe_source = ("shaoeric/Peer-Collaborative-Learning-for-Online-Knowledge-Distillation src/losses/loss_wrapper.py, "
                     "controller.py, utils/ema.py (T 3, ramp 80, EMA 0.999)")

    def __init__(self, roles, *, ema_decay: float = 0.999, views: bool = True, **kw) -> None:
        super().__init__(roles, **kw)
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"pcl option ema_decay must be in [0, 1), got {ema_decay}")
        self.ema_decay = ema_decay
        self.views = views
        #: How many augmented views of each training image the loader draws (one per branch; 1 without views).
        self.train_views = 1

    def bind(self, models):
        super().bind(models)
        self.heads = {n: [_input_of(b, nn.Linear) for b in models[n].branches] for n in self.branch_counts}
        self.models = {n: models[n] for n in self.branch_counts}
        if self.views:
            counts = {self.branch_counts.get(n) for n in self.names}
            if len(counts) != 1 or None in counts:
                raise MethodOptionError("pcl gives each branch its own augmented view, so every network must have the "
                                        "same number of branches (here "
                                        f"{dict((n, self.branch_counts.get(n)) for n in self.names)}); set it to false "
                                        "for one view shared by all", "method.options.views")
            self.train_views = counts.pop()

    def feature_requests(self):
        # ":input" is the network's own input (one view, or one per branch), for the temporal mean's forward.
        return {n: [":input", *self.branch_paths(n),
                    *(f"branches.{k}.{h}:input" for k, h in enumerate(self.heads[n]))] for n in self.branch_counts}

    def build_modules(self, net, shapes, m):
        d = shapes[f"branches.0.{self.heads[net][0]}:input"][1]
        return {"ensemble": nn.Linear(m * d, shapes["branches.0"][1]), "mean": mean_copy(self.models[net])}

    def schedule_warnings(self, epochs, steps_per_epoch):
        out = super().schedule_warnings(epochs, steps_per_epoch)
        steps, window = epochs * steps_per_epoch, 1.0 / (1.0 - self.ema_decay)
        if window > steps / 10:
            # 0.999 averages about 1,000 steps: over a few hundred it is the plain mean of every iterate, 5-6 points
            # below the live branches on the grid (benchmarks/results/methods); a window of a twelfth of the run
            # (0.95 on 240 steps) scored level with them.
            out.append(f"pcl's temporal mean (method.options.ema_decay={self.ema_decay:g}) averages about "
                       f"{window:.0f} steps but the run has {steps}: the shipped mean lags the branches. For a short "
                       f"run try method.options.ema_decay={1 - 12 / max(steps, 13):.3g} (a window of a twelfth of "
                       "the run)")
        return out

    def after_step(self, stepped, step):
        for n in self.branch_counts:
            if n in stepped:
                ema_update(self.feature_modules[n]["mean"], stepped[n], step, self.ema_decay)

    def branch_loss(self, net, f, targets):
        m, mods = self.branch_counts[net], self.feature_modules[net]
        ens = mods["ensemble"](torch.cat([f[f"branches.{k}.{self.heads[net][k]}:input"].float().flatten(1)
                                          for k in range(m)], 1))
        mean = mods["mean"].train(self.models[net].training)
        x = f[":input"]
        with torch.no_grad():  # the mean's peer j on view j, as the references (shared input without views)
            if x.dim() == 5 and self.train_views > 1:
                mean_logits = [b(mean.trunk(x[:, j])).float() for j, b in enumerate(mean.branches)]
            else:
                trunk = mean.trunk(x)
                mean_logits = [b(trunk).float() for b in mean.branches]
        return pcl_loss([f[f"branches.{k}"].float() for k in range(m)], ens, mean_logits, targets, self.ramp,
                        self.weights.tau)


__all__ = ["BranchMethod", "ONE", "OKDDip", "FFL", "PCL", "Fusion", "one_loss", "okddip_loss", "ffl_loss", "pcl_loss",
           "ema_update", "mean_copy"]
