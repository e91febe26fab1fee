"""A new user's first hour: native precision on any CPU, a run header, progress without a terminal,
their own images (gray and color mixed) and their own model."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from switokd import config as C
from switokd.train import engine
from switokd.data import DatasetError, load_dataset
from switokd.train.engine import Precision, resolve_precision
from switokd.models import MODELS, create_model, register_model
from switokd.train.progress import Progress
from switokd.train.trainer import Trainer

from conftest import tiny_config
from test_data import make_mnist_dir

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


def fake_caps(monkeypatch, **caps):
    base = {"avx2": True, "avx512_f": False, "avx512_bf16": False, "amx_bf16": False}
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {**base, **caps})


def test_auto_is_bf16_only_with_native_bf16(monkeypatch):
    fake_caps(monkeypatch)  # AVX2 only: bf16 would be emulated
    assert resolve_precision("auto", CPU)[0] == "fp32"
    assert "no native bf16 (avx2)" in resolve_precision("auto", CPU)[1]
    fake_caps(monkeypatch, avx512_f=True, avx512_bf16=True)
    assert resolve_precision("auto", CPU) == ("bf16", "auto: the CPU has native bf16 (avx512_bf16)")
    fake_caps(monkeypatch, amx_bf16=True)
    assert resolve_precision("auto", CPU)[0] == "bf16"
    assert resolve_precision("fp16", CPU) == ("fp16", "set by train.precision")


def test_explicit_bf16_on_emulating_cpu_warns_but_runs(monkeypatch):
    fake_caps(monkeypatch)
    with pytest.warns(RuntimeWarning, match="emulated"):
        p = Precision("bf16", CPU)
    assert p.name == "bf16" and p.dtype == torch.bfloat16
    fake_caps(monkeypatch, avx512_bf16=True)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Precision("bf16", CPU).name == "bf16"


@pytest.mark.parametrize("cuda_bf16,expect", [(True, "bf16"), (False, "fp32")])
def test_auto_on_cuda(monkeypatch, cuda_bf16, expect):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: cuda_bf16)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d: "Fake GPU" if d == torch.device("cuda") else f"asked for {d}")
    name, why = resolve_precision("auto", torch.device("cuda"))
    assert name == expect and "Fake GPU" in why


def test_shipped_configs_use_auto():
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        assert C.load_config(path).train.precision == "auto", path.name


def test_run_header_and_progress_lines_without_a_terminal(tmp_path):
    """A subprocess whose stderr is a pipe (as under nohup or CI) prints the header and plain progress lines."""
    (tmp_path / "data").mkdir()
    data = make_mnist_dir(tmp_path / "data", n_train=96, n_test=20)
    r = subprocess.run([sys.executable, "-m", "switokd", "train", "--config", str(ROOT / "configs" / "fashion_mnist.yaml"),
                        "data.val_split=0",
                        "data.name=mnist", f"data.dir={data}", "train.epochs=2", "train.batch_size=16",
                        "train.threads=1", "train.progress_interval_s=0", "networks.teacher.model=resnet20",
                        f"train.out_dir={tmp_path}", "train.run_name=r"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert r.returncode == 0, r.stderr
    err = r.stderr
    for start in ("device     cpu (", "precision  ", "network    teacher: teacher resnet20, 0.27M params",
                  "network    student: student wrn16_1, 0.17M params", "data       mnist: 96 train / 20 test images, 1x28x28",
                  "method     switokd; 2 epochs of 6 steps"):
        assert start in err, start
    assert "torch threads" in err and "native bf16" in err
    lines = [ln for ln in err.splitlines() if ln.startswith("epoch ") and " step " in ln]
    assert len(lines) == 12  # one per step with progress_interval_s=0
    assert lines[0].startswith("epoch 1/2 step 1/6 (17%)") and "img/s" in lines[0] and "ETA epoch" in lines[0]
    assert ", run " in lines[0] and lines[-1].startswith("epoch 2/2 step 6/6 (100%)")
    assert any("loss teacher" in ln and "expert teacher->student" in ln for ln in lines)
    assert "\r" not in err  # no tqdm bar without a terminal


def test_progress_line_fields():
    import io
    buf = io.StringIO()
    p = Progress(enabled=True, epochs=3, steps_per_epoch=10, interval_s=0, stream=buf, tty=False)
    p.start_epoch(1, 4)  # a resumed epoch: starts at batch 4
    p.step(32, lambda: "loss student 0.5")
    line = buf.getvalue().strip()
    assert line.startswith("epoch 2/3 step 5/10 (50%)") and line.endswith("loss student 0.5")


def test_progress_bar_on_a_terminal_shows_the_run_eta():
    import io
    import time as _time
    buf = io.StringIO()
    p = Progress(enabled=True, epochs=2, steps_per_epoch=4, interval_s=0, stream=buf, tty=True)
    p.start_epoch(0, 0)
    p.t_last -= 5  # the bar's postfix refreshes every 2 s: make it due
    p.step(8, lambda: "loss student 1.000")
    _time.sleep(0.01)
    p.bar.refresh()
    p.end_epoch()
    out = buf.getvalue()
    assert "epoch 1/2" in out and "run ETA" in out and "loss student 1.000" in out
    assert "step 1/4" not in out  # the plain lines are for non-terminals only


def _img(path, mode, size=12, value=100):
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    Image.fromarray(np.full(shape, value, np.uint8), mode).save(path)


def mixed_folder(root):
    for split, n in (("train", 4), ("val", 2)):
        for c in ("ant", "bee"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                _img(root / split / c / f"{i}.png", "L", value=30 if c == "ant" else 220)
    _img(root / "val" / "bee" / "color.jpg", "RGB", value=200)  # one color file in val only
    return root


def test_mixed_gray_and_color_folder_trains(tmp_path):
    root = mixed_folder(tmp_path / "imgs")
    s = load_dataset("image_folder", str(root))
    assert s.in_chans == 3 and s.train_x.shape == (8, 3, 12, 12) and s.test_x.shape == (5, 3, 12, 12)
    assert torch.equal(s.train_x[0, 0], s.train_x[0, 2])  # gray files become R = G = B
    assert s.class_names == ["ant", "bee"]
    gray = load_dataset("image_folder", str(root), channels=1)
    assert gray.in_chans == 1 and gray.test_x.shape == (5, 1, 12, 12)
    assert load_dataset("image_folder", str(root), channels=3).in_chans == 3
    cfg = tiny_config(tmp_path, method="dml", overrides=["data.name=image_folder", f"data.dir={root}",
                                                         "train.batch_size=4", "networks.teacher.model=resnet20"])
    tr = Trainer(cfg)
    tr.fit()
    from switokd.train.checkpoint import load_training_checkpoint
    ck = load_training_checkpoint(tr.run_dir / "last.pt")
    assert ck["data"]["classes"] == ["ant", "bee"] and ck["data"]["in_chans"] == 3


def test_data_errors_name_the_key(tmp_path):
    root = mixed_folder(tmp_path / "imgs")
    _img(root / "train" / "ant" / "big.png", "L", size=20)
    with pytest.raises(DatasetError, match="data.image_size"):
        load_dataset("image_folder", str(root))
    with pytest.raises(DatasetError, match="data.channels"):
        load_dataset("image_folder", str(root), channels=2)
    (root / "val" / "cat").mkdir()
    _img(root / "val" / "cat" / "x.png", "L")
    with pytest.raises(DatasetError, match="data.dir"):
        load_dataset("image_folder", str(root), image_size=12)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train-images-idx3-ubyte").write_bytes(b"\x12\x34\x56\x78")
    with pytest.raises(DatasetError, match="data.dir"):
        load_dataset("mnist", str(bad))
    with pytest.raises(DatasetError, match="data.name"):
        load_dataset("imagenet21k", str(bad))


MODEL_FILE = '''
import torch
from torch import nn

def tiny_cnn(num_classes, in_chans, image_size):
    return nn.Sequential(nn.Conv2d(in_chans, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))

def not_a_model(num_classes, in_chans, image_size):
    return "hello"

def wrong_signature(classes):
    return None
'''


def test_user_model_from_a_file_outside_the_package(tmp_path, monkeypatch, splits):
    (tmp_path / "usermodels").mkdir()
    (tmp_path / "usermodels" / "__init__.py").write_text("")
    (tmp_path / "usermodels" / "nets.py").write_text(MODEL_FILE)
    monkeypatch.syspath_prepend(str(tmp_path))
    m = create_model("usermodels.nets:tiny_cnn", num_classes=4, in_chans=1, image_size=8)
    assert m(torch.randn(2, 1, 8, 8)).shape == (2, 4)
    cfg = tiny_config(tmp_path, overrides=["networks.student.model=usermodels.nets:tiny_cnn"])
    tr = Trainer(cfg, data=splits)
    report = tr.fit()
    assert report["networks"]["student"]["model"] == "usermodels.nets:tiny_cnn"
    again = Trainer.from_checkpoint(tr.run_dir, ["train.epochs=2"], data=splits)  # the config names it again
    assert again.fit()["epochs"] == 2
    for spec, msg in (("usermodels.nets:not_a_model", "not a torch.nn.Module"), ("usermodels.nets:missing", "no attribute"),
                      ("usermodels.nope:tiny_cnn", "cannot import"), ("usermodels.nets:wrong_signature", "must accept"),
                      ("usermodels.nets", "unknown model")):
        with pytest.raises(C.ConfigError, match=f"networks.student.model.*{msg}"):
            Trainer(tiny_config(tmp_path / "x", overrides=[f"networks.student.model={spec}"]), data=splits)


def test_register_model_decorator():
    @register_model
    def my_test_net(num_classes=10, in_chans=3, image_size=32):
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(in_chans * image_size ** 2, num_classes))

    try:
        assert "my_test_net" in MODELS
        assert create_model("my_test_net", 5, 1, 4)(torch.zeros(1, 1, 4, 4)).shape == (1, 5)
        with pytest.raises(ValueError, match="already registered"):
            register_model(my_test_net)
        register_model("my_test_net_b")(my_test_net)
        assert "my_test_net_b" in MODELS
    finally:
        MODELS._entries.pop("my_test_net", None)
        MODELS._entries.pop("my_test_net_b", None)


def test_cli_model_from_working_directory(tmp_path):
    """The console script finds package.module:factory in the directory it runs from, as `python -m` would."""
    (tmp_path / "mynets.py").write_text(MODEL_FILE)
    (tmp_path / "data").mkdir()
    data = make_mnist_dir(tmp_path / "data", n_train=32, n_test=16)
    exe = Path(sys.executable).parent / "switokd"
    if not exe.exists():
        pytest.skip("console script not installed")
    r = subprocess.run([str(exe), "train", "--config", str(ROOT / "configs" / "fashion_mnist.yaml"), "data.val_split=0", "data.name=mnist",
                        f"data.dir={data}", "train.epochs=1", "train.batch_size=16", "train.progress=false",
                        "networks.student.model=mynets:tiny_cnn", "networks.teacher.model=mynets:tiny_cnn",
                        f"train.out_dir={tmp_path}", "train.run_name=r"], capture_output=True, text=True, cwd=tmp_path,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert "mynets:tiny_cnn" in r.stdout


def test_resolve_device_on_cpu_and_with_mocked_cuda(monkeypatch):
    """auto/cpu/cuda/cuda:N, each rank's own GPU under torchrun, and the errors, with CUDA mocked present or absent."""
    from switokd.train.engine import resolve_device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") and resolve_device("cpu", 3) == torch.device("cpu")
    with pytest.raises(C.ConfigError) as e:
        resolve_device("cuda")
    assert str(e.value) == "config key 'train.device': 'cuda' but CUDA is not available; use train.device=cpu"
    with pytest.raises(C.ConfigError) as e:
        resolve_device("gpu0")
    assert str(e.value) == "config key 'train.device': 'gpu0' is not a device (auto, cpu, cuda or cuda:N)"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("auto", 3) == torch.device("cuda", 1)  # local rank 3 of 2 GPUs per node
    assert resolve_device("cuda", 0) == torch.device("cuda", 0)
    assert resolve_device("cuda:1", 0) == torch.device("cuda", 1)  # an explicit index is kept
    assert resolve_device("cuda") == torch.device("cuda")


