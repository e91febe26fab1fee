"""Feature-distillation losses as modules a method owns: each names the features it reads (stage names or
module paths, ``switokd.models.features``), builds its trainable parts (connectors, regressors, variances) once
the features' shapes are known, and returns its term for one (teacher, student) pair.

A method with ``method.feature_loss=NAME`` owns one such module per (student, teacher) pair; the trainer puts
its parameters in the student's optimizer (the student's learning rate and schedule, as mdistiller's
``get_learnable_parameters`` does), steps them only when the student steps, all-reduces, checkpoints and
resumes them with it, and leaves them out of export. The pure maths is ``switokd.core.feature_losses``.

Defaults are mdistiller's CIFAR-100 configs (``configs/cifar100/*.yaml`` and ``mdistiller/engine/cfg.py`` at
a08d46f), which RepDistiller's ``scripts/run_cifar_distill.sh`` shares (docs/method.md, "Feature methods").
"""
from __future__ import annotations

from typing import Any, ClassVar, Sequence

import torch
from torch import Tensor, nn

from ..core import feature_losses as FL
from ..registry import Registry

FEATURE_LOSSES: Registry = Registry("feature loss")

STAGES = ("stage1", "stage2", "stage3")


class FeatureLoss(nn.Module):
    """Base class. Subclasses set ``name``, ``weight`` (the term's weight in the authors' recipe) and ``source``,
    and implement ``paths`` and ``forward``; ``build`` makes their trainable parts from the features' shapes.

    Args:
        student_paths, teacher_paths: override the features read (a list each, in matching order).
    """

    name: ClassVar[str] = ""
    weight: ClassVar[float] = 1.0
    teacher_train_mode: ClassVar[bool] = False  # the frozen teacher forwards in train mode (OFD's authors' choice)
    epoch: int = 1  # the current epoch, from 1 (ReviewKD's warm-up)
    source: ClassVar[str] = ""
    note: str = ""  # a caveat the run header shows (``features`` line)
    default_paths: ClassVar[tuple[str, ...]] = STAGES

    def __init__(self, student_paths: Sequence[str] | None = None, teacher_paths: Sequence[str] | None = None) -> None:
        super().__init__()
        self.paths_default = not student_paths and not teacher_paths  # the method may align them (Method.bind)
        self.student_paths = list(student_paths or self.default_paths)
        self.teacher_paths = list(teacher_paths or student_paths or self.default_paths)
        if len(self.student_paths) != len(self.teacher_paths):
            raise ValueError(f"feature loss {self.name!r}: student_paths and teacher_paths must pair up, got "
                             f"{self.student_paths} and {self.teacher_paths}")
        self.built = False
        # Set before build(): "labels", the training labels (CRD's negatives), and "teacher", the teacher model
        # (OFD's margins); a plain dict, so that the teacher is not registered as a submodule.
        self.context: dict[str, Any] = {}

    def build(self, student_shapes: Sequence[torch.Size], teacher_shapes: Sequence[torch.Size]) -> None:
        """Make the trainable parts from the features' shapes ([N, C, H, W] each), once."""
        self.built = True

    def forward(self, fs: Sequence[Tensor], ft: Sequence[Tensor], index: Tensor | None = None) -> Tensor:
        """The term for one pair: the student's features ``fs`` (with grad), the teacher's ``ft`` (detached), and
        ``index``, the batch's images' indices in the training set."""
        raise NotImplementedError

    @classmethod
    def options(cls) -> list[str]:
        import inspect
        return [p for p, v in inspect.signature(cls.__init__).parameters.items()
                if p != "self" and v.kind is v.KEYWORD_ONLY or p in ("student_paths", "teacher_paths")]

    def extra_repr(self) -> str:
        return f"student_paths={self.student_paths}, teacher_paths={self.teacher_paths}"


@FEATURE_LOSSES.register()
class AT(FeatureLoss):
    """Attention transfer (Zagoruyko & Komodakis 2017): the stages' spatial attention maps, weight 1000, p 2."""

    name, weight = "at", 1000.0
    source = "mdistiller mdistiller/distillers/AT.py, configs/cifar100/at.yaml (AT.P 2, FEAT_WEIGHT 1000)"

    def __init__(self, student_paths=None, teacher_paths=None, *, p: float = 2.0) -> None:
        super().__init__(student_paths, teacher_paths)
        self.p = p

    def forward(self, fs, ft, index=None):
        return FL.at_loss(fs, ft, self.p)


