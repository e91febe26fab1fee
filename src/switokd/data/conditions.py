"""Run conditions for any data set: noisy labels, scarce labels and a drifting class mix.

Every condition applies to the training split only (the test split stays clean and balanced) and is drawn
from ``data.split_seed`` alone, independent of ``train.seed``: every method and every seed of a grid, and
every rank of a torchrun job, sees the same labels and the same stream.

- ``data.labels_per_class: N`` keeps exactly N training images per class, drawn per class (then kept in
  their original order). A class with fewer than N images is an error naming it.
- ``data.label_noise: p`` changes exactly round(p * N) training labels (after the few-label subset):
  ``symmetric`` moves each to one of the other classes uniformly, ``pairflip`` moves class k to
  (k + 1) mod C (Co-teaching's pair flip). Pair flip with p >= 0.5 is refused: the wrong class would be the
  majority. The clean labels are kept to measure memorisation.
- ``data.drift_phases: K`` (with ``data.drift_share: s``) makes the class mix of the training stream change
  during the run; see ``DriftStream``.

The pure functions (``class_balanced_subset``, ``corrupt_labels``, ``DriftStream.epoch_indices``) are usable
on their own; ``apply_conditions`` applies a config's conditions to loaded splits and returns what it did.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from ..config import NOISE_KINDS
from .readers import DatasetError
MEMORISATION_CAP = 2000  # noisy-labelled training images measured each epoch (an evenly spaced sample)

# Each condition draws from its own generator, derived from data.split_seed, so that turning one on does not
# change what another draws.
_SUBSET, _NOISE, _DRIFT_GROUPS, _DRIFT_EPOCH, _VALIDATION = 1, 2, 3, 4, 5


def _generator(split_seed: int, what: int, epoch: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed((split_seed * 1_000_003 + what) * 100_019 + epoch)


def class_balanced_subset(labels: Tensor, per_class: int, num_classes: int, split_seed: int = 0,
                          class_names: Sequence[str] | None = None) -> Tensor:
    """Indices of exactly ``per_class`` examples of every class (drawn from ``split_seed``), in their original order."""
    g = _generator(split_seed, _SUBSET)
    keep = []
    for c in range(num_classes):
        idx = (labels == c).nonzero().flatten()
        if len(idx) < per_class:
            name = f"{c} ({class_names[c]!r})" if class_names is not None else str(c)
            raise DatasetError(f"data.labels_per_class={per_class}: class {name} has only {len(idx)} training "
                               "images; lower data.labels_per_class (or data.limit_train=0 to use them all)")
        keep.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    return torch.cat(keep).sort().values


def validation_count(val_split: float, n: int) -> int:
    """How many of ``n`` training images ``data.val_split`` holds out: a fraction (0 < v < 1, rounded) or a count."""
    if val_split <= 0:
        return 0
    return round(val_split * n) if val_split < 1 else int(val_split)


def validation_indices(labels: Tensor, count: int, num_classes: int, split_seed: int = 0,
                       class_names: Sequence[str] | None = None) -> Tensor:
    """Indices of ``count`` examples held out for validation, class-balanced, drawn from ``split_seed``.

    Every class gives count // C examples, and count % C classes (drawn from the seed) one more, each class's
    drawn at random from its examples; sorted. A class that would give all its examples (none left to train on)
    is a ``DatasetError`` naming it. The same on every rank and on a resumed run: it depends on the labels,
    the count and the seed alone.

    Example:
        >>> y = torch.arange(20) % 4
        >>> idx = validation_indices(y, 6, 4, split_seed=0)
        >>> len(idx), sorted(torch.bincount(y[idx], minlength=4).tolist())
        (6, [1, 1, 2, 2])
    """
    if not 0 < count < len(labels):
        raise DatasetError(f"data.val_split: {count} validation images of {len(labels)} training images; it must "
                           "leave at least one to train on")
    g = _generator(split_seed, _VALIDATION)
    extra = set(torch.randperm(num_classes, generator=g)[:count % num_classes].tolist())
    keep = []
    for c in range(num_classes):
        want = count // num_classes + (c in extra)
        idx = (labels == c).nonzero().flatten()
        if want and want >= len(idx):
            name = f"{c} ({class_names[c]!r})" if class_names is not None else str(c)
            raise DatasetError(f"data.val_split: class {name} has {len(idx)} training images, and a class-balanced "
                               f"validation split of {count} takes {want} of them, leaving none to train on; lower "
                               "data.val_split")
        keep.append(idx[torch.randperm(len(idx), generator=g)[:want]])
    return torch.cat(keep).sort().values


@dataclass
class Validation:
    """The held-out validation split: its images (a uint8 tensor, or the files of a streamed set) and labels."""

    images: Any
    labels: Tensor
    line: str  # the run header's line


def split_validation(data: Any, val_split: float, split_seed: int = 0) -> tuple[Any, Validation | None]:
    """Hold ``data.val_split`` of the training images out (``validation_indices``): returns the splits without
    them and the validation split (None when ``val_split`` is 0). Done before the run conditions, so noise and
    few labels apply to the training part only and the validation labels are the user's."""
    n = len(data.train_y)
    count = validation_count(val_split, n)
    if not count:
        if val_split > 0:
            raise DatasetError(f"data.val_split={val_split:g} of {n} training images is no image; use a larger fraction "
                               "or a count")
        return data, None
    idx = validation_indices(data.train_y, count, data.num_classes, split_seed, getattr(data, "classes", None))
    rest = torch.ones(n, dtype=torch.bool)
    rest[idx] = False
    images = ([data.train_files[i] for i in idx.tolist()] if getattr(data, "streaming", False) else data.train_x[idx])
    val = Validation(images, data.train_y[idx],
                     f"validation {count} of {n} training images held out (class-balanced, split seed {split_seed}, "
                     "labels as given); best.pt and the best epoch are chosen on it")
    return _select(data, rest.nonzero().flatten()), val


