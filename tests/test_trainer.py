"""Checkpoints hold the whole state; resume continues; bad states never replace good checkpoints."""
import json

import pytest
import torch

from switokd.checkpoint import CheckpointError, load_checkpoint
from switokd.telemetry import read_jsonl
from switokd.trainer import Trainer, TrainingDiverged

from conftest import tiny_config


def test_fit_writes_run_files(tmp_path, splits):
    tr = Trainer(tiny_config(tmp_path, overrides=["train.epochs=2"]), data=splits)
    report = tr.fit()
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "steps.jsonl", "epochs.jsonl", "last.pt"}
    epochs = read_jsonl(run / "epochs.jsonl")
    assert [e["epoch"] for e in epochs] == [1, 2]
    for e in epochs:
        assert set(e["test"]) == {"teacher", "student"} and e["images_per_s"] > 0
        assert "teacher->student" in e["switch"]["expert_share"] and "teacher" in e["switch"]["paused_share"]
    steps = read_jsonl(run / "steps.jsonl")
    assert len(steps) == 4 - 0  # 8 steps, log every 2
    row = steps[0]
    from switokd.switching import SwitchStats
    assert set(row["pair"]["teacher->student"]) == set(SwitchStats.LOGGED)
    assert set(epochs[0]["train"]["pair"]["teacher->student"]) == set(SwitchStats.LOGGED)
    assert set(report["switch_stats"]["teacher->student"]) == set(SwitchStats.LOGGED)
    assert row["mode"]["teacher->student"] in ("expert", "learning") and "student" in row["loss"]
    assert report["networks"]["student"]["last_acc"] == epochs[-1]["test"]["student"]["acc"]
    assert report["networks"]["teacher"]["best_acc"] == max(e["test"]["teacher"]["acc"] for e in epochs)


def test_checkpoint_has_whole_state(tmp_path, splits):
    tr = Trainer(tiny_config(tmp_path), data=splits)
    tr.fit()
    ck = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ck["epoch"] == 1 and ck["step"] == 4
    for n in ("teacher", "student"):
        assert {"model", "optimizer"} <= set(ck["networks"][n])
        assert ck["networks"][n]["optimizer"]["state"]  # momentum buffers
    assert {"scaler", "rng", "switch_totals", "history", "best", "config"} <= set(ck)
    assert ck["switch_totals"]["steps"] == 4


def test_resume_matches_uninterrupted_run(tmp_path, splits):
    a = Trainer(tiny_config(tmp_path / "a", overrides=["train.epochs=3"]), data=splits)
    a.fit()
    b = Trainer(tiny_config(tmp_path / "b", overrides=["train.epochs=2"]), data=splits)
    b.fit()
    b2 = Trainer.from_checkpoint(tmp_path / "b" / "run" / "last.pt", ["train.epochs=3"], data=splits)
    assert b2.epoch == 2
    b2.fit()
    for n in a.networks:
        for (k, va), vb in zip(a.networks[n].model.state_dict().items(), b2.networks[n].model.state_dict().values()):
            assert torch.equal(va, vb), (n, k)
    assert len(read_jsonl(tmp_path / "b" / "run" / "epochs.jsonl")) == 3


def test_resume_rejects_changing_the_run(tmp_path, splits):
    Trainer(tiny_config(tmp_path), data=splits).fit()
    from switokd.config import ConfigError
    with pytest.raises(ConfigError, match="cannot change on --resume"):
        Trainer.from_checkpoint(tmp_path / "run" / "last.pt", ["networks.student.lr=1.0"], data=splits)


def test_existing_run_is_not_overwritten(tmp_path, splits):
    Trainer(tiny_config(tmp_path), data=splits).fit()
    before = (tmp_path / "run" / "last.pt").read_bytes()
    with pytest.raises(CheckpointError, match="already holds a checkpoint"):
        Trainer(tiny_config(tmp_path), data=splits).fit()
    assert (tmp_path / "run" / "last.pt").read_bytes() == before


def test_divergence_keeps_last_good_checkpoint(tmp_path, splits):
    tr = Trainer(tiny_config(tmp_path, overrides=["train.epochs=2"]), data=splits)
    tr.fit()
    good = (tmp_path / "run" / "last.pt").read_bytes()
    bad = Trainer.from_checkpoint(tmp_path / "run" / "last.pt", ["train.epochs=3"], data=splits)
    with torch.no_grad():
        next(bad.networks["student"].model.parameters()).fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="non-finite"):
        bad.fit()
    assert (tmp_path / "run" / "last.pt").read_bytes() == good


