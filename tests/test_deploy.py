"""A student you can ship: ONNX/TorchScript export round trips, predict through a checkpoint and through ONNX."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from switokd.cli import main
from switokd.deploy import ExportError, export, image_files, predict
from switokd.trainer import Trainer

from conftest import tiny_config
from test_data import make_mnist_dir

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short run per model family on a tiny MNIST-format set written to disk (so export finds real test images)."""
    root = tmp_path_factory.mktemp("deploy")
    (root / "data").mkdir()
    data = make_mnist_dir(root / "data", n_train=64, n_test=32)
    runs = {}
    for student in ("wrn16_1", "resnet20", "mobilenetv2_x0.5"):
        cfg = tiny_config(root / student, overrides=["data.name=mnist", f"data.dir={data}", "train.batch_size=32",
                                                      "networks.teacher.model=resnet20",
                                                      f"networks.student.model={student}"])
        tr = Trainer(cfg)
        tr.fit()
        runs[student] = tr.run_dir / "last.pt"
    return root, runs


@pytest.mark.parametrize("student", ["wrn16_1", "resnet20", "mobilenetv2_x0.5"])
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_round_trip(trained, tmp_path, student, fmt):
    _, runs = trained
    out = tmp_path / f"s.{'onnx' if fmt == 'onnx' else 'pt'}"
    r = export(runs[student], "student", fmt, out)
    assert r["max_abs_diff"] <= 1e-4 and r["top1_agreement"] == 1.0 and "test images of mnist" in r["checked_on"]
    side = json.loads((tmp_path / (out.name + ".json")).read_text())
    assert side["model"] == student and side["in_chans"] == 1 and side["image_size"] == 28
    assert side["classes"] == [str(i) for i in range(10)] and side["format"] == fmt and len(side["mean"]) == 1
    # Dynamic batch: another batch size than the one exported with gives the PyTorch logits.
    from switokd.deploy import load_network, onnx_session, run_onnx
    model, _ = load_network(runs[student], "student")
    x = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        ref = model(x)
    got = run_onnx(onnx_session(out), x) if fmt == "onnx" else torch.jit.load(str(out))(x)
    assert (got - ref).abs().max().item() <= 1e-4


def write_images(folder):
    folder.mkdir()
    g = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(g.integers(0, 256, (28, 28), dtype=np.uint8), "L").save(folder / f"g{i}.png")
    Image.fromarray(g.integers(0, 256, (40, 36, 3), dtype=np.uint8), "RGB").save(folder / "c.jpg", quality=95)
    return folder


def test_predict_checkpoint_and_onnx_agree(trained, tmp_path, capsys):
    _, runs = trained
    imgs = write_images(tmp_path / "imgs")
    onnx_file = tmp_path / "s.onnx"
    assert main(["export", "--checkpoint", str(runs["wrn16_1"]), "--network", "student", "--format", "onnx",
                 "--out", str(onnx_file)]) == 0
    out = capsys.readouterr().out
    assert "max abs logit difference against PyTorch" in out
    diff = float(out.split("against PyTorch ")[1].split(",")[0])
    assert diff <= 1e-4
    files = image_files([imgs])
    assert [f.name for f in files] == ["c.jpg", "g0.png", "g1.png", "g2.png"]
    a = predict(files, checkpoint=runs["wrn16_1"], network="student", topk=3)
    b = predict(files, onnx=onnx_file, topk=3)
    assert [r["top"][0]["index"] for r in a] == [r["top"][0]["index"] for r in b]
    for ra, rb in zip(a, b):
        assert len(ra["top"]) == 3 and ra["top"][0]["prob"] >= ra["top"][1]["prob"]
        assert ra["top"][0]["prob"] == pytest.approx(rb["top"][0]["prob"], abs=1e-5)
    assert main(["predict", "--checkpoint", str(runs["wrn16_1"]), "--json", "--topk", "2", str(imgs / "g0.png"),
                 str(imgs / "c.jpg")]) == 0
    js = json.loads(capsys.readouterr().out)
    assert [r["file"] for r in js] == [str(imgs / "g0.png"), str(imgs / "c.jpg")] and len(js[0]["top"]) == 2
    assert main(["predict", "--onnx", str(onnx_file), str(imgs)]) == 0
    assert capsys.readouterr().out.count("%") == 4 * 3


def test_bad_inputs_are_one_line_errors(trained, tmp_path, capsys):
    root, runs = trained
    ck = str(runs["wrn16_1"])
    imgs = write_images(tmp_path / "imgs")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    kd_dir = root / "kd"
    kd = Trainer(tiny_config(kd_dir, method="kd", overrides=[
        "data.name=mnist", f"data.dir={root / 'data'}", "networks.teacher.model=resnet20",
        f"networks.teacher.checkpoint={ck}"]))
    kd.fit()
    cases = {
        ("export", "--checkpoint", ck, "--network", "ghost", "--out", str(tmp_path / "x.onnx")): "no network 'ghost'",
        ("export", "--checkpoint", ck, "--format", "tflite", "--out", str(tmp_path / "x.onnx")): "unknown format 'tflite'",
        ("export", "--checkpoint", str(kd.run_dir / "last.pt"), "--network", "teacher",
         "--out", str(tmp_path / "x.onnx")): "is frozen",
        ("export", "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "x.onnx")): "not found",
        ("export", "--checkpoint", ck, "--out", str(tmp_path / "nodir" / "x.onnx")): "does not exist",
        ("predict", "--checkpoint", ck, str(tmp_path / "notes.txt")): "not an image file",
        ("predict", "--checkpoint", ck, str(tmp_path / "broken.png")): "cannot decode image",
        ("predict", "--checkpoint", ck, str(tmp_path / "missing.png")): "not found",
        ("predict", "--checkpoint", ck, "--network", "ghost", str(imgs)): "no network 'ghost'",
        ("predict", str(imgs)): "either --checkpoint",
        ("predict", "--onnx", str(tmp_path / "x.onnx"), str(imgs)): "sidecar",
        ("predict", "--checkpoint", ck, "--topk", "0", str(imgs)): "--topk must be >= 1",
        ("export", "--checkpoint", ck): "the following arguments are required: --out",
    }
    for argv, expect in cases.items():
        assert main(list(argv)) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and expect in err and "Traceback" not in err, (argv, err)
    with pytest.raises(ExportError, match="either"):
        predict([], checkpoint=ck, onnx=str(tmp_path / "x.onnx"))
