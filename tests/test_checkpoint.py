"""Checkpoints are safe to load, exact to resume (also inside an epoch), and never replaced by a bad write."""
import errno
import os
import signal
import zipfile

import pytest
import torch

from switokd.train.checkpoint import (CHECKPOINT_FORMAT, CheckpointError, CheckpointWriteError, load_checkpoint,
                                load_training_checkpoint, save_atomic)
from switokd import config as C
from switokd.cli import main
from switokd.train.signals import Interrupted
from switokd.runs.files import read_jsonl
from switokd.train.trainer import Trainer

from conftest import tiny_config, DEFAULT_CONFIG, assert_same_networks
from test_data import make_mnist_dir

TIMING = ("train_time_s", "images_per_s", "epoch_time_s")


def strip_timing(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


class Payload:
    """A pickle that would run a shell command on load (what a malicious checkpoint does)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def good_run(tmp_path, splits):
    tr = Trainer(tiny_config(tmp_path, overrides=["train.epochs=2"]), data=splits)
    tr.fit()
    return tr.run_dir


@pytest.fixture
def mnist_dir(tmp_path):
    (tmp_path / "data").mkdir()
    return make_mnist_dir(tmp_path / "data", n_train=48, n_test=24)


def cli_small(tmp_path, mnist_dir, name="run"):
    return ["data.val_split=0", "data.name=mnist", f"data.dir={mnist_dir}", "train.epochs=1", "train.batch_size=16", "train.progress=false",
            "train.precision=fp32", "train.threads=1", "networks.teacher.model=resnet20",
            "networks.student.model=wrn16_1", f"train.out_dir={tmp_path}", f"train.run_name={name}"]


def test_malicious_checkpoint_never_runs(tmp_path, mnist_dir, capsys, good_run):
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pt"
    ckpt = torch.load(good_run / "last.pt", weights_only=True)
    ckpt["history"] = [Payload(marker)]  # hidden inside an otherwise valid checkpoint
    torch.save(ckpt, evil)
    evil_dir = tmp_path / "evil_run"
    evil_dir.mkdir()
    torch.save(Payload(marker), evil_dir / "last.pt")
    attempts = [
        ["eval", "--checkpoint", str(evil)],
        ["train", "--resume", str(evil)],
        ["train", "--resume", str(evil_dir)],
        ["train", "--config", DEFAULT_CONFIG, *cli_small(tmp_path, mnist_dir, "kd"), "method.name=kd",
         f"networks.teacher.checkpoint={evil}"],
        ["train", "--config", DEFAULT_CONFIG, *cli_small(tmp_path, mnist_dir, "init"),
         f"networks.student.checkpoint={evil_dir / 'last.pt'}"],
    ]
    for argv in attempts:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "refused" in err and "posix.system" in err, err
        assert "nothing in it was run" in err
        assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncated", "text", "zip", "not_dict", "missing_key", "wrong_type",
                                    "wrong_shape", "other_networks", "no_tensors"])
def test_bad_checkpoints_are_one_line_errors(tmp_path, good_run, capsys, damage):
    good = good_run / "last.pt"
    bad = tmp_path / f"{damage}.pt"
    ckpt = torch.load(good, weights_only=True)
    expect = {"truncated": "truncated or corrupt", "text": "not a PyTorch checkpoint", "zip": "cannot be read",
              "not_dict": "not a switokd training checkpoint", "missing_key": "lacks switch_totals",
              "wrong_type": "epoch is str, expected int", "wrong_shape": "of another shape (first fc.weight",
              "other_networks": "differ from", "no_tensors": "no state_dict of tensors"}[damage]
    if damage == "truncated":
        bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif damage == "text":
        bad.write_text("epoch: 3\n")
    elif damage == "zip":
        with zipfile.ZipFile(bad, "w") as z:
            z.writestr("hello.txt", "not torch")
    elif damage == "not_dict":
        torch.save([1, 2, 3], bad)
    else:
        if damage == "missing_key":
            del ckpt["switch_totals"]
        elif damage == "wrong_type":
            ckpt["epoch"] = "two"
        elif damage == "wrong_shape":
            ckpt["networks"]["student"]["model"]["fc.weight"] = torch.zeros(3, 3)
        elif damage == "other_networks":
            ckpt["networks"]["ghost"] = ckpt["networks"].pop("student")
        elif damage == "no_tensors":
            ckpt["networks"]["student"]["model"] = {"fc.weight": "zeros"}
        torch.save(ckpt, bad)
    assert main(["eval", "--checkpoint", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err and expect in err, err
    with pytest.raises(CheckpointError, match=expect.split(" (")[0]) as e:
        Trainer.from_checkpoint(bad, data=None if damage not in ("wrong_shape", "other_networks") else _splits())
    assert str(bad) in str(e.value)
    if damage == "wrong_shape":  # the network at fault is named too
        assert f"{bad}, network 'student': the weights do not fit" in str(e.value)


def test_load_state_dict_errors_name_a_checkpoint_without_a_path(good_run, splits):
    """Called from a user's own loop without ``path``, errors still say what they are about."""
    ckpt = torch.load(good_run / "last.pt", weights_only=True)
    tr = Trainer.from_checkpoint(good_run, data=splits)
    ckpt["networks"]["ghost"] = ckpt["networks"].pop("student")
    with pytest.raises(CheckpointError, match=r"^checkpoint: networks \['ghost', 'teacher'\] differ from"):
        tr.load_state_dict(ckpt)
    ckpt["networks"]["student"] = ckpt["networks"].pop("ghost")
    ckpt["best"] = 3  # past the file-level checks: a state that does not fit the trainer
    with pytest.raises(CheckpointError, match=r"^checkpoint: malformed training state \(TypeError: .*int"):
        tr.load_state_dict(ckpt)


def test_resume_with_another_process_count(tmp_path, good_run, splits):
    """The rule: at an epoch's end any number of processes may resume (the step follows the new global batch);
    in the middle of an epoch only the same number."""
    ckpt = torch.load(good_run / "last.pt", weights_only=True)
    ckpt["world_size"], ckpt["step"] = 2, 4  # 2 processes: half the single process's 8 steps in 2 epochs
    torch.save(ckpt, tmp_path / "two.pt")
    tr = Trainer.from_checkpoint(tmp_path / "two.pt", ["train.epochs=3"], data=splits)
    assert (tr.epoch, tr.batch, tr.step) == (2, 0, 2 * len(tr.train_loader)) and len(tr.train_loader) == 4
    ckpt["loader"]["batch"] = 1
    torch.save(ckpt, tmp_path / "two_mid.pt")
    with pytest.raises(CheckpointError, match="written by 2 process\\(es\\) in the middle of epoch 3; resume it with 2"):
        Trainer.from_checkpoint(tmp_path / "two_mid.pt", ["train.epochs=3"], data=splits)


def _splits():
    from conftest import synthetic_splits
    return synthetic_splits()


def test_v1_checkpoint_still_loads(tmp_path, good_run, splits):
    """A checkpoint from before this format (no loader position, Python RNG as a tuple) resumes at its epoch end."""
    import random
    ckpt = torch.load(good_run / "last.pt", weights_only=True)
    for k in ("loader", "meters", "logs", "best_score", "data"):
        ckpt.pop(k)
    ckpt["format"] = "switokd-checkpoint-v1"
    ckpt["rng"]["python"] = random.getstate()
    old = tmp_path / "v1" / "last.pt"
    old.parent.mkdir()
    torch.save(ckpt, old)
    tr = Trainer.from_checkpoint(old, ["train.epochs=3"], data=splits)
    assert tr.epoch == 2 and tr.batch == 0 and tr.step == ckpt["step"]
    # No position or best score in v1: the epoch starts afresh and its student, whatever its accuracy, is best.pt.
    assert (tr.epoch_time, tr.epoch_images, tr.best_score) == (0.0, 0, -1.0)
    assert tr.fit()["epochs"] == 3


def test_checkpoint_holds_only_plain_data(good_run):
    ckpt = load_training_checkpoint(good_run / "last.pt")  # weights_only=True inside
    assert ckpt["format"] == CHECKPOINT_FORMAT
    assert isinstance(ckpt["rng"]["torch"], torch.Tensor) and isinstance(ckpt["rng"]["python"]["state"], torch.Tensor)
    assert ckpt["data"]["classes"] == ["0", "1", "2", "3"] and ckpt["loader"]["batch"] == 0

    def plain(x):
        if isinstance(x, dict):
            return all(isinstance(k, (str, int)) and plain(v) for k, v in x.items())
        if isinstance(x, (list, tuple)):
            return all(plain(v) for v in x)
        return x is None or isinstance(x, (torch.Tensor, bool, int, float, str))

    assert plain(ckpt)
    assert (good_run / "best.pt").is_file()


def _interrupt_after(monkeypatch, n_steps, signum=signal.SIGTERM):
    """Deliver a real signal to this process once ``n_steps`` training steps have run."""
    real = Trainer.train_step
    count = {"n": 0}

    def step(self, x, y):
        out = real(self, x, y)
        count["n"] += 1
        if count["n"] == n_steps:
            os.kill(os.getpid(), signum)
        return out

    monkeypatch.setattr(Trainer, "train_step", step)


@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_mid_epoch_then_exact_resume(tmp_path, splits, monkeypatch, signum, code):
    over = ["train.epochs=3", "train.batch_size=8", "train.log_interval=1", "networks.teacher.schedule=cosine",
            "networks.student.schedule=multistep", "networks.student.milestones=[1,2]"]
    ref = Trainer(tiny_config(tmp_path / "ref", overrides=over), data=splits)
    ref_report = ref.fit()
    _interrupt_after(monkeypatch, 11, signum)  # epoch 2, batch 3 of 8
    tr = Trainer(tiny_config(tmp_path / "cut", overrides=over), data=splits)
    with pytest.raises(Interrupted) as info:
        tr.fit()
    assert info.value.exit_code == code and "--resume" in str(info.value)
    ck = load_training_checkpoint(tr.run_dir / "last.pt")
    assert (ck["epoch"], ck["step"], ck["loader"]["batch"]) == (1, 11, 3)
    monkeypatch.undo()
    again = Trainer.from_checkpoint(tr.run_dir, data=splits)
    report = again.fit()
    assert_same_networks(ref, again)
    assert {n: r["last_acc"] for n, r in report["networks"].items()} == \
        {n: r["last_acc"] for n, r in ref_report["networks"].items()}
    assert report["expert_share"] == ref_report["expert_share"]
    for log in ("steps.jsonl", "epochs.jsonl"):
        assert strip_timing(read_jsonl(tr.run_dir / log)) == strip_timing(read_jsonl(ref.run_dir / log)), log


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO, errno.EROFS])
def test_failed_write_keeps_previous_checkpoint(tmp_path, splits, monkeypatch, err):
    tr = Trainer(tiny_config(tmp_path, overrides=["train.epochs=2"]), data=splits)
    tr.fit()
    good = (tr.run_dir / "last.pt").read_bytes()
    more = Trainer.from_checkpoint(tr.run_dir, ["train.epochs=3"], data=splits)
    real_save = torch.save

    def failing_save(obj, f, *a, **k):
        real_save(obj, f, *a, **k)  # part of the file is written, then the disk fails
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(CheckpointWriteError, match=f"{os.strerror(err)}.*previous checkpoint there .* is intact"):
        more.fit()
    monkeypatch.undo()
    assert (tr.run_dir / "last.pt").read_bytes() == good
    assert load_training_checkpoint(tr.run_dir / "last.pt")["epoch"] == 2
    assert not list(tr.run_dir.glob("last.pt*.tmp"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_directory(tmp_path):
    (tmp_path / "ro").mkdir()
    os.chmod(tmp_path / "ro", 0o500)
    try:
        with pytest.raises(CheckpointWriteError, match="cannot write checkpoint"):
            save_atomic({"a": 1}, tmp_path / "ro" / "last.pt")
    finally:
        os.chmod(tmp_path / "ro", 0o700)


def test_write_failure_exit_code(tmp_path, mnist_dir, monkeypatch, capsys):
    def failing(obj, path):
        raise CheckpointWriteError(f"cannot write checkpoint {path}: No space left on device; "
                                   "the previous checkpoint there (if any) is intact")

    monkeypatch.setattr("switokd.train.rundir.save_atomic", failing)
    assert main(["train", "--config", DEFAULT_CONFIG, *cli_small(tmp_path, mnist_dir)]) == 4
    assert "No space left" in capsys.readouterr().err


def test_diverged_exit_code_keeps_checkpoint(tmp_path, mnist_dir, capsys):
    args = ["train", "--config", DEFAULT_CONFIG, *cli_small(tmp_path, mnist_dir)]
    assert main(args) == 0
    good = (tmp_path / "run" / "last.pt").read_bytes()
    assert main(["train", "--resume", str(tmp_path / "run"), "train.epochs=2"]) == 0
    # A learning rate that blows up: a new run diverges and exits 3.
    assert main(["train", "--config", DEFAULT_CONFIG, *cli_small(tmp_path, mnist_dir, "nan"),
                 "networks.student.lr=1e30", "train.log_interval=1"]) == 3
    assert "non-finite" in capsys.readouterr().err
    assert good != (tmp_path / "run" / "last.pt").read_bytes()  # the resumed run moved on normally


def test_eval_of_a_kd_run_needs_no_teacher_source(tmp_path, mnist_dir, capsys):
    assert main(["train", "--config", DEFAULT_CONFIG, *cli_small(tmp_path, mnist_dir, "v"), "method.name=vanilla"]) == 0
    teacher = tmp_path / "v" / "last.pt"
    assert main(["train", "--config", DEFAULT_CONFIG, *cli_small(tmp_path, mnist_dir, "k"), "method.name=kd",
                 f"networks.teacher.checkpoint={teacher}"]) == 0
    teacher.unlink()
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(tmp_path / "k" / "last.pt"), "--json"]) == 0
    import json
    assert set(json.loads(capsys.readouterr().out.strip().splitlines()[-1])) == {"teacher", "student"}