@FEATURE_LOSSES.register()
class NST(FeatureLoss):
    """Neuron selectivity transfer (Huang & Wang 2017): polynomial-kernel MMD over the stages, weight 50."""

    name, weight = "nst", 50.0
    source = "mdistiller mdistiller/distillers/NST.py, configs/cifar100/nst.yaml (FEAT_WEIGHT 50)"

    def forward(self, fs, ft, index=None):
        return FL.nst_loss(fs, ft)


@FEATURE_LOSSES.register()
class SP(FeatureLoss):
    """Similarity-preserving KD (Tung & Mori 2019): the last stage's batch similarity, weight 3000."""

    name, weight = "sp", 3000.0
    source = "mdistiller mdistiller/distillers/SP.py, configs/cifar100/sp.yaml (FEAT_WEIGHT 3000)"
    default_paths = ("stage3",)

    def forward(self, fs, ft, index=None):
        return sum(FL.sp_loss(s, t) for s, t in zip(fs, ft))


@FEATURE_LOSSES.register()
class PKT(FeatureLoss):
    """Probabilistic knowledge transfer (Passalis & Tefas 2018): the pooled features, weight 30000."""

    name, weight = "pkt", 30000.0
    source = "mdistiller mdistiller/distillers/PKT.py, configs/cifar100/pkt.yaml (FEAT_WEIGHT 30000)"
    default_paths = ("pool",)

    def forward(self, fs, ft, index=None):
        return sum(FL.pkt_loss(s, t) for s, t in zip(fs, ft))


@FEATURE_LOSSES.register()
class RKD(FeatureLoss):
    """Relational KD (Park et al. 2019): distance (25) and angle (50) relations of the pooled features, weight 1."""

    name, weight = "rkd", 1.0
    source = "mdistiller mdistiller/distillers/RKD.py (DISTANCE_WEIGHT 25, ANGLE_WEIGHT 50, FEAT_WEIGHT 1)"
    default_paths = ("pool",)

    def __init__(self, student_paths=None, teacher_paths=None, *, distance_weight: float = 25.0,
                 angle_weight: float = 50.0) -> None:
        super().__init__(student_paths, teacher_paths)
        self.distance_weight, self.angle_weight = distance_weight, angle_weight

    def forward(self, fs, ft, index=None):
        return sum(FL.rkd_loss(s, t, self.distance_weight, self.angle_weight) for s, t in zip(fs, ft))


def _conv_reg(s: torch.Size, t: torch.Size) -> nn.Module:
    """FitNet's regressor (mdistiller ``ConvReg``, ``use_relu=True``): a convolution that maps the student's map
    to the teacher's channels and size, then BN and ReLU."""
    sc, sh, sw = s[1:]
    tc, th, tw = t[1:]
    if sh == 2 * th:
        conv: nn.Module = nn.Conv2d(sc, tc, 3, stride=2, padding=1)
    elif 2 * sh == th:
        conv = nn.ConvTranspose2d(sc, tc, 4, stride=2, padding=1)
    elif sh >= th:
        conv = nn.Conv2d(sc, tc, (1 + sh - th, 1 + sw - tw))
    else:
        raise ValueError(f"fitnet: no regressor from a {tuple(s[1:])} map to a {tuple(t[1:])} one")
    return nn.Sequential(conv, nn.BatchNorm2d(tc), nn.ReLU(inplace=True))


@FEATURE_LOSSES.register()
class FitNet(FeatureLoss):
    """FitNets (Romero et al. 2015), single-stage as mdistiller and RepDistiller train it: a regressor maps the
    student's stage-2 output to the teacher's, MSE, weight 100 (the paper's separate hint stage is not run)."""

    name, weight = "fitnet", 100.0
    source = "mdistiller mdistiller/distillers/FitNet.py, configs/cifar100/fitnet.yaml (HINT_LAYER 2, FEAT_WEIGHT 100)"
    default_paths = ("stage2",)

    def build(self, student_shapes, teacher_shapes):
        self.regressors = nn.ModuleList(_conv_reg(s, t) for s, t in zip(student_shapes, teacher_shapes))
        self.built = True

    def forward(self, fs, ft, index=None):
        return sum(nn.functional.mse_loss(r(s), t) for r, s, t in zip(self.regressors, fs, ft))


