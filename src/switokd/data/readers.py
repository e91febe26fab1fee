"""Readers for the standard on-disk formats. Each returns uint8 NCHW images and int64 labels.

No reader downloads anything: the files must already be on disk, and a missing
or malformed file raises ``DatasetError`` naming the path and what was expected.
"""
from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor


from ..errors import DatasetError  # noqa: E402  (re-exported)


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}

# ----------------------------------------------------------------------------- IDX (MNIST family)

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DatasetError(f"cannot read IDX file {path}: {e.strerror}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DatasetError(f"{path}: corrupt gzip data ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DatasetError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()!r}, expected 0000080N)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path}: IDX header truncated")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DatasetError(f"{path}: IDX header says shape {shape} ({expected} bytes) but the file holds {len(raw) - header}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _find(root: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (root / name).is_file():
            return root / name
    # Some mirrors use dots instead of the final dash (train-images.idx3-ubyte).
    for p in sorted(root.glob(stem.replace("-idx", ".idx") + "*")):
        return p
    raise DatasetError(f"missing {stem}[.gz] in {root}")


def read_mnist_dir(root: str | Path, split: str) -> tuple[Tensor, Tensor]:
    """MNIST/Fashion-MNIST: ``train-images-idx3-ubyte[.gz]`` etc. in one directory."""
    root = Path(root)
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(_find(root, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find(root, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DatasetError(f"{root}: {prefix} images {images.shape} and labels {labels.shape} do not match")
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


# ----------------------------------------------------------------------------- CIFAR python pickles


class _NumpyOnlyUnpickler(pickle._Unpickler):  # type: ignore[name-defined,misc]
    """CIFAR batches are pickles; only let them build numpy arrays, never run other code, and never allocate more
    than the file can hold.

    The pure-Python unpickler, so that every array's claimed size is checked before numpy allocates it: a
    220-byte pickle can claim 100,000 x 3072 float64 (2.4 GB), in ``_reconstruct``'s shape or in ``BUILD``'s
    state; both are refused unless the file's own bytes hold the data. Object arrays are refused (numpy fills them
    from a list, and a short list crashes it).
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def __init__(self, file, *, limit: int, **kw) -> None:
        super().__init__(file, **kw)
        self.limit = limit  # bytes: no array may claim more than the file holds

    def _check_size(self, shape: Any, dtype: Any) -> None:
        try:
            dt = np.dtype(dtype)
            n = 1
            for d in shape:
                if int(d) < 0:
                    raise ValueError
                n *= int(d)
        except Exception:
            raise pickle.UnpicklingError(f"an array with shape {shape!r} and dtype {dtype!r}") from None
        if dt.hasobject:
            raise pickle.UnpicklingError("an array of Python objects (a CIFAR batch holds numbers)")
        if n * dt.itemsize > self.limit:
            raise pickle.UnpicklingError(f"an array of {shape} {dt} ({n * dt.itemsize:,} bytes) in a file of "
                                         f"{self.limit:,} bytes")

    def _reconstruct(self, subtype: Any, shape: Any, dtype: Any) -> Any:
        if subtype is not np.ndarray:
            raise pickle.UnpicklingError(f"refusing to build {subtype!r}")
        self._check_size(shape if isinstance(shape, tuple) else (shape,), np.uint8 if dtype in (b"b", "b") else dtype)
        return np.ndarray.__new__(np.ndarray, shape, np.uint8 if dtype in (b"b", "b") else dtype)

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if name == "_reconstruct":
            return self._reconstruct
        return super().find_class(module, name)

    def load_build(self) -> None:
        inst, state = self.stack[-2], self.stack[-1]
        if isinstance(inst, np.ndarray):
            if not (isinstance(state, tuple) and len(state) == 5):
                raise pickle.UnpicklingError(f"an array state of {type(state).__name__}")
            _, shape, dtype, _, raw = state
            self._check_size(shape, dtype)
            n = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
            if not isinstance(raw, (bytes, bytearray)) or len(raw) != n:
                raise pickle.UnpicklingError(f"an array of {shape} whose data is {len(raw) if hasattr(raw, '__len__') else raw!r}"
                                             f" bytes, not {n}")
        super().load_build()

    dispatch = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]
    dispatch[pickle.BUILD[0]] = load_build


def _load_cifar_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            d = _NumpyOnlyUnpickler(f, limit=os.fstat(f.fileno()).st_size, encoding="bytes").load()
    except FileNotFoundError:
        raise DatasetError(f"missing CIFAR batch file {path}") from None
    except Exception as e:  # pickle raises many types on garbage input
        raise DatasetError(f"{path}: not a CIFAR python batch ({type(e).__name__}: {e})") from None
    if not isinstance(d, dict):
        raise DatasetError(f"{path}: expected a pickled dict, got {type(d).__name__}")
    d = {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}
    key = label_key.decode()
    if "data" not in d or key not in d:
        raise DatasetError(f"{path}: expected keys 'data' and {key!r}, found {sorted(d)}")
    data = np.asarray(d["data"], dtype=np.uint8)
    labels = np.asarray(d[key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise DatasetError(f"{path}: 'data' must be N x 3072 uint8 with N labels, got {data.shape} and {labels.shape}")
    return data, labels


def read_cifar_dir(root: str | Path, split: str, num_classes: int) -> tuple[Tensor, Tensor]:
    """CIFAR-10 (``cifar-10-batches-py``) or CIFAR-100 (``cifar-100-python``) python batches."""
    root = Path(root)
    if num_classes == 10:
        sub = root / "cifar-10-batches-py" if (root / "cifar-10-batches-py").is_dir() else root
        files = [sub / f"data_batch_{i}" for i in range(1, 6)] if split == "train" else [sub / "test_batch"]
        key = b"labels"
    else:
        sub = root / "cifar-100-python" if (root / "cifar-100-python").is_dir() else root
        files = [sub / ("train" if split == "train" else "test")]
        key = b"fine_labels"
    parts = [_load_cifar_batch(f, key) for f in files]
    data = np.concatenate([p[0] for p in parts]).reshape(-1, 3, 32, 32)
    labels = np.concatenate([p[1] for p in parts])
    if labels.min() < 0 or labels.max() >= num_classes:
        raise DatasetError(f"{sub}: labels outside 0..{num_classes - 1}")
    return torch.from_numpy(data), torch.from_numpy(labels)


# ----------------------------------------------------------------------------- image files


# Images larger than this are refused before their pixels are decoded: a hostile file (a "decompression bomb",
# a few bytes claiming 100,000 x 100,000 pixels) cannot exhaust memory. 64 megapixels, above any photo a
# classifier here is trained on (ImageNet's largest are ~ 20 MP); raise it here for larger images.
MAX_IMAGE_PIXELS = 64_000_000


def decode_image(path: Path, mode: str, transform: Callable[[Any], Any] | None = None) -> np.ndarray:
    """One image file as a uint8 H x W x C array in ``mode`` ("L" or "RGB"), after ``transform`` (a function of the
    PIL image, e.g. a resize or crop). Every broken or hostile file (empty, not an image, truncated, a decompression
    bomb, more pixels than ``MAX_IMAGE_PIXELS``) is a ``DatasetError`` naming the file, whatever PIL raised."""
    from PIL import Image

    with _opened(path) as im:
        try:
            im = im.convert(mode)
            if transform is not None:
                im = transform(im)
            arr = np.asarray(im, dtype=np.uint8)
        except Exception as e:  # truncated data, bad chunks...: PIL raises many types
            raise DatasetError(f"cannot decode image {path}: {_why(e)}") from None
    return arr[:, :, None] if arr.ndim == 2 else arr


def image_header(path: Path) -> tuple[str, tuple[int, int], bool]:
    """The file's PIL mode, size and whether a palette is all gray, read from its header (no pixels decoded)."""
    with _opened(path) as im:
        gray = False
        if im.mode == "P":
            pal = im.getpalette() or []
            gray = all(pal[i] == pal[i + 1] == pal[i + 2] for i in range(0, len(pal) - 2, 3))
        return im.mode, im.size, gray


class _opened:
    """``Image.open`` with the checks every reader needs: a readable, non-empty image file whose header claims
    at most ``MAX_IMAGE_PIXELS`` pixels. Each failure is one ``DatasetError`` naming the file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def __enter__(self):
        import warnings
        from PIL import Image

        p = self.path
        try:
            if p.stat().st_size == 0:
                raise DatasetError(f"cannot decode image {p}: the file is empty (0 bytes)")
        except OSError as e:
            raise DatasetError(f"cannot read image {p}: {e.strerror or e}") from None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                self.im = Image.open(p)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise DatasetError(f"refused image {p}: {_why(e)} (switokd refuses images over "
                               f"{MAX_IMAGE_PIXELS:,} pixels)") from None
        except Exception as e:
            raise DatasetError(f"cannot decode image {p}: {_why(e)}") from None
        w, h = self.im.size
        if w * h > MAX_IMAGE_PIXELS:
            self.im.close()
            raise DatasetError(f"refused image {p}: it claims {w}x{h} = {w * h:,} pixels, over switokd's limit of "
                               f"{MAX_IMAGE_PIXELS:,} (a decompression bomb, or an image to shrink first)")
        return self.im

    def __exit__(self, *exc) -> None:
        self.im.close()


def _why(e: Exception) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:200]


def load_image(path: Path, mode: str, size: int | None) -> np.ndarray:
    """An image file as uint8 H x W x C in ``mode``, resized to ``size`` x ``size`` if given."""
    from PIL import Image

    def resize(im):
        return im.resize((size, size), Image.BILINEAR) if size and im.size != (size, size) else im

    return decode_image(path, mode, resize)


def stack_images(paths: list[Path], mode: str, size: int | None) -> Tensor:
    """Decode image files into one uint8 N x C x H x W tensor; all must share a size."""
    if not paths:
        return torch.empty(0, 3 if mode == "RGB" else 1, size or 1, size or 1, dtype=torch.uint8)
    arrays = []
    for p in paths:
        a = load_image(p, mode, size)
        if arrays and a.shape != arrays[0].shape:
            raise DatasetError(
                f"{p}: image size {a.shape[1]}x{a.shape[0]} differs from {arrays[0].shape[1]}x{arrays[0].shape[0]}"
                " of the first image; set data.image_size to resize all images"
            )
        arrays.append(a)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def read_tiny_imagenet(root: str | Path, split: str) -> tuple[Tensor, Tensor, list[str]]:
    """Tiny-ImageNet-200: ``wnids.txt``, ``train/<wnid>/images/*.JPEG``, ``val/images`` + ``val_annotations.txt``.

    The labelled ``val`` split serves as the test set (``test`` has no labels).
    """
    root = Path(root)
    if (root / "tiny-imagenet-200").is_dir():
        root = root / "tiny-imagenet-200"
    wnids_file = root / "wnids.txt"
    if not wnids_file.is_file():
        raise DatasetError(f"missing {wnids_file} (expected the tiny-imagenet-200 directory layout)")
    wnids = [w.strip() for w in wnids_file.read_text().splitlines() if w.strip()]
    index = {w: i for i, w in enumerate(wnids)}
    paths: list[Path] = []
    labels: list[int] = []
    if split == "train":
        for w in wnids:
            folder = root / "train" / w / "images"
            if not folder.is_dir():
                raise DatasetError(f"missing folder {folder} for class {w} listed in {wnids_file}")
            imgs = _images_in(folder)
            paths += imgs
            labels += [index[w]] * len(imgs)
    else:
        ann = root / "val" / "val_annotations.txt"
        if not ann.is_file():
            raise DatasetError(f"missing {ann}")
        for lineno, line in enumerate(ann.read_text().splitlines(), 1):
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) < 2 or fields[1] not in index:
                raise DatasetError(f"{ann}:{lineno}: expected '<file>\\t<wnid>\\t...' with a wnid from wnids.txt, got {line!r}")
            paths.append(root / "val" / "images" / fields[0])
            labels.append(index[fields[1]])
    return stack_images(paths, "RGB", 64), torch.tensor(labels, dtype=torch.int64), wnids


def list_image_folder(root: str | Path, classes: list[str] | None) -> tuple[list[Path], list[int], list[str]]:
    """The image files and labels of one split in torchvision's ImageFolder layout (one sub-folder per class)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"missing image folder {root}")
    found = sorted(p.name for p in root.iterdir() if p.is_dir())
    if classes is None:
        classes = found
    unknown = set(found) - set(classes)
    if unknown:
        raise DatasetError(f"{root}: class folders {sorted(unknown)} are not among the training classes {classes}; "
                           "every class of data.dir's val/ (or test/) must also be in train/")
    if not classes:
        raise DatasetError(f"{root}: no class sub-folders; data.dir must hold train/<class>/ and val/<class>/ folders")
    paths: list[Path] = []
    labels: list[int] = []
    for i, c in enumerate(classes):
        if (root / c).is_dir():
            imgs = _images_in(root / c)
            if not imgs:
                raise DatasetError(f"class folder {root / c} has no image files ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                                   "put images in it or remove it from data.dir")
            paths += imgs
            labels += [i] * len(imgs)
    if not paths:
        raise DatasetError(f"{root}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in the class folders of data.dir")
    return paths, labels, classes


GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")


def image_mode(path: Path) -> str:
    """The file's PIL mode, read from its header (a palette image counts as gray only if all its entries are)."""
    mode, _, gray_palette = image_header(path)
    if mode == "P":
        return "L" if gray_palette else "RGB"
    return mode


def common_mode(paths: list[Path]) -> str:
    """``L`` if every file is grayscale, else ``RGB``: one color file makes the whole data set color."""
    return "L" if all(image_mode(p) in GRAY_MODES for p in paths) else "RGB"


def read_image_folder(root: str | Path, classes: list[str] | None, size: int | None,
                      mode: str | None = None) -> tuple[Tensor, Tensor, list[str]]:
    """One split of an image folder, decoded (``mode`` None: gray if all its files are gray, else RGB)."""
    paths, labels, classes = list_image_folder(root, classes)
    return stack_images(paths, mode or common_mode(paths), size), torch.tensor(labels, dtype=torch.int64), classes


def read_cifar_names(root: str | Path, num_classes: int) -> list[str] | None:
    """Class names from CIFAR's ``batches.meta`` / ``meta`` pickle, if present and well formed."""
    root = Path(root)
    sub, meta, key = ((root / "cifar-10-batches-py", "batches.meta", "label_names") if num_classes == 10
                      else (root / "cifar-100-python", "meta", "fine_label_names"))
    path = (sub if sub.is_dir() else root) / meta
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as f:
            d = _NumpyOnlyUnpickler(f, limit=os.fstat(f.fileno()).st_size, encoding="bytes").load()
        names = d.get(key.encode(), d.get(key)) if isinstance(d, dict) else None
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    except Exception:  # names are a nicety: a damaged meta file falls back to indices
        return None
    return names if len(names) == num_classes else None


def read_wnid_words(root: str | Path, wnids: list[str]) -> list[str]:
    """Tiny-ImageNet class names: the first synonym in ``words.txt`` for each wnid, else the wnid."""
    root = Path(root)
    if (root / "tiny-imagenet-200").is_dir():
        root = root / "tiny-imagenet-200"
    words: dict[str, str] = {}
    try:
        for line in (root / "words.txt").read_text(errors="replace").splitlines():
            wnid, _, text = line.partition("\t")
            words[wnid.strip()] = text.split(",")[0].strip()
    except OSError:
        pass
    return [words.get(w) or w for w in wnids]
