"""Every reader on small files written in the real on-disk format, including bad files."""
import gzip
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from switokd.data import DatasetError, TensorLoader, load_dataset
from switokd.data.readers import read_idx
from switokd.data.transforms import random_crop, random_hflip


def write_idx(path, arr, gz):
    codes = {np.uint8: 0x08}
    header = bytes([0, 0, codes[arr.dtype.type], arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    data = header + arr.tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


def make_mnist_dir(root, n_train=20, n_test=10, gz=True):
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(root / f"{prefix}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), gz)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{suffix}", rng.integers(0, 10, n, dtype=np.uint8), gz)
    return root


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_idx(tmp_path, gz):
    make_mnist_dir(tmp_path, gz=gz)
    s = load_dataset("fashion_mnist", str(tmp_path))
    assert s.train_x.shape == (20, 1, 28, 28) and s.train_x.dtype == torch.uint8
    assert s.test_y.shape == (10,) and s.test_y.dtype == torch.int64
    raw = read_idx(tmp_path / f"train-images-idx3-ubyte{'.gz' if gz else ''}")
    assert torch.equal(s.train_x[:, 0], torch.from_numpy(raw.copy()))


def test_idx_bad_files(tmp_path):
    make_mnist_dir(tmp_path, gz=False)
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-5])  # truncated
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte.*holds"):
        load_dataset("fashion_mnist", str(tmp_path))
    p.write_bytes(b"\x12\x34\x56\x78" + b"\0" * 100)
    with pytest.raises(DatasetError, match="bad magic"):
        read_idx(p)
    (tmp_path / "x.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(DatasetError, match="corrupt gzip"):
        read_idx(tmp_path / "x.gz")


def test_missing_dir_says_where(tmp_path):
    with pytest.raises(DatasetError, match="dataset-fashion-mnist"):
        load_dataset("fashion_mnist", str(tmp_path / "nope"))
    with pytest.raises(DatasetError, match="cifar-10-batches-py"):
        load_dataset("cifar10", str(tmp_path / "nope"))


def write_cifar(root, classes):
    rng = np.random.default_rng(0)
    key = b"labels" if classes == 10 else b"fine_labels"
    if classes == 10:
        d = root / "cifar-10-batches-py"
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    else:
        d = root / "cifar-100-python"
        names = ["train", "test"]
    d.mkdir()
    for name in names:
        n = 6
        # The real batches are python-2 pickles of dicts with bytes keys.
        batch = {b"batch_label": b"x", key: rng.integers(0, classes, n).tolist(),
                 b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"filenames": [b"a.png"] * n}
        if classes == 100:
            batch[b"coarse_labels"] = [0] * n
        with open(d / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    return d


@pytest.mark.parametrize("classes", [10, 100])
def test_cifar_pickles(tmp_path, classes):
    d = write_cifar(tmp_path, classes)
    s = load_dataset(f"cifar{classes}", str(tmp_path))
    assert s.train_x.shape == ((30 if classes == 10 else 6), 3, 32, 32)
    assert s.test_x.shape == (6, 3, 32, 32) and s.num_classes == classes
    # Row layout: 1024 red, then green, then blue values, row-major.
    with open(d / ("test_batch" if classes == 10 else "test"), "rb") as f:
        raw = pickle.load(f, encoding="bytes")[b"data"]
    assert torch.equal(s.test_x[0, 1].flatten(), torch.from_numpy(raw[0, 1024:2048]))
    # Also works when data.dir points at the batch folder itself.
    assert len(load_dataset(f"cifar{classes}", str(d)).test_y) == 6


def test_cifar_bad_files(tmp_path):
    d = write_cifar(tmp_path, 10)
    (d / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DatasetError, match="test_batch.*not a CIFAR python batch"):
        load_dataset("cifar10", str(tmp_path))

    class Evil:
        def __reduce__(self):
            import os
            return (os.system, ("echo pwned",))

    with open(d / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil()}, f)
    with pytest.raises(DatasetError, match="refusing to load"):
        load_dataset("cifar10", str(tmp_path))
    with open(d / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f, protocol=2)
    with pytest.raises(DatasetError, match="N x 3072"):
        load_dataset("cifar10", str(tmp_path))


def _img(path, size=64, mode="RGB", value=0):
    arr = np.full((size, size, 3) if mode == "RGB" else (size, size), value, np.uint8)
    Image.fromarray(arr, mode).save(path)


def test_tiny_imagenet(tmp_path):
    root = tmp_path / "tiny-imagenet-200"
    wnids = ["n01", "n02", "n03"]
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    lines = []
    for i, w in enumerate(wnids):
        (root / "train" / w / "images").mkdir(parents=True)
        (root / "train" / w / f"{w}_boxes.txt").write_text("")
        for j in range(2):
            _img(root / "train" / w / "images" / f"{w}_{j}.JPEG", value=40 * i)
        _img(root / "val" / "images" / f"val_{i}.JPEG", value=40 * i)
        lines.append(f"val_{i}.JPEG\t{w}\t0\t0\t10\t10")
    _img(root / "val" / "images" / "val_gray.JPEG", mode="L", value=80)  # grayscale files exist in the real set
    lines.append("val_gray.JPEG\tn03\t0\t0\t10\t10")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    s = load_dataset("tiny_imagenet", str(tmp_path))
    assert s.train_x.shape == (6, 3, 64, 64) and s.test_x.shape == (4, 3, 64, 64)
    assert s.train_y.tolist() == [0, 0, 1, 1, 2, 2] and s.test_y.tolist() == [0, 1, 2, 2]
    assert abs(int(s.train_x[2].float().mean()) - 40) <= 2  # JPEG is lossy
    (root / "val" / "images" / "val_1.JPEG").write_bytes(b"\xff\xd8 broken jpeg")
    with pytest.raises(DatasetError, match="val_1.JPEG"):
        load_dataset("tiny_imagenet", str(tmp_path))
    (root / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn99\t0\n")
    with pytest.raises(DatasetError, match="val_annotations.txt:1"):
        load_dataset("tiny_imagenet", str(tmp_path))


def test_image_folder(tmp_path):
    for split in ("train", "val"):
        for c, v in (("cat", 10), ("dog", 200)):
            (tmp_path / split / c).mkdir(parents=True)
            for j in range(3 if split == "train" else 1):
                _img(tmp_path / split / c / f"{j}.png", size=16, value=v)
    (tmp_path / "train" / "cat" / "notes.txt").write_text("ignored")
    s = load_dataset("image_folder", str(tmp_path))
    assert s.train_x.shape == (6, 3, 16, 16) and s.num_classes == 2
    assert s.train_y.tolist() == [0, 0, 0, 1, 1, 1] and s.test_y.tolist() == [0, 1]
    assert s.train_x[0].max() == 10 and s.train_x[3].min() == 200  # PNG is lossless
    _img(tmp_path / "train" / "dog" / "big.png", size=20)
    with pytest.raises(DatasetError, match="big.png.*differs"):
        load_dataset("image_folder", str(tmp_path))
    assert load_dataset("image_folder", str(tmp_path), image_size=12).train_x.shape == (7, 3, 12, 12)
    (tmp_path / "val" / "bird").mkdir()
    with pytest.raises(DatasetError, match="bird"):
        load_dataset("image_folder", str(tmp_path), image_size=12)


def test_random_crop_and_flip():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.uint8).reshape(2, 1, 4, 4)
    assert torch.equal(random_crop(x, 0), x)
    g = torch.Generator().manual_seed(0)
    out = random_crop(x, 1, g)
    assert out.shape == x.shape and out.dtype == torch.uint8
    for i in range(2):  # each output is a shifted window of the zero-padded image
        padded = torch.nn.functional.pad(x[i], (1, 1, 1, 1))
        assert any(torch.equal(out[i], padded[:, r:r + 4, c:c + 4]) for r in range(3) for c in range(3))
    f = random_hflip(x, torch.Generator().manual_seed(1))
    for i in range(2):
        assert torch.equal(f[i], x[i]) or torch.equal(f[i], x[i].flip(2))


def test_loader_reproducible_and_resumable(splits):
    kw = dict(mean=splits.mean, std=splits.std, train=True, crop_padding=1, hflip=True, seed=3)
    a = TensorLoader(splits.train_x, splits.train_y, 10, **kw)
    b = TensorLoader(splits.train_x, splits.train_y, 10, **kw)
    a.set_epoch(2), b.set_epoch(2)
    full = list(a)
    assert len(full) == len(a) == 7 and sum(len(y) for _, y in full) == 64
    tail = list(b.batches(start=4))
    assert len(tail) == 3 and [len(y) for _, y in tail] == [10, 10, 4]
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(full[4:], tail))
    assert list(b.batches(start=7)) == []
    b.set_epoch(3)
    assert not torch.equal(next(iter(b))[1], full[0][1])
    # Normalised with the given mean/std.
    ev = TensorLoader(splits.test_x, splits.test_y, 32, mean=(0.5,), std=(0.25,), train=False)
    x, _ = next(iter(ev))
    assert torch.allclose(x, (splits.test_x.float() / 255 - 0.5) / 0.25, atol=1e-5)


