"""Hostile and broken images everywhere an image is read: image folders in memory, the streaming loader (at
start and in the middle of a run), predict and int8 calibration. Each is one line naming the file, exit 2."""
import numpy as np
import pytest
from PIL import Image

from switokd.cli import main
from switokd.data import DatasetError, load_dataset
from switokd.data.readers import MAX_IMAGE_PIXELS, load_image

from conftest import DEFAULT_CONFIG
from hostile import HOSTILE, png_claiming, valid_png, write

CASES = sorted(HOSTILE)


def test_the_bomb_is_small_and_claims_ten_billion_pixels(tmp_path):
    data = HOSTILE["bomb.png"][0]
    assert len(data) < 80
    with pytest.raises(Image.DecompressionBombError):  # what PIL raises (the traceback users got before)
        Image.open(write(tmp_path / "b.png", "bomb.png"))
    assert 9_000 * 9_000 > MAX_IMAGE_PIXELS > 4096 * 4096


@pytest.mark.parametrize("name", CASES)
def test_reader_refuses_with_the_file_named(tmp_path, name):
    p = write(tmp_path / name, name)
    with pytest.raises(DatasetError) as info:
        load_image(p, "L", 8)
    msg = str(info.value)
    assert str(p) in msg and HOSTILE[name][1] in msg and "\n" not in msg


def folder(root, bad: str | None = None, where="train", empty_class=False):
    """An image folder of 2 classes x 6 images (+ 2 val), with one hostile file in ``where``."""
    for split, n in (("train", 6), ("val", 2)):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                (root / split / c / f"{i}.png").write_bytes(valid_png(12, 40 + 100 * (c == "b") + i))
    if bad:
        write(root / where / "b" / bad, bad)
    if empty_class:
        (root / "train" / "c").mkdir()
    return root


def _train(tmp_path, data, *extra):
    return main(["train", "--config", DEFAULT_CONFIG, "data.val_split=0", "data.name=image_folder", f"data.dir={data}",
                 "data.limit_train=0", "train.epochs=1", "train.batch_size=4", "networks.teacher.model=resnet20",
                 f"train.out_dir={tmp_path / 'runs'}", "train.run_name=r", "train.progress=false",
                 "train.threads=1", *extra])


def _one_line(capsys, *expect):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for e in expect:
        assert e in err, err
    return err


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("in_memory", ["true", "false"])
def test_train_refuses_a_hostile_file(tmp_path, capsys, name, in_memory):
    data = folder(tmp_path / "data", name)
    assert _train(tmp_path, data, f"data.in_memory={in_memory}", "data.workers=0") == 2
    _one_line(capsys, str(data / "train" / "b" / name), HOSTILE[name][1])


def test_empty_class_folder_is_an_error_naming_it(tmp_path, capsys):
    data = folder(tmp_path / "data", empty_class=True)
    assert _train(tmp_path, data) == 2
    _one_line(capsys, f"class folder {data / 'train' / 'c'} has no image files")
    with pytest.raises(DatasetError, match="has no image files"):
        load_dataset("image_folder", str(data), in_memory=False)


@pytest.mark.parametrize("workers", [0, 2])
def test_streaming_run_stops_cleanly_mid_run_with_its_checkpoint_intact(tmp_path, capsys, monkeypatch, workers):
    """A file that turns bad while a streamed run trains: the run stops at it with the same one line, exit 2,
    and the last checkpoint stays as it was (the documented choice: stop, not skip)."""
    from switokd.train.trainer import Trainer
    data = folder(tmp_path / "data")
    bad = data / "train" / "a" / "3.png"
    real_save, saved = Trainer.save_checkpoint, {}

    def save_then_break_a_file(self, *a, **k):
        path = real_save(self, *a, **k)
        if self.epoch == 1 and not saved:  # epoch 1's checkpoint is written: now the disk changes under the run
            saved["bytes"] = path.read_bytes()
            write(bad, "bomb.png")
        return path

    monkeypatch.setattr(Trainer, "save_checkpoint", save_then_break_a_file)
    assert _train(tmp_path, data, "data.in_memory=false", f"data.workers={workers}", "train.epochs=2") == 2
    _one_line(capsys, f"refused image {bad}")
    run = tmp_path / "runs" / "r"
    assert (run / "last.pt").read_bytes() == saved["bytes"]
    import json
    state = json.loads((run / "status.json").read_text())
    assert state["state"] == "stopped" and "refused image" in state["reason"] and state["epoch"] == 1