@pytest.mark.parametrize("batch_size", [16, 64])  # 4 batches an epoch, and 1
def test_resume_position_must_lie_inside_the_epoch(tmp_path, splits, batch_size):
    tr = Trainer(tiny_config(tmp_path, overrides=[f"train.batch_size={batch_size}"]), data=splits)
    tr.fit()
    ckpt = torch.load(tr.run_dir / "last.pt", weights_only=True)
    ckpt["loader"]["batch"] = len(tr.train_loader)  # one past the last batch
    torch.save(ckpt, tmp_path / "past.pt")
    with pytest.raises(CheckpointError, match=rf"past.pt: its position \(batch {len(tr.train_loader)}\) is outside "
                                              rf"this data set's {len(tr.train_loader)} batches per epoch"):
        Trainer.from_checkpoint(tmp_path / "past.pt", ["train.epochs=2"], data=splits)


def test_a_checkpoint_with_the_keys_that_moved_resumes(tmp_path, splits):
    """method.force_mode, method.kdcl_ensemble, method.freeze_teacher_bn and train.tensorboard moved (to
    method.options and train.loggers): a checkpoint that still has them resumes; a YAML override of them is an
    unknown key."""
    tr = Trainer(tiny_config(tmp_path, overrides=["train.epochs=1"]), data=splits)
    tr.fit()
    ck = torch.load(tr.run_dir / "last.pt", map_location="cpu", weights_only=False)
    ck["config"]["method"].update(force_mode="learning", kdcl_ensemble="minlogit", freeze_teacher_bn=True)
    ck["config"]["train"]["tensorboard"] = False
    torch.save(ck, tr.run_dir / "last.pt")
    again = Trainer.from_checkpoint(tr.run_dir, ["train.epochs=2"], data=splits)
    assert again.cfg.method.options == {"force_mode": "learning", "freeze_teacher_bn": True}
    assert again.method.force_mode == "learning" and again.method.freeze_paused_bn
    with pytest.raises(C.ConfigError, match="unknown config key 'method.force_mode'"):
        C.load_config(None, ["method.force_mode=learning"])
