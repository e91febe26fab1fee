"""A student you can ship: ONNX/TorchScript export round trips, predict through a checkpoint and through ONNX."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from switokd.cli import main
from switokd.deploy import ExportError, export, image_files, predict
from switokd.train.trainer import Trainer

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
@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "pt2"])
def test_export_round_trip(trained, tmp_path, student, fmt):
    _, runs = trained
    out = tmp_path / f"s.{ {'onnx': 'onnx', 'pt2': 'pt2'}.get(fmt, 'pt') }"
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
    if fmt == "onnx":
        got = run_onnx(onnx_session(out), x)
    elif fmt == "pt2":
        got = torch.export.load(str(out)).module()(x)
    else:
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load: TorchScript is being retired
            got = torch.jit.load(str(out))(x)
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


# ----------------------------------------------------------------------------- int8, bench, safetensors


def test_int8_export_is_checked_and_refused_when_it_loses_too_much(trained, tmp_path, capsys):
    _, runs = trained
    ck = str(runs["resnet20"])
    out = tmp_path / "s8.onnx"
    assert main(["export", "--checkpoint", ck, "--quantize", "int8", "--calibration-images", "32",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "calibrated on 32 training images of mnist" in text and "test top-1 on 32 images: fp32 " in text
    side = json.loads((tmp_path / "s8.onnx.json").read_text())
    q = side["quantization"]
    assert q["type"] == "int8" and q["format"] == "QDQ" and q["calibration_images"] == 32
    assert q["calibration_source"] == "32 training images of mnist" and q["test_images"] == 32
    # The file loads in ONNX Runtime, holds int8 weights, and its accuracy is what the sidecar says.
    import onnx
    from switokd.deploy import onnx_session
    from switokd.deploy.quantize import eval_split, onnx_accuracy
    from switokd.deploy.export import read_sidecar
    model = onnx.load(str(out))
    assert any(i.data_type == onnx.TensorProto.INT8 for i in model.graph.initializer)
    assert any(n.op_type == "QuantizeLinear" for n in model.graph.node)
    x, y = eval_split(ck, read_sidecar(out), 0, None)
    assert onnx_accuracy(onnx_session(out), x, y) == pytest.approx(q["int8_acc"])
    assert f"int8 {q['int8_acc']:.2f}%" in text and f"fp32 {q['fp32_acc']:.2f}%" in text
    # predict works on the int8 file unchanged
    imgs = write_images(tmp_path / "imgs")
    assert main(["predict", "--onnx", str(out), str(imgs)]) == 0 and capsys.readouterr().out.count("%") == 12
    # An impossible demand (int8 must beat fp32 by 1000 points): exit 3, the two accuracies, no file left.
    refused = tmp_path / "r8.onnx"
    assert main(["export", "--checkpoint", ck, "--quantize", "int8", "--calibration-images", "16",
                 "--max-drop", "-1000", "--out", str(refused)]) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "fp32 " in err and "int8 " in err and "no int8 file was written" in err
    assert not refused.exists() and not (tmp_path / "r8.onnx.json").exists()


def test_int8_options_need_quantize(trained, tmp_path, capsys):
    _, runs = trained
    assert main(["export", "--checkpoint", str(runs["resnet20"]), "--max-drop", "2", "--out", str(tmp_path / "x.onnx")]) == 2
    assert "go with --quantize int8" in capsys.readouterr().err
    assert main(["export", "--checkpoint", str(runs["resnet20"]), "--quantize", "int8", "--format", "torchscript",
                 "--out", str(tmp_path / "x.pt")]) == 2
    assert "needs --format onnx" in capsys.readouterr().err


def test_bench_two_files_and_a_checkpoint(trained, tmp_path, capsys):
    _, runs = trained
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    export(runs["wrn16_1"], "student", "onnx", a)
    export(runs["resnet20"], "student", "onnx", b)
    assert main(["bench", str(a), str(b), "--checkpoint", str(runs["wrn16_1"]), "--batch", "1", "8",
                 "--seconds", "0.2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "| model | size | input | latency, batch 1 (median / p90) | throughput, batch 8 |"
    rows = lines[2:5]
    assert rows[0].startswith(f"| a.onnx | {a.stat().st_size / 1024:,.0f} KiB | 1x28x28 | ")
    assert rows[1].startswith("| b.onnx |") and rows[2].startswith("| pytorch eager (student of last.pt) |")
    for r in rows:
        lat = r.split("|")[4].strip()
        med, p90 = (float(v) for v in lat.replace(" ms", "").split(" / "))
        assert 0 < med <= p90 and r.rstrip().endswith("img/s |")
    assert main(["bench", str(a), "--batch", "1", "--seconds", "0.1", "--json"]) == 0
    js = json.loads(capsys.readouterr().out)
    assert js[0]["input_shape"] == [1, 28, 28] and js[0]["latency_ms"]["1"]["calls"] >= 5
    assert main(["bench", str(tmp_path / "none.onnx")]) == 2
    assert "not found" in capsys.readouterr().err


def test_safetensors_round_trip_and_mismatched_files(trained, tmp_path, capsys, splits):
    _, runs = trained
    out = tmp_path / "s.safetensors"
    assert main(["export", "--checkpoint", str(runs["wrn16_1"]), "--format", "safetensors", "--out", str(out)]) == 0
    assert "0.00e+00" in capsys.readouterr().out  # the reloaded file gives PyTorch's logits exactly
    side = json.loads((tmp_path / "s.safetensors.json").read_text())
    assert side["format"] == "safetensors" and side["model"] == "wrn16_1"
    from safetensors.torch import load_file, save_file
    from switokd.deploy import load_network
    model, _ = load_network(runs["wrn16_1"], "student")
    weights = load_file(str(out))
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    # networks.NAME.checkpoint takes the .safetensors file, and a plain state_dict saved with torch.save.
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    for src in (out, tmp_path / "plain.pt"):
        cfg = tiny_config(tmp_path / src.stem, overrides=["networks.teacher.model=resnet20", "data.name=mnist",
                                                          f"data.dir={tmp_path}", f"networks.student.checkpoint={src}"])
        tr = Trainer(cfg, data=_mnist_shaped(splits))
        assert all(torch.equal(tr.networks["student"].model.state_dict()[k], v) for k, v in weights.items())
    # A file with a wrong or missing tensor: one line naming the first mismatch, exit 2.
    bad = dict(weights)
    bad.pop("fc.bias")
    save_file(bad, str(tmp_path / "missing.safetensors"))
    bad = dict(weights)
    bad["fc.weight"] = torch.zeros(3, 3)
    save_file(bad, str(tmp_path / "shape.safetensors"))
    (tmp_path / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    from test_data_conditions import _mnist
    data = _mnist(tmp_path / "idx", n_train=40, n_test=10)
    from conftest import DEFAULT_CONFIG
    for name, expect in (("missing", "1 missing (first fc.bias)"), ("shape", "of another shape (first fc.weight (3, 3)"),
                         ("junk", "cannot be read as safetensors")):
        assert main(["train", "--config", DEFAULT_CONFIG, "data.val_split=0", "data.name=mnist", f"data.dir={data}", "data.limit_train=0",
                     f"train.out_dir={tmp_path / 'runs'}", f"networks.student.checkpoint={tmp_path / name}.safetensors"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and expect in err, err


def _mnist_shaped(splits):
    """The synthetic splits at MNIST's shape (1 x 28 x 28, 10 classes), for weights trained on MNIST."""
    import dataclasses
    x = torch.nn.functional.interpolate(splits.train_x.float(), size=28).to(torch.uint8)
    v = torch.nn.functional.interpolate(splits.test_x.float(), size=28).to(torch.uint8)
    return dataclasses.replace(splits, train_x=x, test_x=v, num_classes=10)