def corrupt_labels(labels: Tensor, num_classes: int, p: float, kind: str = "symmetric",
                   split_seed: int = 0) -> Tensor:
    """A copy of ``labels`` with exactly round(p * N) of them changed (symmetric or pair flip)."""
    if kind not in NOISE_KINDS:
        raise ValueError(f"noise kind must be one of {', '.join(NOISE_KINDS)}, got {kind!r}")
    n = len(labels)
    k = round(p * n)
    g = _generator(split_seed, _NOISE)
    which = torch.randperm(n, generator=g)[:k]
    noisy = labels.clone()
    if kind == "symmetric":
        # A uniform draw over the C - 1 other classes: a shift of 1..C-1, modulo C.
        shift = torch.randint(1, num_classes, (k,), generator=g)
        noisy[which] = (labels[which] + shift) % num_classes
    else:
        noisy[which] = (labels[which] + 1) % num_classes
    return noisy


def _draw(pool: Tensor, n: int, g: torch.Generator) -> Tensor:
    """``n`` items of ``pool``: whole random permutations of it, repeated as needed, cut at ``n``."""
    if n <= 0:
        return pool[:0]
    reps = -(-n // len(pool))
    return torch.cat([pool[torch.randperm(len(pool), generator=g)] for _ in range(reps)])[:n]


@dataclass
class DriftStream:
    """A training stream whose class mix changes in phases.

    The classes are split into K groups (a permutation of the classes drawn from ``split_seed``, cut into K
    groups of sizes as equal as possible); the run's epochs are split into K phases of consecutive epochs
    (epoch e, counted from 0, is in phase e * K // epochs). Every epoch of phase k has as many examples as the
    training set, N: exactly round(s * N) of them from group k's classes and the rest from the other classes.
    Each part is drawn from ``(split_seed, epoch)`` as whole random permutations of its pool, repeated when
    the part is larger than its pool (so in-group images repeat within an epoch when s * N exceeds them)
    and cut short when smaller. The loader then shuffles the epoch's N examples with ``(train.seed, epoch)``
    as usual, so the steps per epoch, the schedule and the resume position are those of a run without drift,
    and a run resumed inside a phase sees the same stream.
    """

    labels: Tensor  # the clean training labels: the data drifts, whatever the labels say
    num_classes: int
    phases: int
    share: float
    epochs: int
    split_seed: int = 0

    def __post_init__(self) -> None:
        perm = torch.randperm(self.num_classes, generator=_generator(self.split_seed, _DRIFT_GROUPS))
        self.groups = [g.sort().values.tolist() for g in torch.tensor_split(perm, self.phases)]
        for k, g in enumerate(self.groups):
            if not bool(torch.isin(self.labels, torch.tensor(g)).any()):
                raise DatasetError(f"data.drift_phases={self.phases}: the classes {g} of phase {k + 1} have no "
                                   "training images; use fewer phases")

    def phase(self, epoch: int) -> int:
        """The phase (0 .. K-1) of an epoch counted from 0."""
        return min(epoch * self.phases // max(self.epochs, 1), self.phases - 1)

    def in_group(self, epoch: int) -> Tensor:
        """A bool mask over the training set: the examples of this epoch's phase's classes."""
        return torch.isin(self.labels, torch.tensor(self.groups[self.phase(epoch)]))

    def epoch_indices(self, epoch: int) -> Tensor:
        """The epoch's N training indices (a multiset, in draw order; the loader shuffles it)."""
        n = len(self.labels)
        mask = self.in_group(epoch)
        inside, outside = mask.nonzero().flatten(), (~mask).nonzero().flatten()
        n_in = round(self.share * n) if len(outside) else n
        g = _generator(self.split_seed, _DRIFT_EPOCH, epoch)
        return torch.cat([_draw(inside, n_in, g), _draw(outside, n - n_in, g)])


@dataclass
class Conditions:
    """What ``apply_conditions`` did to the training split, for the header, the logs and the diagnostics."""

    lines: list[str]  # the run header's lines, one per condition
    clean_y: Tensor | None = None  # the training labels before noise (None: no noise)
    noisy: Tensor | None = None  # indices of the training examples whose label was changed
    drift: DriftStream | None = None
    memorisation: "Memorisation | None" = None  # built by the trainer, which knows the device and loaders

    @property
    def measured(self) -> bool:
        """Whether an epoch has diagnostics to record (label noise or drift)."""
        return self.memorisation is not None or self.drift is not None

    def diagnostics(self, epoch: int, predict: Callable[[Tensor], dict[str, Tensor]],
                    reduce: Callable[[Tensor], Tensor], class_hits=None) -> dict[str, Any]:
        """An epoch's diagnostics (epoch counted from 0; networks in eval mode): ``memorisation`` under label
        noise, every epoch; ``drift`` (phase, group and, with ``class_hits`` from an evaluation, the test accuracy
        on the phase's classes and on the others)."""
        out: dict[str, Any] = {}
        if self.memorisation is not None:
            out["memorisation"] = self.memorisation.measure(predict, reduce)
        if self.drift is not None:
            out["drift"] = drift_summary(self.drift, epoch, class_hits)
        return out

    def describe(self) -> dict[str, Any]:
        """The conditions as plain data (``report.json``)."""
        out: dict[str, Any] = {"lines": list(self.lines)}
        if self.noisy is not None:
            out["noisy_labels"] = len(self.noisy)
        if self.drift is not None:
            out["drift_groups"] = self.drift.groups
        return out

    def memorisation_sample(self) -> Tensor | None:
        """Up to ``MEMORISATION_CAP`` noisy-labelled training indices, evenly spaced over them (None: no noise)."""
        if self.noisy is None or not len(self.noisy):
            return None
        n = len(self.noisy)
        if n <= MEMORISATION_CAP:
            return self.noisy
        return self.noisy[torch.arange(MEMORISATION_CAP) * n // MEMORISATION_CAP]


def _select(data: Any, idx: Tensor) -> Any:
    """The splits with only the training examples ``idx`` (in-memory tensors or streamed file lists)."""
    if getattr(data, "streaming", False):
        files = [data.train_files[i] for i in idx.tolist()]
        return dataclasses.replace(data, train_files=files, train_y=data.train_y[idx])
    return dataclasses.replace(data, train_x=data.train_x[idx], train_y=data.train_y[idx])


def apply_conditions(data: Any, d: Any, epochs: int) -> tuple[Any, Conditions]:
    """Apply ``d``'s (a ``DataConfig``) conditions to loaded splits; returns new splits (the given ones are not
    changed) and what was done."""
    lines: list[str] = []
    names = getattr(data, "classes", None)
    seed = d.split_seed
    if d.labels_per_class:
        before = len(data.train_y)
        data = _select(data, class_balanced_subset(data.train_y, d.labels_per_class, data.num_classes, seed, names))
        lines.append(f"few labels {d.labels_per_class} per class (split seed {seed}): {len(data.train_y)} of "
                     f"{before} training images kept")
    clean_y = noisy = None
    if d.label_noise > 0:
        clean_y = data.train_y
        noisy_y = corrupt_labels(clean_y, data.num_classes, d.label_noise, d.label_noise_kind, seed)
        noisy = (noisy_y != clean_y).nonzero().flatten()
        data = dataclasses.replace(data, train_y=noisy_y)
        lines.append(f"label noise {d.label_noise:.0%} {d.label_noise_kind} (split seed {seed}): {len(noisy)} of "
                     f"{len(noisy_y)} training labels changed")
    drift = None
    if d.drift_phases:
        if d.drift_phases > data.num_classes:
            raise DatasetError(f"data.drift_phases={d.drift_phases}: more phases than the {data.num_classes} classes "
                               "(each phase needs a group of classes of its own)")
        if d.drift_phases > epochs:
            raise DatasetError(f"data.drift_phases={d.drift_phases}: more phases than train.epochs={epochs} "
                               "(every phase needs at least one epoch)")
        drift = DriftStream(clean_y if clean_y is not None else data.train_y, data.num_classes, d.drift_phases,
                            d.drift_share, epochs, seed)
        per = epochs / d.drift_phases
        length = f"{per:g} epochs" if per == int(per) else f"{int(per)}-{int(per) + 1} epochs"
        lines.append(f"drift {d.drift_phases} phases of {length} (split seed {seed}): in each, one group of "
                     f"classes is {d.drift_share:.0%} of the stream; groups {drift.groups}")
    return data, Conditions(lines, clean_y, noisy, drift)


# ----------------------------------------------------------------------------- memorisation


class Memorisation:
    """The memorisation diagnostic of a noisy-label run: over a fixed sample of the noisy-labelled training
    images (``Conditions.memorisation_sample``, without augmentation), the share each network predicts as its
    noisy label and as its true label."""

    def __init__(self, loader, noisy_y: Tensor, clean_y: Tensor) -> None:
        self.loader, self.noisy_y, self.clean_y = loader, noisy_y, clean_y

    @classmethod
    def build(cls, data: Any, conditions: Conditions, make_loader: Callable[..., Any],
              device: torch.device) -> "Memorisation | None":
        """``make_loader(images, labels)`` builds an evaluation loader (``datasets.eval_loader``); None without noise."""
        sample = conditions.memorisation_sample()
        if sample is None:
            return None
        images = ([data.train_files[i] for i in sample.tolist()] if getattr(data, "streaming", False)
                  else data.train_x[sample])
        # The loader's "labels" are positions in the sample, which index both label vectors.
        loader = make_loader(images, torch.arange(len(sample)))
        return cls(loader, data.train_y[sample].to(device), conditions.clean_y[sample].to(device))

    @torch.no_grad()
    def measure(self, predict: Callable[[Tensor], dict[str, Tensor]],
                reduce: Callable[[Tensor], Tensor] = lambda t: t) -> dict[str, dict[str, float]]:
        """Each network's shares over the sample; ``reduce`` sums the counts over processes (each holds a shard)."""
        counts = memorisation_counts(predict, self.loader, self.noisy_y, self.clean_y)
        names = list(counts)
        flat = reduce(torch.stack([counts[n] for n in names]))
        return memorisation_shares(dict(zip(names, flat)))


def memorisation_counts(predict: Callable[[Tensor], dict[str, Tensor]], batches, noisy_y: Tensor,
                        clean_y: Tensor) -> dict[str, Tensor]:
    """Per network, how many examples are predicted as their noisy label and as their true label.

    ``batches`` yields (images, positions) where positions index ``noisy_y``/``clean_y``; ``predict`` maps
    images to each network's logits. Returns {network: tensor([noisy_hits, true_hits, count])}.
    """
    counts: dict[str, Tensor] = {}
    for x, pos in batches:
        for name, z in predict(x).items():
            pred = z.argmax(1)
            row = torch.stack([(pred == noisy_y[pos]).sum(), (pred == clean_y[pos]).sum(),
                               torch.tensor(len(pos), device=pred.device)]).float()
            counts[name] = counts[name] + row if name in counts else row
    return counts


def memorisation_shares(counts: dict[str, Tensor]) -> dict[str, dict[str, float]]:
    """{network: {"noisy_label": share, "true_label": share, "images": n}} from ``memorisation_counts``."""
    out = {}
    for name, (noisy_hits, true_hits, n) in ((k, v.tolist()) for k, v in counts.items()):
        out[name] = {"noisy_label": noisy_hits / max(n, 1), "true_label": true_hits / max(n, 1), "images": int(n)}
    return out


def drift_summary(drift: DriftStream, epoch: int, class_hits: tuple[dict[str, Tensor], Tensor] | None) -> dict[str, Any]:
    """An epoch's phase and group, and with ``class_hits`` (per-network per-class test hits, per-class counts)
    each network's test accuracy (%) on the phase's classes and on the other classes."""
    k = drift.phase(epoch)
    out: dict[str, Any] = {"phase": k + 1, "group": drift.groups[k]}
    if class_hits is not None:
        hits, seen = class_hits
        mask = torch.zeros(len(seen), dtype=torch.bool, device=seen.device)
        mask[drift.groups[k]] = True
        for key, m in (("test_acc_group", mask), ("test_acc_rest", ~mask)):
            n = seen[m].sum().item()
            out[key] = {name: 100.0 * h[m].sum().item() / n if n else None for name, h in hits.items()}
    return out
