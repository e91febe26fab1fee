"""The streaming loader: image files decoded in worker processes, sharded by rank, reproducible from the seed."""
import numpy as np
import pytest
import torch
from PIL import Image

from switokd.data import DatasetError, StreamingLoader, load_dataset
from switokd.data.stream import random_resized_box
from switokd.train.trainer import Trainer

from conftest import tiny_config


def write_folder(root, n_per_class=(100, 20), classes=("a", "b", "c"), size=(20, 20), fmt_every=2):
    """Constant gray images whose value is their index (so a decoded pixel tells which file it came from)."""
    k = 0
    for split, n in zip(("train", "val"), n_per_class):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for j in range(n):
                value = k % 250 + 3
                img = Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8), "RGB")
                # PNG (lossless) for most, JPEG for some: both decode; JPEG of a constant image stays constant.
                if j % fmt_every:
                    img.save(root / split / c / f"{k}.png")
                else:
                    img.save(root / split / c / f"{k}.jpg", quality=100)
                k += 1
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("stream") / "imgs")


def test_streamed_folder_is_sharded_without_loss_or_repeat(folder):
    s = load_dataset("image_folder", str(folder), in_memory=False)
    assert len(s.train_files) == 300 and s.num_classes == 3 and s.image_size == 20 and s.in_chans == 3
    common = dict(mean=(0.0,) * 3, std=(1 / 255,) * 3, train=True, image_size=20, crop_padding=2, seed=7, workers=2)
    loaders = [StreamingLoader(s.train_files, s.train_y, 16, rank=r, world_size=2, **common) for r in range(2)]
    for epoch in (0, 1):
        seen = []
        for ld in loaders:
            ld.set_epoch(epoch)
            for x, y in ld:
                assert x.shape[1:] == (3, 20, 20) and x.dtype == torch.float32
                seen += x[:, 0, 10, 10].round().long().tolist()  # the center survives the padded crop
        values = [int(s.train_files[i].stem) % 250 + 3 for i in range(300)]
        assert sorted(seen) == sorted(values)  # every example exactly once over both ranks
    # Reproducible from the seed, whatever the number of workers; reshuffled per epoch.
    a = StreamingLoader(s.train_files, s.train_y, 16, **{**common, "workers": 0})
    b = StreamingLoader(s.train_files, s.train_y, 16, **common)
    a.set_epoch(1), b.set_epoch(1)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    a.set_epoch(2)
    assert a.batch_indices()[0] != b.batch_indices()[0]
    # An interrupted epoch continues at a batch index.
    assert [t for batch in b.batch_indices(3) for t in batch] == [t for batch in b.batch_indices()[3:] for t in batch]


def test_large_images_get_random_resized_crops(tmp_path):
    root = write_folder(tmp_path / "big", n_per_class=(4, 2), classes=("x", "y"), size=(120, 90))
    s = load_dataset("image_folder", str(root), image_size=72, in_memory=False)
    assert s.image_size == 72 and s.crop_padding == 0
    ld = StreamingLoader(s.train_files, s.train_y, 4, mean=s.mean, std=s.std, train=True, image_size=72, workers=0)
    x, _ = next(iter(ld))
    assert x.shape == (4, 3, 72, 72)
    ev = StreamingLoader(s.test_files, s.test_y, 4, mean=s.mean, std=s.std, train=False, image_size=72, workers=0)
    assert next(iter(ev))[0].shape == (4, 3, 72, 72)
    import random
    for seed in range(50):
        left, top, w, h = random_resized_box(120, 90, random.Random(seed))
        assert 0 <= left and left + w <= 120 and 0 <= top and top + h <= 90 and w * h >= 0.08 * 120 * 90 * 0.5


def test_training_streams_from_disk(folder, tmp_path):
    over = ["data.name=image_folder", f"data.dir={folder}", "data.in_memory=false", "data.workers=2",
            "train.batch_size=32", "networks.teacher.model=resnet20", "train.epochs=2", "train.checkpoint_every=3"]
    a = Trainer(tiny_config(tmp_path / "a", overrides=over))
    report = a.fit()
    assert report["epochs"] == 2 and report["networks"]["student"]["last_acc"] is not None
    assert a.train_loader.__class__.__name__ == "StreamingLoader"


def test_imagenet_layout_and_errors(tmp_path):
    root = write_folder(tmp_path / "imagenet", n_per_class=(3, 1), classes=("n01", "n02"), size=(40, 30))
    (root / "LOC_synset_mapping.txt").write_text("n01 tench, Tinca tinca\nn02 goldfish, Carassius auratus\n")
    s = load_dataset("imagenet", str(root), image_size=32)
    assert s.class_names == ["tench", "goldfish"] and s.image_size == 32 and len(s.train_files) == 6
    assert s.mean == (0.485, 0.456, 0.406)
    with pytest.raises(DatasetError, match="data.in_memory=false streams image_folder, imagenet only"):
        load_dataset("fashion_mnist", None, in_memory=False)
    with pytest.raises(DatasetError, match="data.dir"):
        load_dataset("imagenet", str(tmp_path / "missing"))
    s.train_files[2].write_bytes(b"not an image")
    for workers in (0, 2):
        ld = StreamingLoader(s.train_files, s.train_y, 6, mean=s.mean, std=s.std, train=True, image_size=32,
                             workers=workers)
        with pytest.raises(DatasetError, match=f"^cannot decode image {s.train_files[2]}") as info:
            next(iter(ld))
        assert "\n" not in str(info.value)