@pytest.mark.parametrize("name", CASES)
def test_predict_refuses_a_hostile_file(tmp_path, capsys, name, trained_student):
    p = write(tmp_path / name, name)
    assert main(["predict", "--checkpoint", str(trained_student), str(p)]) == 2
    _one_line(capsys, str(p), HOSTILE[name][1])


@pytest.fixture(scope="module")
def trained_student(tmp_path_factory):
    from switokd.train.trainer import Trainer
    from conftest import tiny_config
    root = tmp_path_factory.mktemp("hostile")
    data = folder(root / "data")
    tr = Trainer(tiny_config(root, overrides=["data.name=image_folder", f"data.dir={data}", "data.limit_train=0",
                                              "networks.teacher.model=resnet20", "train.batch_size=4"]))
    tr.fit()
    return tr.run_dir / "last.pt"


@pytest.mark.parametrize("name", ["bomb.png", "truncated.png"])
def test_int8_calibration_refuses_a_hostile_file(tmp_path, capsys, name, trained_student):
    pytest.importorskip("onnxruntime")
    calib = tmp_path / "calib"
    calib.mkdir()
    (calib / "ok.png").write_bytes(valid_png(12))
    p = write(calib / name, name)
    out = tmp_path / "s8.onnx"
    assert main(["export", "--checkpoint", str(trained_student), "--quantize", "int8", "--calibration", str(calib),
                 "--out", str(out)]) == 2
    _one_line(capsys, str(p), HOSTILE[name][1])
    assert not out.exists()


def _pickled_array_claiming(shape, dtype="<f8", raw=b"\0" * 8):
    """A CIFAR batch whose 'data' array claims ``shape`` but holds ``raw``: a few hundred bytes."""
    import io
    import pickle

    import numpy as np

    class Claim:  # pickles as numpy would pickle an array of that shape, without allocating it
        def __reduce__(self):
            return (np.ndarray.__reduce__(np.zeros(1))[0], (np.ndarray, (0,), b"b"),
                    (1, shape, np.dtype(dtype), False, raw))

    buf = io.BytesIO()
    pickle.dump({b"data": Claim(), b"labels": [0]}, buf, protocol=2)
    return buf.getvalue()


@pytest.mark.parametrize("shape,dtype,raw", [((100_000, 3072), "<f8", b"\0" * 8),  # BUILD claims 2.4 GB
                                             ((1, 3072), "|O", [0]),  # an object array from a short list
                                             ((1, 3072), "|u1", b"\0" * 10)])  # data shorter than its shape
def test_a_hostile_cifar_batch_is_refused_before_it_allocates(tmp_path, shape, dtype, raw):
    import resource
    from switokd.data.readers import _load_cifar_batch
    p = tmp_path / "data_batch_1"
    p.write_bytes(_pickled_array_claiming(shape, dtype, raw))
    assert p.stat().st_size < 400
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(DatasetError, match=f"{p}: not a CIFAR python batch"):
        _load_cifar_batch(p, b"labels")
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024 < 64 * 2**20


def test_a_hostile_reconstruct_shape_is_refused(tmp_path):
    import io
    import pickle

    import numpy as np
    from switokd.data.readers import _load_cifar_batch

    class Claim:
        def __reduce__(self):
            return (np.ndarray.__reduce__(np.zeros(1))[0], (np.ndarray, (100_000, 3072), np.dtype("<f8")))

    buf = io.BytesIO()
    pickle.dump({b"data": Claim(), b"labels": [0]}, buf, protocol=2)
    p = tmp_path / "data_batch_1"
    p.write_bytes(buf.getvalue())
    with pytest.raises(DatasetError, match=r"bytes\) in a file of"):
        _load_cifar_batch(p, b"labels")