def test_autocast_only_where_a_low_precision_runs():
    cpu = torch.device("cpu")
    with Precision("fp32", cpu).autocast():
        assert not torch.is_autocast_enabled("cpu")
    with Precision("bf16", cpu).autocast():
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


def test_optimizer_and_schedules():
    from switokd.train.engine import build_optimizer, lr_factor, set_lr
    net = C.NetworkConfig(lr=0.2, momentum=0.9, nesterov=True, weight_decay=1e-4, schedule="cosine")
    opt = build_optimizer(torch.nn.Linear(2, 2), net)
    d = opt.defaults
    assert (d["lr"], d["momentum"], d["nesterov"], d["weight_decay"], d["fused"]) == (0.2, 0.9, True, 1e-4, True)
    assert not build_optimizer(torch.nn.Linear(2, 2), C.NetworkConfig(momentum=0.0, nesterov=True)).defaults["nesterov"]
    # Cosine reaches 0 at the last batch and stays there if a run goes on (resumed with more epochs).
    assert lr_factor(net, 0, 10, 2) == 1.0 and lr_factor(net, 10, 10, 2) == pytest.approx(0.5)
    assert lr_factor(net, 20, 10, 2) == pytest.approx(0.0, abs=1e-12) and lr_factor(net, 30, 10, 2) == pytest.approx(0.0, abs=1e-12)
    assert set_lr(opt, net, 10, 10, 2) == pytest.approx(0.1) and opt.param_groups[0]["lr"] == pytest.approx(0.1)
    assert set_lr(opt, net, 10, 10, 2, scale=4.0) == pytest.approx(0.4)
    ms = C.NetworkConfig(lr=1.0, schedule="multistep", milestones=[1, 3], gamma=0.1)
    assert [lr_factor(ms, s, 10, 5) for s in (0, 9, 10, 29, 30)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])
    assert lr_factor(C.NetworkConfig(schedule="constant"), 99, 10, 5) == 1.0