@FEATURE_LOSSES.register()
class VID(FeatureLoss):
    """Variational information distillation (Ahn et al. 2019): per stage, a 1x1-conv regressor predicts the
    teacher's map with a learned per-channel variance (registered and trained, as RepDistiller does), weight 1."""

    name, weight = "vid", 1.0
    source = "RepDistiller distiller_zoo/VID.py, mdistiller configs/cifar100/vid.yaml (INIT_PRED_VAR 5, EPS 1e-5)"

    def __init__(self, student_paths=None, teacher_paths=None, *, init_var: float = 5.0, eps: float = 1e-5) -> None:
        super().__init__(student_paths, teacher_paths)
        self.init_var, self.eps = init_var, eps

    def build(self, student_shapes, teacher_shapes):
        self.regressors = nn.ModuleList()
        self.log_scales = nn.ParameterList()
        for s, t in zip(student_shapes, teacher_shapes):
            sc, tc = s[1], t[1]
            self.regressors.append(nn.Sequential(nn.Conv2d(sc, tc, 1, bias=False), nn.ReLU(),
                                                 nn.Conv2d(tc, tc, 1, bias=False), nn.ReLU(),
                                                 nn.Conv2d(tc, tc, 1, bias=False)))
            self.log_scales.append(nn.Parameter(torch.full((tc,), FL.vid_log_scale_init(self.init_var, self.eps))))
        self.built = True

    def forward(self, fs, ft, index=None):
        total = fs[0].new_zeros(())
        for reg, log_scale, s, t in zip(self.regressors, self.log_scales, fs, ft):
            s, t = FL.match_spatial(s, t)
            total = total + FL.vid_nll(reg(s), t, log_scale, self.eps)
        return total


