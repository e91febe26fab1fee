"""Property-based tests: bad input never escapes as a traceback, only as the project's own error types.

Config overrides are arbitrary text; each reader gets random bytes and bytes mutated from a valid file.
"""
import gzip
import io
import os
import pickle
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from switokd import config as C
from switokd.data import DatasetError
from switokd.data.readers import MAX_IMAGE_PIXELS, _load_cifar_batch, load_image, read_idx, read_tiny_imagenet

# 150 examples per test in the suite; HYPOTHESIS_PROFILE=thorough runs 3000.
settings.register_profile("suite", max_examples=150)
settings.register_profile("thorough", max_examples=3000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "suite"))
FAST = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

KEYS = ["train.epochs", "train.precision", "networks", "networks.student", "networks.0.lr", "networks.student.milestones",
        "data", "data.name", "method.tau", "preset", "method", "networks.teacher.role", "train", "x.y.z", ""]
VALUES = st.one_of(st.text(max_size=20), st.sampled_from(["[", "{", "]", "{a: [1, {b: 2}]}", "[1, 2.5, x]", "null",
                                                          "-1", "1e999", ".nan", "true", "2T1S", "[{name: a}]", "5"]))


@FAST
@given(st.text(max_size=60))
def test_any_override_text_is_config_error_or_valid(text):
    try:
        C.load_config(None, [text])
    except C.ConfigError:
        pass


@FAST
@given(st.lists(st.tuples(st.sampled_from(KEYS), VALUES), min_size=1, max_size=3))
def test_structured_overrides(pairs):
    try:
        cfg = C.load_config(None, [f"{k}={v}" for k, v in pairs])
    except C.ConfigError:
        return
    C.validate(cfg)  # whatever loads is a valid config


@FAST
@given(st.text(max_size=200))
def test_any_yaml_file(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    try:
        C.load_config(p)
    except C.ConfigError:
        pass


def mutations(valid: bytes):
    """Random bytes, truncations and byte flips of a valid file."""
    flips = st.lists(st.tuples(st.integers(0, max(len(valid) - 1, 0)), st.integers(0, 255)), min_size=1, max_size=8)
    return st.one_of(
        st.binary(max_size=300),
        st.integers(0, len(valid)).map(lambda n: valid[:n]),
        flips.map(lambda fl: _flip(valid, fl)),
    )


def _flip(data: bytes, flips):
    b = bytearray(data)
    for i, v in flips:
        b[i] = v
    return bytes(b)


def _idx_bytes():
    arr = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    return bytes([0, 0, 8, 3]) + struct.pack(">3I", 2, 3, 3) + arr.tobytes()


IDX = _idx_bytes()


@FAST
@given(mutations(IDX), st.booleans())
def test_idx_reader(tmp_path, data, gz):
    p = tmp_path / "x-idx3-ubyte"
    p.write_bytes(gzip.compress(data) if gz else data)
    try:
        arr = read_idx(p)
    except DatasetError:
        return
    assert arr.size * arr.dtype.itemsize <= len(data)


def _cifar_bytes():
    buf = io.BytesIO()
    pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}, buf, protocol=2)
    return buf.getvalue()


CIFAR = _cifar_bytes()


def _peak_rss_bytes() -> int:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


@FAST
@given(mutations(CIFAR))
def test_cifar_pickle_reader(tmp_path, data):
    p = tmp_path / "data_batch_1"
    p.write_bytes(data)
    before = _peak_rss_bytes()
    try:
        x, y = _load_cifar_batch(p, b"labels")
    except DatasetError:
        return
    finally:  # a mutated file never makes the reader allocate much (it once took 15-22 GB here)
        assert _peak_rss_bytes() - before < 256 * 2**20
    assert x.shape[1] == 3072 and len(x) == len(y) and x.nbytes <= len(data)


def _image_bytes(fmt):
    buf = io.BytesIO()
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8), "L").save(buf, format=fmt)
    return buf.getvalue()


PNG, JPEG = _image_bytes("PNG"), _image_bytes("JPEG")


@FAST
@given(st.one_of(mutations(PNG), mutations(JPEG)), st.sampled_from(["L", "RGB"]), st.sampled_from([None, 8, 5]))
def test_image_reader(tmp_path, data, mode, size):
    p = tmp_path / "x.png"
    p.write_bytes(data)
    try:
        arr = load_image(p, mode, size)
    except DatasetError:
        return
    assert arr.dtype == np.uint8 and arr.shape[2] == (1 if mode == "L" else 3)


@FAST
@given(st.text(max_size=120), st.text(max_size=60))
def test_tiny_imagenet_annotations(tmp_path, annotations, wnids):
    root = tmp_path / "tiny-imagenet-200"
    (root / "val" / "images").mkdir(parents=True, exist_ok=True)
    (root / "wnids.txt").write_text(wnids)
    (root / "val" / "val_annotations.txt").write_text(annotations)
    try:
        read_tiny_imagenet(tmp_path, "val")
    except DatasetError:
        pass


@FAST
@given(st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1), st.sampled_from(["L", "RGB"]))
def test_image_headers_claiming_any_size(tmp_path, width, height, mode):
    """A PNG header may claim any size (a decompression bomb claims billions of pixels): refused or decoded,
    never a crash, never a decode of more than the pixel limit."""
    from hostile import png_claiming
    p = tmp_path / "x.png"
    p.write_bytes(png_claiming(width, height))
    try:
        arr = load_image(p, mode, 8)
    except DatasetError as e:
        assert str(p) in str(e)
        return
    assert width * height <= MAX_IMAGE_PIXELS and arr.shape[:2] == (8, 8)


@FAST
@given(st.one_of(mutations(PNG), mutations(JPEG), st.binary(max_size=200)), st.booleans())
def test_streaming_decoder(tmp_path, data, train):
    """The streaming loader's per-file decoder (a worker's view) on arbitrary bytes."""
    import torch
    from switokd.data.stream import ImageFiles
    p = tmp_path / "x.jpg"
    p.write_bytes(data)
    try:
        x, y = ImageFiles([p], torch.tensor([3]), 8, "RGB", train=train, seed=0, padding=1)[(0, 0)]
    except DatasetError as e:
        assert str(p) in str(e)
        return
    assert x.shape == (3, 8, 8) and x.dtype == torch.uint8 and y == 3