@pytest.mark.parametrize("caps,expect", [
    ({"amx_bf16": True, "avx512_bf16": True}, (True, "amx_bf16+avx512_bf16")),
    ({"bf16": True, "neon": True}, (True, "bf16")),  # Arm
    ({"sve_bf16": True}, (True, "sve_bf16")),
    ({"avx512_f": True, "avx2": True}, (False, "avx512_f")),
    ({"avx512f": True}, (False, "avx512f")),
    ({"neon": True}, (False, "neon")),
    ({"asimd": True}, (False, "asimd")),
    ({}, (False, "no SIMD flags found")),
])
def test_cpu_capability_names(monkeypatch, caps, expect):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: caps)
    assert engine.cpu_native_bf16() == expect


@pytest.mark.parametrize("cpuinfo,expect", [
    ("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n", (True, "avx512_bf16")),
    ("flags\t\t: fpu sse2 avx2\n", (False, "avx2")),
    ("processor\t: 0\nFeatures\t: fp asimd bf16\n", (True, "bf16")),  # Arm's /proc/cpuinfo says Features
    ("processor\t: 0\nmodel name\t: something\n", (False, "no SIMD flags found")),  # no flags line at all
    (None, (False, "no SIMD flags found")),  # no /proc/cpuinfo
])
def test_cpu_flags_fallback(monkeypatch, tmp_path, cpuinfo, expect):
    """Without torch's capability query, the kernel's CPU flags decide."""
    def missing():
        raise AttributeError("no get_capabilities in this torch")

    monkeypatch.setattr(torch.cpu, "get_capabilities", missing)
    info = tmp_path / "cpuinfo"
    if cpuinfo is not None:
        info.write_text(cpuinfo)
    real_path = engine.Path
    monkeypatch.setattr(engine, "Path", lambda p: info if p == "/proc/cpuinfo" else real_path(p))
    assert engine.cpu_native_bf16() == expect