class _Embed(nn.Module):
    """CRD's embedding head (RepDistiller ``crd/criterion.py`` ``Embed``): flatten, linear, L2-normalise."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        x = self.linear(x.flatten(1))
        return x / x.pow(2).sum(1, keepdim=True).sqrt()


@FEATURE_LOSSES.register()
class CRD(FeatureLoss):
    """Contrastive representation distillation (Tian et al. 2020): the pooled features embedded (128-d, both
    heads trained), each sample's embedding against the other network's stored embedding of the same image
    (the positive) and of K images of other classes (negatives), NCE at temperature 0.07, memory momentum 0.5,
    weight 0.8. ``queue=true``: MoCo-style, the negatives are the other network's last K embeddings (any
    class) and the positive its current one, so memory does not grow with the data set."""

    name, weight = "crd", 0.8
    source = ("RepDistiller crd/criterion.py, crd/memory.py, train_student.py (nce_k 16384, nce_t 0.07, nce_m 0.5, "
              "feat_dim 128, mode exact); mdistiller configs/cifar100/crd.yaml (FEAT_WEIGHT 0.8)")
    default_paths = ("pool",)

    def __init__(self, student_paths=None, teacher_paths=None, *, feat_dim: int = 128, nce_k: int = 16384,
                 nce_t: float = 0.07, nce_m: float = 0.5, queue: bool = False) -> None:
        super().__init__(student_paths, teacher_paths)
        if nce_k < 1 or feat_dim < 1 or not 0 <= nce_m < 1 or nce_t <= 0:
            raise ValueError(f"crd: nce_k and feat_dim must be >= 1, nce_m in [0, 1), nce_t > 0; got nce_k {nce_k}, "
                             f"feat_dim {feat_dim}, nce_m {nce_m}, nce_t {nce_t}")
        self.feat_dim, self.nce_k, self.nce_t, self.nce_m, self.queue = feat_dim, nce_k, nce_t, nce_m, queue
        if queue:  # shown in the run header
            self.note = ("crd's queue is not yet usable: on pairs100 it ended 17 points below the student alone, "
                         "its keys lacking a momentum encoder (docs/method.md); use the memory bank (queue=false)")

    def build(self, student_shapes, teacher_shapes):
        import math
        if self.context.get("labels") is None:
            raise ValueError("crd needs the training labels (Method.setup(shapes, labels=...))")
        labels = self.context["labels"].long().cpu()
        n, d = len(labels), self.feat_dim
        self.embed_s = _Embed(math.prod(student_shapes[0][1:]), d)
        self.embed_t = _Embed(math.prod(teacher_shapes[0][1:]), d)
        stdv = 1.0 / math.sqrt(d / 3)
        rows = self.nce_k if self.queue else n
        # memory_s holds the student's embeddings (scored against the teacher's anchor), memory_t the teacher's.
        self.register_buffer("memory_s", torch.rand(rows, d).mul_(2 * stdv).add_(-stdv))
        self.register_buffer("memory_t", torch.rand(rows, d).mul_(2 * stdv).add_(-stdv))
        self.register_buffer("z", torch.full((2,), -1.0))  # the normalising constants, set on the first batch
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))  # the queue's next row
        if not self.queue:
            order = torch.argsort(labels, stable=True)
            counts = torch.bincount(labels, minlength=int(labels.max()) + 1)
            self.register_buffer("order", order)
            self.register_buffer("class_start", torch.cumsum(counts, 0) - counts)
            self.register_buffer("class_count", counts)
            self.register_buffer("train_labels", labels)
            self.k = min(self.nce_k, n - int(counts.max()))  # as many negatives as the smallest pool holds
        else:
            # The queue does not know whose embedding it holds: an anchor meets its own older embedding as a
            # negative with a chance of about K/N (MoCo's K is 5% of ImageNet). A queue as long as the data set
            # took a pairs100 student from 29.1% (memory bank) to 17.0% (nce_k 4096 of 2,000 images).
            if self.nce_k > n // 10:
                raise ValueError(f"config key 'method.feature_options.nce_k': crd's queue of nce_k {self.nce_k} "
                                 f"negatives may hold at most a tenth of the {n} training images ({n // 10}): set a "
                                 "smaller nce_k, or queue=false (the memory bank, whose negatives are other classes)")
            self.k = self.nce_k
        self.n_data = n
        self.context = {}
        self.built = True

    def negatives(self, index: Tensor) -> Tensor:
        """K indices of other classes per sample, uniform with replacement (RepDistiller draws without; with K
        far below the pool the two agree), from the global RNG (checkpointed)."""
        y = self.train_labels[index]
        pool = self.n_data - self.class_count[y]
        r = (torch.rand(len(index), self.k, device=index.device) * pool.unsqueeze(1)).long()
        r = r + (r >= self.class_start[y].unsqueeze(1)) * self.class_count[y].unsqueeze(1)
        return self.order[r]

    def forward(self, fs, ft, index=None):
        v_s, v_t = self.embed_s(fs[0]), self.embed_t(ft[0])
        if self.queue:
            w_s = torch.cat([v_s.detach().unsqueeze(1), self.memory_s.unsqueeze(0).expand(len(v_s), -1, -1)], 1)
            w_t = torch.cat([v_t.detach().unsqueeze(1), self.memory_t.unsqueeze(0).expand(len(v_t), -1, -1)], 1)
        else:
            if index is None:
                raise ValueError("crd needs each sample's index in the training set (the trainer passes it)")
            index = index.to(self.memory_s.device)
            idx = torch.cat([index.unsqueeze(1), self.negatives(index)], 1)
            w_s, w_t = self.memory_s[idx], self.memory_t[idx]
        out_t = torch.exp(torch.bmm(w_s, v_t.unsqueeze(2)).squeeze(2) / self.nce_t)  # teacher anchor, student memory
        out_s = torch.exp(torch.bmm(w_t, v_s.unsqueeze(2)).squeeze(2) / self.nce_t)  # student anchor, teacher memory
        if bool(self.z[0] < 0):  # once: the first batch sets the constants, as the reference does
            (means,) = _gathered(torch.stack([out_s.mean(), out_t.mean()]).detach().unsqueeze(0))
            self.z.copy_(means.mean(0) * self.n_data)  # every process's first batch, so they share one
        loss = (FL.crd_contrast_loss(out_s / self.z[0], self.n_data)
                + FL.crd_contrast_loss(out_t / self.z[1], self.n_data))
        with torch.no_grad():
            # Every process's batch updates the memory, in rank order, so that the processes hold one memory.
            if self.queue:
                v_s, v_t = _gathered(v_s.detach(), v_t.detach())
                n_new = len(v_s)
                v_s, v_t = v_s[-self.k:], v_t[-self.k:]  # a batch longer than the queue keeps its last k rows
                rows = (self.ptr + n_new - len(v_s) + torch.arange(len(v_s), device=v_s.device)) % self.k
                self.memory_s[rows], self.memory_t[rows] = v_s, v_t
                self.ptr.copy_((self.ptr + n_new) % self.k)
            else:
                index, v_s, v_t = _gathered(index, v_s.detach(), v_t.detach())
                for mem, v in ((self.memory_s, v_s), (self.memory_t, v_t)):
                    upd = mem[index] * self.nce_m + v.detach() * (1 - self.nce_m)
                    mem[index] = upd / upd.pow(2).sum(1, keepdim=True).sqrt()
        return loss


def _gathered(*tensors: Tensor) -> list[Tensor]:
    """The rows of ``tensors`` from every process, in rank order (the tensors themselves in one process); the
    processes may hold different numbers of rows (a last batch)."""
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(tensors)
    world = dist.get_world_size()
    n = torch.tensor([len(tensors[0])], device=tensors[0].device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    counts = [int(c) for c in sizes]
    out = []
    for t in tensors:
        pad = t.new_zeros((max(counts), *t.shape[1:]))
        pad[: len(t)] = t
        parts = [torch.empty_like(pad) for _ in range(world)]
        dist.all_gather(parts, pad)
        out.append(torch.cat([p[:c] for p, c in zip(parts, counts)]))
    return out


@FEATURE_LOSSES.register()
class OFD(FeatureLoss):
    """Overhaul of feature distillation (Heo et al. 2019): pre-ReLU features of three stages, a 1x1 conv + BN
    connector per stage, the teacher's features clipped at a margin from its BN, partial L2, stages weighted
    1/4, 1/2, 1, weight 0.001. The teacher runs in train mode, as its authors intend."""

    name, weight = "ofd", 0.001
    source = ("mdistiller mdistiller/distillers/OFD.py, configs/cifar100/ofd.yaml (FEAT_WEIGHT 0.001, CONNECTOR "
              "KERNEL_SIZE 1); clovaai/overhaul-distillation CIFAR-100/distiller.py")
    default_paths = ("stage1:pre", "stage2:pre", "stage3:pre")
    teacher_train_mode = True

    def __init__(self, student_paths=None, teacher_paths=None, *, teacher_bn_paths: Sequence[str] | None = None) -> None:
        super().__init__(student_paths, teacher_paths)
        self.teacher_bn_paths = list(teacher_bn_paths or [p.split(":")[0] + ":bn" for p in self.teacher_paths])

    def build(self, student_shapes, teacher_shapes):
        import math
        from ..models.features import resolve_path
        teacher = self.context.get("teacher")
        if teacher is None:
            raise ValueError("ofd needs the teacher, for its margins (Method.setup(..., models=...))")
        self.connectors = nn.ModuleList()
        margins = []
        for s, t, bn_path in zip(student_shapes, teacher_shapes, self.teacher_bn_paths):
            conv, bn = nn.Conv2d(s[1], t[1], 1, bias=False), nn.BatchNorm2d(t[1])
            nn.init.normal_(conv.weight, 0, math.sqrt(2.0 / t[1]))
            self.connectors.append(nn.Sequential(conv, bn))
            teacher_bn, _ = resolve_path(teacher, bn_path, "teacher")
            margins.append(FL.ofd_margin(teacher_bn.weight.detach().float().cpu(), teacher_bn.bias.detach().float().cpu()))
        for k, m in enumerate(margins):
            self.register_buffer(f"margin{k}", m)
        self.context = {}
        self.built = True

    def forward(self, fs, ft, index=None):
        n = len(fs)
        total = fs[0].new_zeros(())
        for k, (conn, s, t) in enumerate(zip(self.connectors, fs, ft)):
            t = nn.functional.adaptive_avg_pool2d(t, s.shape[-2:])
            total = total + FL.ofd_stage_loss(conn(s), t, getattr(self, f"margin{k}")) / 2 ** (n - 1 - k)
        return total


class _ABF(nn.Module):
    """ReviewKD's attention-based fusion (dvlab-research/ReviewKD ``CIFAR-100/model/reviewkd.py``)."""

    def __init__(self, cin: int, mid: int, cout: int, fuse: bool) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid))
        self.conv2 = nn.Sequential(nn.Conv2d(mid, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout))
        self.att = nn.Sequential(nn.Conv2d(mid * 2, 2, 1), nn.Sigmoid()) if fuse else None
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

    def forward(self, x, y=None, shape=None, out_shape=None):
        n, _, h, w = x.shape
        x = self.conv1(x)
        if self.att is not None:
            y = nn.functional.interpolate(y, (shape, shape), mode="nearest")
            z = self.att(torch.cat([x, y], 1))
            x = x * z[:, 0].view(n, 1, h, w) + y * z[:, 1].view(n, 1, h, w)
        if x.shape[-1] != out_shape:
            x = nn.functional.interpolate(x, (out_shape, out_shape), mode="nearest")
        return self.conv2(x), x