@pytest.mark.parametrize("pad,hflip", [(2, True), (1, True), (1, False), (0, True)])
def test_training_batches_are_augmented_exactly_as_drawn_from_the_seed(splits, pad, hflip):
    """Each example's crop offset and flip come from (seed, epoch), in the epoch's order, and are really applied:
    the order first, then the offsets (only with padding), then the flips (only with hflip)."""
    seed, epoch = 3, 2
    ld = TensorLoader(splits.train_x, splits.train_y, 16, mean=(0.0,), std=(1 / 255,), train=True, crop_padding=pad,
                      hflip=hflip, seed=seed)
    ld.set_epoch(epoch)
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(64, generator=g)
    offsets = torch.randint(0, 2 * pad + 1, (64, 2), generator=g) if pad else torch.full((64, 2), 0)
    flips = torch.rand(64, generator=g) < 0.5 if hflip else torch.zeros(64, dtype=torch.bool)
    got = torch.cat([x for x, _ in ld]).round().to(torch.uint8)
    changed = 0
    for i in range(64):
        img = splits.train_x[order[i]]
        r, c = offsets[i].tolist()
        want = torch.nn.functional.pad(img, (pad,) * 4)[:, r:r + 8, c:c + 8]
        if flips[i]:
            want = want.flip(2)
        assert torch.equal(got[i], want), i
        changed += not torch.equal(want, img)
    assert changed > (32 if pad else 16)
    if hflip:
        assert 10 < int(flips.sum()) < 54
    if pad:
        assert len(set(map(tuple, offsets.tolist()))) > 2 * pad
    # Evaluation batches are not augmented.
    ev = TensorLoader(splits.train_x, splits.train_y, 64, mean=(0.0,), std=(1 / 255,), train=False, crop_padding=pad,
                      hflip=True)
    assert torch.equal(next(iter(ev))[0].round().to(torch.uint8), splits.train_x)