def test_precision_reasons_exact(monkeypatch):
    fake_caps(monkeypatch)  # AVX2 only
    assert resolve_precision("fp32", CPU) == ("fp32", "set by train.precision")
    with pytest.warns(RuntimeWarning) as w:
        assert resolve_precision("bf16", CPU) == ("bf16", "set by train.precision; emulated on this CPU (avx2): slow")
    assert str(w[0].message) == ("train.precision=bf16 on a CPU without native bf16 (avx2): bf16 is emulated and can be "
                                 "10x slower than fp32 here. Use train.precision=auto or fp32.")
    mps = torch.device("mps")
    assert resolve_precision("auto", mps) == ("fp32", "auto: fp32 on mps")
    assert resolve_precision("bf16", mps) == ("bf16", "set by train.precision")
    p = Precision("fp32", CPU)
    assert (p.requested, p.name, p.dtype, p.device_type, p.scaler.is_enabled()) == ("fp32", "fp32", None, "cpu", False)


def test_fp16_on_cpu_autocasts_to_fp16_with_an_active_cpu_scaler():
    p = Precision("fp16", CPU)
    assert p.scaler.is_enabled()
    with p.autocast():
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.float16


@pytest.mark.skipif("MUTANT_UNDER_TEST" in os.environ, reason="mutmut's trampolines add stack frames")
def test_emulated_bf16_warning_points_at_the_caller(monkeypatch):
    fake_caps(monkeypatch)
    with pytest.warns(RuntimeWarning) as w:
        resolve_precision("bf16", CPU)
    assert w[0].filename == __file__


def test_explicit_precision_on_cuda_is_kept(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Fake GPU")
    assert resolve_precision("fp16", torch.device("cuda")) == ("fp16", "set by train.precision")