@FEATURE_LOSSES.register()
class ReviewKD(FeatureLoss):
    """Knowledge review (Chen et al. 2021): the student's stages and pooled feature, fused from the deepest up by
    attention-based fusion modules, against the teacher's pre-ReLU stages and pooled feature by the hierarchical
    context loss; weight 5, warmed up linearly over 20 epochs."""

    name, weight = "reviewkd", 5.0
    source = ("mdistiller mdistiller/distillers/ReviewKD.py, configs/cifar100/reviewkd.yaml (REVIEWKD_WEIGHT 5, "
              "WARMUP_EPOCHS 20); dvlab-research/ReviewKD CIFAR-100/model/reviewkd.py")
    default_paths = ("stage1", "stage2", "stage3", "pool")

    def __init__(self, student_paths=None, teacher_paths=None, *, warmup_epochs: int = 20) -> None:
        super().__init__(student_paths, teacher_paths or ["stage1:pre", "stage2:pre", "stage3:pre", "pool"])
        self.warmup_epochs = warmup_epochs
        self.epoch = 1

    def build(self, student_shapes, teacher_shapes):
        cin = [s[1] for s in student_shapes]
        cout = [t[1] for t in teacher_shapes]
        mid = min(512, cin[-1])
        n = len(cin)
        self.abfs = nn.ModuleList(_ABF(cin[i], mid, cout[i], fuse=i < n - 1) for i in range(n))[::-1]
        self.abfs = nn.ModuleList(list(self.abfs))
        self.shapes = [t[-1] for t in teacher_shapes][::-1]  # deepest first
        self.built = True

    def forward(self, fs, ft, index=None):
        xs = list(fs)[::-1]
        out, res = self.abfs[0](xs[0], out_shape=self.shapes[0])
        results = [out]
        for x, abf, shape in zip(xs[1:], self.abfs[1:], self.shapes[1:]):
            out, res = abf(x, res, shape, shape)
            results.insert(0, out)
        ramp = min(self.epoch / self.warmup_epochs, 1.0) if self.warmup_epochs else 1.0
        return ramp * FL.hcl_loss(results, ft)


def create_feature_loss(name: str, **options: Any) -> FeatureLoss:
    """A registered feature loss by name (``FEATURE_LOSSES``); an unknown option is a ``ValueError`` naming it."""
    cls = FEATURE_LOSSES.get(name)
    allowed = cls.options()
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"feature loss {name!r} has no option {', '.join(map(repr, unknown))} "
                         f"(its options: {', '.join(allowed)})")
    return cls(**options)


__all__ = ["FEATURE_LOSSES", "FeatureLoss", "create_feature_loss", "AT", "NST", "SP", "PKT", "RKD", "FitNet", "VID",
           "CRD", "OFD", "ReviewKD"]