def test_loader_defaults_augment_nothing_and_start_at_epoch_zero(splits):
    """Defaults: no crop, no flip, seed 0, epoch 0, standard memory format; batch size 1 is allowed."""
    ld = TensorLoader(splits.train_x, splits.train_y, 1, mean=(0.0,), std=(1 / 255,), train=True)
    assert (ld.batch_size, ld.drop_last, ld.channels_last, ld.epoch, ld.seed) == (1, False, False, 0, 0)
    order = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    got = torch.cat([x for x, _ in ld]).round().to(torch.uint8)  # no set_epoch: epoch 0
    assert torch.equal(got, splits.train_x[order])
    with pytest.raises(ValueError) as e:
        TensorLoader(splits.train_x, splits.train_y, 0, mean=(0.0,), std=(1.0,), train=True)
    assert str(e.value) == "batch_size must be >= 1, got 0"


def test_loader_channels_last():
    from conftest import synthetic_splits
    sp = synthetic_splits(chans=3)
    for cl in (False, True):
        ld = TensorLoader(sp.test_x, sp.test_y, 8, mean=sp.mean, std=sp.std, train=False, channels_last=cl)
        x, _ = next(iter(ld))
        assert x.is_contiguous(memory_format=torch.channels_last) is cl and x.is_contiguous() is not cl
        ref = (sp.test_x[:8].float() / 255 - torch.tensor(sp.mean)[:, None, None]) / torch.tensor(sp.std)[:, None, None]
        assert torch.allclose(x, ref, atol=1e-5)


def test_random_crop_and_flip_follow_the_generator_exactly():
    """random_crop and random_hflip draw (n, 2) offsets and n flips from the generator they are given."""
    from switokd.data.transforms import Normalize, crop_at, flip_where
    x = torch.arange(3 * 2 * 5 * 5, dtype=torch.uint8).reshape(3, 2, 5, 5)  # 3 images, 2 channels: n != C
    for pad in (1, 2):
        off = torch.randint(0, 2 * pad + 1, (3, 2), generator=torch.Generator().manual_seed(7))
        assert torch.equal(random_crop(x, pad, torch.Generator().manual_seed(7)), crop_at(x, pad, off))
        for i in range(3):
            r, c = off[i].tolist()
            assert torch.equal(crop_at(x, pad, off)[i], torch.nn.functional.pad(x[i], (pad,) * 4)[:, r:r + 5, c:c + 5])
    assert torch.equal(crop_at(x, 0, torch.tensor([[1, 2], [0, 1], [2, 2]])), x)  # padding 0: no crop, whatever the offsets
    for seed in range(4):
        flips = torch.rand(3, generator=torch.Generator().manual_seed(seed)) < 0.5
        assert torch.equal(random_hflip(x, torch.Generator().manual_seed(seed)), flip_where(x, flips))
    assert not all(torch.equal(random_hflip(x, torch.Generator().manual_seed(s)), x.flip(3)) for s in range(4))
    norm = Normalize((0.5, 0.25), (0.25, 0.5))  # the default device: the CPU
    want = (x.float() / 255 - torch.tensor([0.5, 0.25])[:, None, None]) / torch.tensor([0.25, 0.5])[:, None, None]
    assert torch.allclose(norm(x), want, atol=1e-6) and norm(x).dtype == torch.float32