def test_bad_checkpoint_errors(tmp_path, splits):
    p = tmp_path / "junk.pt"
    p.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt cannot be read"):
        Trainer.from_checkpoint(p)
    with pytest.raises(CheckpointError, match="not found"):
        Trainer.from_checkpoint(tmp_path / "missing.pt")


def test_kd_needs_and_uses_trained_teacher(tmp_path, splits):
    from switokd.config import ConfigError
    with pytest.raises(ConfigError, match="networks.teacher.checkpoint=PATH"):
        Trainer(tiny_config(tmp_path, method="kd"), data=splits)
    van = Trainer(tiny_config(tmp_path / "v", method="vanilla"), data=splits)
    van.fit()
    ck = tmp_path / "v" / "run" / "last.pt"
    kd = Trainer(tiny_config(tmp_path / "k", method="kd", overrides=[f"networks.teacher.checkpoint={ck}"]), data=splits)
    t_before = {k: v.clone() for k, v in kd.networks["teacher"].model.state_dict().items()}
    assert all(torch.equal(t_before[k], v) for k, v in van.networks["teacher"].model.state_dict().items())
    kd.fit()
    assert all(torch.equal(t_before[k], v) for k, v in kd.networks["teacher"].model.state_dict().items())
    assert kd.networks["teacher"].optimizer is None


@pytest.mark.parametrize("method", ["vanilla", "dml", "kdcl", "switokd"])
def test_every_method_learns(tmp_path, splits, method):
    tr = Trainer(tiny_config(tmp_path, method=method, overrides=["train.epochs=4", "train.batch_size=8"]), data=splits)
    report = tr.fit()
    assert report["networks"]["student"]["best_acc"] > 40.0  # 4 classes: chance is 25%


def test_schedules():
    from switokd.config import NetworkConfig
    from switokd.engine import lr_factor
    ms = NetworkConfig(schedule="multistep", milestones=[2, 4], gamma=0.1)
    assert [round(lr_factor(ms, s, 10, 6), 6) for s in (0, 19, 20, 39, 40, 59)] == [1, 1, 0.1, 0.1, 0.01, 0.01]
    cos = NetworkConfig(schedule="cosine")
    assert lr_factor(cos, 0, 10, 3) == 1.0 and lr_factor(cos, 15, 10, 3) == pytest.approx(0.5)
    assert lr_factor(cos, 30, 10, 3) == pytest.approx(0.0)
    assert lr_factor(NetworkConfig(schedule="constant"), 99, 10, 3) == 1.0


def test_paused_teacher_schedule_advances(tmp_path, splits):
    tr = Trainer(tiny_config(tmp_path, overrides=["method.force_mode=expert", "train.epochs=2",
                                                   "networks.teacher.schedule=cosine"]), data=splits)
    tr.fit()
    from switokd.engine import lr_factor
    steps = len(tr.train_loader)
    last = 0.1 * lr_factor(tr.networks["teacher"].cfg, 2 * steps - 1, steps, 2)  # the last batch's lr
    assert tr.networks["teacher"].optimizer.param_groups[0]["lr"] == pytest.approx(last) and last < 0.01
    assert tr.report()["paused_share"]["teacher"] == 1.0


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_trains(tmp_path, splits, precision):
    tr = Trainer(tiny_config(tmp_path, overrides=[f"train.precision={precision}", "train.channels_last=true",
                                                   "method.force_mode=learning"]), data=splits)
    report = tr.fit()
    assert report["networks"]["student"]["last_acc"] is not None
    assert tr.precision.scaler.is_enabled() == (precision == "fp16")
    if precision == "fp16":  # the one scaler stepped and updated: its state is checkpointed
        assert tr.state_dict()["scaler"]["scale"] > 0


def test_fp16_expert_step_leaves_teacher_alone(tmp_path, splits):
    tr = Trainer(tiny_config(tmp_path, overrides=["train.precision=fp16", "method.force_mode=expert"]), data=splits,
                 writable=False)
    before = {k: v.clone() for k, v in tr.networks["teacher"].model.named_parameters()}
    tr.train_loader.set_epoch(0)
    for _, (x, y) in zip(range(3), tr.train_loader):
        assert tr.train_step(x, y).stepping == ("student",)
    assert all(torch.equal(v, before[k]) for k, v in tr.networks["teacher"].model.named_parameters())
    assert tr.networks["teacher"].optimizer.state_dict()["state"] == {}


def test_meter_groups_by_key_set():
    from switokd.telemetry import Meter
    m = Meter()
    m.add({"a": torch.tensor(1.0), "b": torch.tensor(2.0)})
    m.add({"a": torch.tensor(3.0)})  # a step where b was not computed (a paused network)
    assert m.read() == {"a": 2.0, "b": 2.0}
    assert m.read() == {}
