"""A frozen teacher's logits computed once: ``networks.NAME.cache: DIR`` (offline distillation).

The cache holds the teacher's logits for every training image and every *view* of it: one view per epoch with
augmentation (the crop and flip of image i at epoch e are drawn from ``data.augment_seed``, not from the
training seed, so runs with different seeds and methods see the same views and share the cache), one view
without. A run that finds an entry reads it; a run that does not computes the teacher live for that batch, as
it always did, and writes what it computed. So the first run fills the cache and every later one reads it, and a
run that reads what the teacher computed trains the same student, to the bit, as the run that computed it.

**On disk** (``DIR``): ``meta.json`` (what the cache was computed from), ``logits.npy`` (views x images x
classes, float32 by default: bf16 and fp32 logits are stored exactly; ``cache_dtype: fp16`` halves it, lossily;
``cache_topk: k`` keeps each view's k largest logits, FKD's compression for many classes) and ``filled.npy``
(which entries hold values). The arrays are memory-mapped: a run reads the rows of its batches only, so a cache
larger than memory streams from disk, and under torchrun each rank reads its own shard. Bytes per image per view:
4 x classes (fp32), 2 x classes (fp16), 6 x k (top-k: fp16 values and int32 indices).

**Staleness.** ``meta.json`` records the teacher's weights (SHA-256), the model, the data (its name, size and a
hash of its training images), the augmentation (crop padding, flips, ``data.augment_seed``), the precision,
channels_last, the normalisation and the compression. A cache that differs in any of them is refused with one
line naming what differs (exit 2); it is never read silently. An interrupted fill leaves entries unfilled:
they are computed and written by the next run, never read. A truncated array is refused.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError
from ..runs.files import write_atomic

FORMAT = 1
META, LOGITS, INDICES, FILLED = "meta.json", "logits.npy", "indices.npy", "filled.npy"
DTYPES = {"fp32": np.float32, "fp16": np.float16}
# meta.json's keys, in the order a mismatch is reported (the plainest first), with how errors name them.
LABELS = {"format": "cache format", "images": "number of training images", "classes": "number of classes",
          "model": "teacher model", "teacher_weights": "teacher (weights SHA-256)", "data": "data set",
          "training_images": "set of training images (SHA-256)", "augment": "augmentation (data.augment)",
          "crop_padding": "crop padding (data.crop_padding)", "hflip": "flip setting (data.hflip)",
          "augment_seed": "augmentation seed (data.augment_seed)", "mean": "normalisation mean",
          "std": "normalisation std", "image_size": "image size", "channels": "number of channels",
          "precision": "precision (train.precision)",
          "channels_last": "memory format (train.channels_last)", "dtype": "cache dtype", "topk": "cache top-k"}


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 over a model's state_dict (names, shapes, dtypes and bytes)."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        t = v.detach().to("cpu").contiguous().reshape(-1)
        h.update(f"{k}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def data_digest(data: Any) -> str:
    """SHA-256 of a run's training images as the loader sees them: the uint8 tensor, or a streamed set's files."""
    h = hashlib.sha256()
    if getattr(data, "streaming", False):
        for f in data.train_files:
            h.update(str(f).encode() + b"\n")
    else:
        x = data.train_x.contiguous()
        h.update(f"{tuple(x.shape)};".encode())
        h.update(x.numpy().tobytes())
    return h.hexdigest()


@contextlib.contextmanager
def _locked(path: Path, key: str = "cache") -> Iterator[None]:
    """An exclusive lock on ``path``/.lock (several runs may open one cache at once)."""
    import fcntl
    try:
        path.mkdir(parents=True, exist_ok=True)
        f = open(path / ".lock", "a+")
    except OSError as e:  # a file where the directory should be, under a file, read-only
        why = "is a file" if path.is_file() else (e.strerror or type(e).__name__).lower()
        raise ConfigError(f"{key}: {path} cannot be used as a cache directory ({why}); give a writable "
                          "directory") from None
    with f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class TeacherCache:
    """One network's cache (see the module's docstring): ``lookup`` a batch, ``store`` what was computed live."""

    def __init__(self, path: Path, meta: dict[str, Any], key: str) -> None:
        self.path, self.meta, self.key = Path(path), meta, key
        self.topk = int(meta["topk"])
        self.logits = np.load(path / LOGITS, mmap_mode="r+")
        self.indices = np.load(path / INDICES, mmap_mode="r+") if self.topk else None
        self.filled = np.load(path / FILLED, mmap_mode="r+")
        self.classes = int(meta["classes"])
        self.hits = 0  # batches read from the cache in this process
        self.misses = 0  # batches computed live (and written)

    @classmethod
    def open(cls, path: str | Path, key: str, expect: dict[str, Any], views: int, images: int, classes: int,
             dtype: str = "fp32", topk: int = 0) -> "TeacherCache":
        """Open (or create) the cache at ``path`` for a run whose identity is ``expect``; refuse a stale one.

        Args:
            key: the config key that names it, for the errors (``networks.teacher.cache``).
            expect: what the cache must have been computed from (weights, data, augmentation, precision, ...).
            views, images, classes: the arrays' shape this run needs (a cache with more views serves it).
        """
        path = Path(path)
        if dtype not in DTYPES:
            raise ConfigError(f"config key '{key}_dtype': {dtype!r} is not one of {', '.join(DTYPES)}")
        if topk < 0 or topk >= classes and topk:
            raise ConfigError(f"config key '{key}_topk': must be 0 (all logits) or 1..{classes - 1}, got {topk}")
        want = {"format": FORMAT, **expect, "images": images, "classes": classes, "dtype": dtype, "topk": topk}
        with _locked(path, key):
            meta_path = path / META
            if not meta_path.is_file():
                cls._create(path, want, views)
            try:
                meta = json.loads(meta_path.read_text())
            except (OSError, ValueError) as e:
                raise ConfigError(f"{key}: {meta_path} cannot be read ({e}); remove {path} to start it again") from None
            views_ok = isinstance(meta, dict) and type(meta.get("views")) is int and meta["views"] > 0
            if not views_ok:  # the other keys are compared with this run's below; views is read as a number
                raise ConfigError(f"{key}: {meta_path} is not a cache's header (a JSON object with a positive "
                                  f"integer 'views'); remove {path} to start it again")
            for k in sorted(want, key=lambda k: list(LABELS).index(k) if k in LABELS else len(LABELS)):
                v = want[k]
                if meta.get(k) != v:
                    shown = (lambda x: x[:12] + "…" if isinstance(x, str) and len(x) > 16 else x)
                    raise ConfigError(f"{key}: the cache at {path} was computed for another {LABELS.get(k, k)} "
                                      f"({shown(meta.get(k))!r} there, {shown(v)!r} in this run); it is not read. Use "
                                      f"another {key} for this run, or remove {path}")
            if meta["views"] < views:
                raise ConfigError(f"{key}: the cache at {path} holds {meta['views']} views per image (epochs of "
                                  f"augmentation), this run needs {views}; use another {key}, or remove {path}")
            cls._check_files(path, meta, key)
        return cls(path, meta, key)

    @staticmethod
    def _shapes(meta: dict[str, Any]) -> dict[str, tuple[tuple[int, ...], Any]]:
        v, n, c, k = meta["views"], meta["images"], meta["classes"], meta["topk"]
        out = {LOGITS: ((v, n, k or c), np.float16 if k else DTYPES[meta["dtype"]]), FILLED: ((v, n), np.uint8)}
        if k:
            out[INDICES] = ((v, n, k), np.int32)
        return out

    @classmethod
    def _create(cls, path: Path, meta: dict[str, Any], views: int) -> None:
        meta = {**meta, "views": views}
        for name, (shape, dtype) in cls._shapes(meta).items():
            arr = np.lib.format.open_memmap(path / name, mode="w+", dtype=dtype, shape=shape)  # sparse until written
            del arr
        write_atomic(path / META, json.dumps(meta, indent=1))  # last: a cache without it did not finish creation

    @classmethod
    def _check_files(cls, path: Path, meta: dict[str, Any], key: str) -> None:
        for name, (shape, dtype) in cls._shapes(meta).items():
            f = path / name
            try:
                arr = np.load(f, mmap_mode="r")
            except (OSError, ValueError) as e:  # a truncated file: numpy cannot map it
                raise ConfigError(f"{key}: {f} is damaged ({e}); remove {path} to compute the cache again") from None
            if arr.shape != shape or arr.dtype != np.dtype(dtype):
                raise ConfigError(f"{key}: {f} holds {arr.dtype} {arr.shape}, not {np.dtype(dtype)} {shape}; remove "
                                  f"{path} to compute the cache again")

    # ------------------------------------------------------------------ reading and writing

    def lookup(self, view: int, indices: Tensor) -> Tensor | None:
        """The cached logits of images ``indices`` at ``view`` as a float32 [n, C] tensor, or None when any of them
        is not filled yet (the caller computes the batch live and ``store``s it)."""
        idx = indices.to("cpu").numpy()
        if not self.filled[view, idx].all():
            self.misses += 1
            return None
        self.hits += 1
        return self._logits(self.logits[view, idx], self.indices[view, idx] if self.topk else None)

    def _logits(self, values: np.ndarray, top: np.ndarray | None) -> Tensor:
        """Stored values (and top-k indices) as the float32 [n, C] logits a run reads."""
        out = torch.from_numpy(np.asarray(values, dtype=np.float32))
        if top is None:
            return out
        full = torch.empty(len(out), self.classes, dtype=torch.float32)
        full[:] = out.min(dim=1, keepdim=True).values  # the classes left out sit at the k-th largest logit
        return full.scatter_(1, torch.from_numpy(np.asarray(top, dtype=np.int64)), out)

    @property
    def lossy(self) -> bool:
        """fp16 or top-k: what is read back is not what the teacher computed."""
        return bool(self.topk) or self.meta["dtype"] != "fp32"

    def through(self, epoch: int, indices: Tensor, compute: Callable[[], Tensor], device: Any, dtype: Any) -> Tensor:
        """The teacher's logits for this batch (its images' ``indices``) in epoch ``epoch`` (0-based): read back
        where the cache holds them, else ``compute()``d and stored. A lossy cache (fp16, top-k) returns what it
        stored, so that every run of a cache trains on the same values."""
        view = epoch if self.meta["views"] > 1 else 0
        cached = self.lookup(view, indices)
        if cached is not None:
            return cached.to(device, dtype)
        logits = compute()
        stored = self.store(view, indices, logits)
        return stored.to(device, dtype) if self.lossy else logits

    def store(self, view: int, indices: Tensor, logits: Tensor) -> Tensor:
        """Write a batch computed live (then mark it filled); return it as every later ``lookup`` will read it."""
        idx = indices.to("cpu").numpy()
        z = logits.detach().float().to("cpu")
        top = None
        if self.topk:
            kept = z.topk(self.topk, dim=1)
            values, top = kept.values.numpy().astype(np.float16), kept.indices.numpy().astype(np.int32)
            self.indices[view, idx] = top
        else:
            values = z.numpy().astype(self.logits.dtype)
        self.logits[view, idx] = values
        self.filled[view, idx] = 1
        return self._logits(values, top)

    def flush(self) -> None:
        for arr in (self.logits, self.indices, self.filled):
            if arr is not None:
                arr.flush()

    def filled_share(self, views: int | None = None) -> float:
        f = self.filled[: views or self.meta["views"]]
        return float(f.mean()) if f.size else 0.0

    @property
    def bytes_per_view(self) -> int:
        """Bytes per image per view on disk."""
        return self.topk * 6 if self.topk else self.classes * np.dtype(DTYPES[self.meta["dtype"]]).itemsize


def random_views(cfg: Any, data: Any) -> bool:
    """Whether training sees a new view of an image every epoch: augmentation on, or a streamed or user data set
    (whose decoding draws random crops and flips, and whose transforms are the user's)."""
    return bool(cfg.data.augment) or bool(getattr(data, "streaming", False))


def cache_views(cfg: Any, data: Any) -> int:
    """Views per image a cache holds for this run: one per epoch when the views are random, else one."""
    return cfg.train.epochs if random_views(cfg, data) else 1


def run_identity(cfg: Any, data: Any, net: Any, precision: str) -> dict[str, Any]:
    """What a cache must match for this run and network (``meta.json``'s keys, without the arrays' shape)."""
    d = cfg.data
    return {"model": net.cfg.model, "teacher_weights": weights_digest(net.model), "data": data.name,
            "training_images": data_digest(data), "mean": list(data.mean), "std": list(data.std),
            "image_size": int(data.image_size), "channels": int(data.in_chans),
            "augment": bool(d.augment), "crop_padding": d.crop_padding, "hflip": bool(d.hflip),
            "augment_seed": d.augment_seed if random_views(cfg, data) else None, "precision": precision,
            "channels_last": bool(cfg.train.channels_last)}


def check_cache_config(cfg: Any, frozen: Sequence[str]) -> None:
    """Refuse a cache the run cannot use: on a learning network, or with views that follow the training seed."""
    for n in cfg.networks:
        if not n.cache:
            continue
        if n.name not in frozen:
            raise ConfigError(f"config key 'networks.{n.name}.cache': {n.name} learns in method "
                              f"{cfg.method.name!r} (its outputs change every step), so its outputs cannot be cached; "
                              "a cache is for a frozen, trained teacher (offline methods: kd, dkd, dist)")
        if cfg.data.augment and cfg.data.augment_seed is None:
            raise ConfigError(f"config key 'networks.{n.name}.cache' needs data.augment_seed (an integer): with "
                              "augmentation, the cached views must be drawn from a seed of their own, not from "
                              "train.seed, so that every run sees the views the cache holds")


def check_cache_data(cfg: Any, data: Any) -> None:
    """A streamed or user data set draws a new view every epoch even with data.augment=false: it needs
    data.augment_seed too."""
    if any(n.cache for n in cfg.networks) and getattr(data, "streaming", False) and cfg.data.augment_seed is None:
        name = next(n.name for n in cfg.networks if n.cache)
        raise ConfigError(f"config key 'networks.{name}.cache' needs data.augment_seed (an integer): a streamed or "
                          "user data set decodes (and transforms) every image anew each epoch, so its views must be "
                          "drawn from a seed of their own")


__all__ = ["TeacherCache", "run_identity", "check_cache_config", "check_cache_data", "cache_views", "random_views",
           "weights_digest", "data_digest", "fill"]


def fill(trainer: Any, log: Any = print) -> dict[str, dict[str, Any]]:
    """Compute every cached network's missing entries ahead of training (``switokd cache``): each view of each
    training image, in batches of ``train.eval_batch_size``. Returns per network the entries computed, the
    seconds it took and the bytes on disk."""
    import time
    out = {}
    trainer.open_caches()
    views = cache_views(trainer.cfg, trainer.data)
    loader = trainer.train_loader
    bs = trainer.cfg.train.eval_batch_size
    for name, cache in trainer.caches.items():
        model = trainer.networks[name].model.eval()
        t0, computed = time.perf_counter(), 0
        for view in range(views):
            missing = torch.from_numpy(np.nonzero(cache.filled[view] == 0)[0].astype(np.int64))
            for i in range(0, len(missing), bs):
                idx = missing[i:i + bs]
                with torch.no_grad(), trainer.precision.autocast():
                    z = model(loader.view(idx, view))
                cache.store(view, idx, z)
                computed += len(idx)
            cache.flush()
        seconds = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in cache.path.glob("*.npy"))
        out[name] = {"entries": computed, "seconds": seconds, "bytes": size, "views": views,
                     "bytes_per_image_per_view": cache.bytes_per_view, "path": str(cache.path)}
        log(f"cache {name}: {computed} entries computed in {seconds:.1f}s ({views} views x "
            f"{len(trainer.data.train_y)} images, {cache.bytes_per_view} B per image per view, "
            f"{size / 2**20:.1f} MiB on disk in {cache.path})")
    return out
