"""The CLI end to end, on a small subset of the real Fashion-MNIST files."""
import json
import shutil

import pytest

from switokd.cli import main

from conftest import FASHION_DIR, DEFAULT_CONFIG

# Only the tests that train on the real files need them; list, --help and errors run everywhere.
needs_fashion_mnist = pytest.mark.skipif(not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists(),
                                         reason="needs Debian's dataset-fashion-mnist")

SMALL = ["data.limit_train=512", "data.limit_test=256", "train.epochs=2", "train.batch_size=64",
         "networks.teacher.model=resnet20", "networks.student.model=wrn16_1", "train.progress=false",
         "train.log_interval=4"]


@needs_fashion_mnist
def test_train_eval_resume(tmp_path, capsys):
    args = ["train", "--config", DEFAULT_CONFIG, *SMALL, f"train.out_dir={tmp_path}", "train.run_name=cli"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "teacher" in out and "last-epoch acc" in out and "expert-mode share teacher->student" in out
    run = tmp_path / "cli"
    report = json.loads((run / "report.json").read_text())
    epochs = [json.loads(line) for line in (run / "epochs.jsonl").read_text().splitlines()]
    assert report["epochs"] == 2 and report["networks"]["student"]["last_acc"] == epochs[-1]["test"]["student"]["acc"]
    assert report["networks"]["teacher"]["best_acc"] == max(e["test"]["teacher"]["acc"] for e in epochs)
    assert (run / "config.yaml").read_text().count("resnet20") == 1

    assert main(["eval", "--checkpoint", str(run / "last.pt"), "--json"]) == 0
    out = capsys.readouterr().out
    evaluated = json.loads(out.strip().splitlines()[-1])
    assert evaluated["student"]["acc"] == pytest.approx(report["networks"]["student"]["last_acc"], abs=1e-6)

    assert main(["train", "--resume", str(run / "last.pt"), "train.epochs=3"]) == 0
    assert json.loads((run / "report.json").read_text())["epochs"] == 3


@needs_fashion_mnist
def test_errors_are_clear(tmp_path, capsys):
    assert main(["train", "--config", DEFAULT_CONFIG, "train.epocs=1"]) == 2
    assert "unknown config key 'train.epocs'" in capsys.readouterr().err
    assert main(["train", "--config", DEFAULT_CONFIG, "networks.student.model=resnet21",
                 f"train.out_dir={tmp_path}", *SMALL[:2]]) == 2
    assert "unknown model 'resnet21'" in capsys.readouterr().err
    assert main(["train", "--config", DEFAULT_CONFIG, f"data.dir={tmp_path}/none"]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["train"]) == 2
    assert "give --config FILE" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(tmp_path / "none.pt")]) == 2
    assert "not found" in capsys.readouterr().err


@pytest.mark.parametrize("what", ["models", "methods", "datasets"])
def test_list(what, capsys):
    assert main(["list", what]) == 0
    out = capsys.readouterr().out
    assert {"models": "wrn16_2", "methods": "switokd", "datasets": "fashion_mnist"}[what] in out


def test_console_script_help():
    import sys
    from pathlib import Path
    exe = shutil.which("switokd", path=str(Path(sys.executable).parent)) or shutil.which("switokd")
    if exe is None:
        pytest.skip("console script not installed")
    import subprocess
    r = subprocess.run([exe, "train", "--help"], capture_output=True, text=True, check=True)
    assert "key=value" in r.stdout and "--resume" in r.stdout


@pytest.mark.parametrize("world, argv, exits", [("2", None, True), ("1", None, False), ("2", ["list", "models"], False)])
def test_torchrun_worker_ends_without_interpreter_teardown(monkeypatch, capsys, world, argv, exits):
    """Only a torchrun worker's own command line (WORLD_SIZE > 1, argv from the process) ends with os._exit,
    after flushing its output; a call from Python code returns its code."""
    import os
    import sys
    ended = []
    monkeypatch.setenv("WORLD_SIZE", world)
    monkeypatch.setattr(sys, "argv", ["switokd", "list", "models"])
    monkeypatch.setattr(os, "_exit", lambda code: ended.append(code))
    assert main(argv) == 0
    assert ended == ([0] if exits else []) and "wrn16_1" in capsys.readouterr().out
