"""Checkpoints hold the whole state; resume continues; bad states never replace good checkpoints."""
import copy
import json

import pytest
import torch

from switokd import config as C
from switokd.train.checkpoint import CheckpointError, load_checkpoint
from switokd.runs.files import read_jsonl
from switokd.train.trainer import Trainer, TrainingDiverged

from conftest import tiny_config, assert_same_networks


def test_fit_writes_run_files(tmp_path, splits):
    tr = Trainer(tiny_config(tmp_path, overrides=["train.epochs=2"]), data=splits)
    modes = []  # every step's decision, as the method took it
    real = tr.method.step

    def step(logits, y):
        out = real(logits, y)
        modes.append(out.expert["teacher->student"])
        return out

    tr.method.step = step
    report = tr.fit()
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "steps.jsonl", "epochs.jsonl", "last.pt", "best.pt"}
    epochs = read_jsonl(run / "epochs.jsonl")
    assert [e["epoch"] for e in epochs] == [1, 2]
    for e in epochs:
        assert set(e["test"]) == {"teacher", "student"}
        assert e["images_per_s"] == pytest.approx(len(splits.train_y) / e["train_time_s"])
        assert "teacher->student" in e["switch"]["expert_share"] and "teacher" in e["switch"]["paused_share"]
    steps = read_jsonl(run / "steps.jsonl")
    assert [r["step"] for r in steps] == [2, 4, 6, 8]  # 8 steps, log every 2
    row = steps[0]
    from switokd.core.switching import SwitchStats
    assert set(row["pair"]["teacher->student"]) == set(SwitchStats.LOGGED)
    assert set(epochs[0]["train"]["pair"]["teacher->student"]) == set(SwitchStats.LOGGED)
    assert set(report["switch_stats"]["teacher->student"]) == set(SwitchStats.LOGGED)
    assert len(modes) == 8
    for r in steps:  # a row's mode is its last step's; its share is the interval's
        i = r["step"]
        assert r["mode"]["teacher->student"] == ("expert" if modes[i - 1] else "learning")
        assert r["expert_share"]["teacher->student"] == sum(modes[i - 2:i]) / 2
        assert r["paused_share"]["teacher"] == r["expert_share"]["teacher->student"]
    assert report["expert_share"]["teacher->student"] == sum(modes) / 8
    assert "student" in row["loss"] and ("teacher" in row["loss"]) == (not all(modes[:2]))
    assert report["networks"]["student"]["last_acc"] == epochs[-1]["test"]["student"]["acc"]
    assert report["networks"]["teacher"]["best_acc"] == max(e["test"]["teacher"]["acc"] for e in epochs)
    best = load_checkpoint(run / "best.pt")  # a whole checkpoint, at the end of the students' best epoch
    assert best["step"] == 4 * best["best"]["student"]["epoch"] and best["loader"]["batch"] == 0
    assert best["data"] == {"name": tr.data.name, "classes": list(tr.data.class_names), "mean": list(tr.data.mean),
                            "std": list(tr.data.std), "in_chans": tr.data.in_chans, "image_size": tr.data.image_size,
                            "num_classes": tr.data.num_classes}


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
    assert ck["world_size"] == 1 and ck["loader"] == {"batch": 0, "train_time_s": 0.0, "images": 0}  # an epoch's end


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
    with pytest.raises(ConfigError, match=r"'networks.student.lr' cannot change on --resume \(allowed: "
                                          r"train.epochs, train.progress, "):
        Trainer.from_checkpoint(tmp_path / "run" / "last.pt", ["networks.student.lr=1.0"], data=splits)
    # The key ends at the first '=': a value may hold more of them.
    tr = Trainer.from_checkpoint(tmp_path / "run" / "last.pt", ["data.dir=/data/a=b"], data=splits)
    assert tr.cfg.data.dir == "/data/a=b"
    ck = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    ck["config"]["train"]["bogus"] = 1  # e.g. written by a newer version
    torch.save(ck, tmp_path / "newer.pt")
    with pytest.raises(CheckpointError, match=r"newer.pt: its config is not valid here \(.*bogus"):
        Trainer.from_checkpoint(tmp_path / "newer.pt", data=splits)


def test_resume_of_a_moved_run_continues_where_it_is(tmp_path, splits):
    """A run directory copied elsewhere (another disk, another machine) resumes there, not at its old path."""
    import shutil
    Trainer(tiny_config(tmp_path / "old"), data=splits).fit()
    moved = tmp_path / "new" / "run"
    shutil.copytree(tmp_path / "old" / "run", moved)
    tr = Trainer.from_checkpoint(moved, ["train.epochs=2"], data=splits)
    assert tr.fit()["epochs"] == 2 and tr.run_dir == moved
    assert len(read_jsonl(moved / "epochs.jsonl")) == 2 and len(read_jsonl(tmp_path / "old" / "run" / "epochs.jsonl")) == 1


def test_lr_scale_multiplies_every_networks_rate(tmp_path, splits):
    """``train.scale_lr`` under N processes sets lr_scale = N; every optimizer's rate is the schedule's times it."""
    from switokd.train.engine import lr_factor
    tr = Trainer(tiny_config(tmp_path, overrides=["networks.teacher.schedule=cosine"]), data=splits, writable=False)
    tr.lr_scale, tr.step = 4.0, 2
    tr._set_lrs()
    for net in tr.networks.values():
        assert net.optimizer.param_groups[0]["lr"] == pytest.approx(4.0 * net.cfg.lr * lr_factor(net.cfg, 2, 4, 1))


def test_progress_lines_name_the_epoch(tmp_path, splits, capsys):
    Trainer(tiny_config(tmp_path, overrides=["train.progress=true", "train.progress_interval_s=0", "train.epochs=2"]),
            data=splits, writable=False).fit()
    err = capsys.readouterr().err
    assert "epoch 1/2 step 1/4 (25%)" in err and "epoch 2/2 step 4/4 (100%)" in err
    line = next(ln for ln in err.splitlines() if "epoch 2/2 step 4/4" in ln)
    assert "loss teacher " in line and " student " in line and "expert teacher->student " in line, line


def record_saves(monkeypatch, read) -> list:
    """Every ``Trainer.save_checkpoint`` call still saves; ``read(trainer)`` at each call is appended to the list."""
    seen, real = [], Trainer.save_checkpoint

    def save(self, *a, **k):
        seen.append(read(self))
        return real(self, *a, **k)

    monkeypatch.setattr(Trainer, "save_checkpoint", save)
    return seen


@pytest.mark.parametrize("every", [["train.checkpoint_every=2"], ["train.checkpoint_every_s=1e-6"]])
def test_checkpoints_inside_an_epoch_follow_the_schedule(tmp_path, splits, monkeypatch, every):
    """Every 2 steps, or (a tiny interval in seconds) after every step; never at a batch that ends an epoch,
    which fit() saves anyway."""
    saved = record_saves(monkeypatch, lambda tr: (tr.epoch, tr.batch))
    Trainer(tiny_config(tmp_path, overrides=["train.epochs=2", "train.checkpoint_every_s=0", *every]), data=splits).fit()
    inside = [(0, 2), (1, 2)] if every[0].startswith("train.checkpoint_every=") else [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 3)]
    assert sorted(saved) == sorted(inside + [(1, 0), (2, 0)])  # fit() saves after each epoch (position reset)


def test_epoch_time_adds_up_across_checkpoints_inside_it(tmp_path, splits, monkeypatch):
    """The time spent writing checkpoints is left out, the rest of the epoch is summed (a fake clock, 1 s a read)."""
    import itertools
    import switokd.train.progress as progress_mod  # the training clock's module
    clock = itertools.count()
    monkeypatch.setattr(progress_mod, "clock", lambda: float(next(clock)))
    seen = record_saves(monkeypatch, lambda tr: tr.epoch_time)
    tr = Trainer(tiny_config(tmp_path, overrides=["train.checkpoint_every=1", "train.checkpoint_every_s=0",
                                                  "train.epochs=2", "train.log_interval=100"]), data=splits)
    tr.fit()
    # The clock is read once before the loop, then twice at each checkpoint (stop, restart): one second a batch.
    assert seen[:3] == [1.0, 2.0, 3.0], seen  # after batches 1, 2 and 3
    for h in tr.history:  # the second epoch starts from zero again
        assert (h["train_time_s"], h["steps"], h["images_per_s"]) == (4.0, 4, len(splits.train_y) / 4.0)


def test_step_rows_carry_throughput_over_training_time_and_the_lrs(tmp_path, splits, monkeypatch):
    """images/s in steps.jsonl: the interval's images over its training time (fake clock, 1 s a read)."""
    import itertools
    import switokd.train.progress as progress_mod  # the training clock's module
    clock = itertools.count()
    monkeypatch.setattr(progress_mod, "clock", lambda: float(next(clock)))
    tr = Trainer(tiny_config(tmp_path, overrides=["train.log_interval=2", "train.batch_size=16"]), data=splits)
    tr.fit()
    rows = read_jsonl(tr.run_dir / "steps.jsonl")
    # The loop starts the clock (read 0); each row reads it once: 1 s and 2 batches of 16 images per row.
    assert [r["images_per_s"] for r in rows] == [32.0, 32.0]
    assert rows[0]["lr"] == {"teacher": pytest.approx(0.1), "student": pytest.approx(0.1)}


def test_epoch_means_are_reduced_over_ranks(tmp_path, splits):
    """The epoch's losses go through the ranks' mean (here a stand-in reduction that zeroes them)."""
    tr = Trainer(tiny_config(tmp_path, overrides=["train.log_interval=100"]), data=splits, writable=False)
    tr.dist.mean = lambda t: t.mul_(0)
    summary = tr.train_epoch()
    assert summary["train"]["loss"]["student"]["loss"] == 0.0 and summary["steps"] == 4


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
    # Resume and eval restore the teacher from the run's own checkpoint, even once its source file is gone.
    ck.rename(ck.with_suffix(".moved"))
    again = Trainer.from_checkpoint(tmp_path / "k" / "run", ["train.epochs=2"], data=splits)
    assert all(torch.equal(t_before[k], v) for k, v in again.networks["teacher"].model.state_dict().items())
    assert again.fit()["epochs"] == 2


@pytest.mark.parametrize("method", ["vanilla", "dml", "kdcl", "switokd"])
def test_every_method_learns(tmp_path, method):
    """Every network of every method ends (last epoch, not best) far above chance (25%) on easy data."""
    from conftest import synthetic_splits
    over = ["train.epochs=4", "train.batch_size=8", "networks.teacher.schedule=cosine", "networks.student.schedule=cosine",
            "networks.teacher.lr=0.05", "networks.student.lr=0.05"]
    report = Trainer(tiny_config(tmp_path, method=method, overrides=over), data=synthetic_splits(n_train=128, n_test=64)).fit()
    for net, r in report["networks"].items():
        assert r["last_acc"] >= 90.0, (method, net, r)


def test_resume_across_a_milestone_and_mid_cosine_restores_everything(tmp_path, splits, monkeypatch):
    """fp16 (a live grad scaler), a multistep student and a cosine teacher, cut inside epoch 3 of 4 and resumed."""
    over = ["train.epochs=4", "train.batch_size=8", "train.precision=fp16", "networks.teacher.schedule=cosine",
            "networks.student.schedule=multistep", "networks.student.milestones=[1,2]", "networks.student.gamma=0.5",
            "method.options.freeze_teacher_bn=true"]
    ref = Trainer(tiny_config(tmp_path / "ref", overrides=over), data=splits)
    ref.fit()
    import os
    import signal
    from switokd.train.signals import Interrupted
    real, count = Trainer.train_step, {"n": 0}

    def step(self, x, y):
        out = real(self, x, y)
        count["n"] += 1
        if count["n"] == 19:  # epoch 3, batch 3: past both milestones, cosine mid-way
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(Trainer, "train_step", step)
    cut = Trainer(tiny_config(tmp_path / "cut", overrides=over), data=splits)
    with pytest.raises(Interrupted):
        cut.fit()
    monkeypatch.undo()
    res = Trainer.from_checkpoint(cut.run_dir, data=splits)
    assert (res.step, res.epoch, res.batch) == (19, 2, 3)
    # The epoch's time and images so far, and the best student score (epoch 2's), carry over.
    ck = torch.load(cut.run_dir / "last.pt", weights_only=True)
    assert res.epoch_time == ck["loader"]["train_time_s"] > 0 and res.epoch_images == ck["loader"]["images"] == 24
    assert res.best_score == ck["best_score"] == cut.best_score > 0
    # The restored state is the uninterrupted run's state at that step: learning rates included.
    res._set_lrs()
    from switokd.train.engine import lr_factor
    for n, net in res.networks.items():
        assert net.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * lr_factor(net.cfg, 19, 8, 4))
    assert res.networks["student"].optimizer.param_groups[0]["lr"] == pytest.approx(0.025)
    res.fit()
    for attr in ("step", "epoch", "best", "best_score"):
        assert getattr(res, attr) == getattr(ref, attr), attr
    assert res.meters.totals == ref.meters.totals and res.meters.totals["steps"] == 32
    strip = lambda h: [{k: v for k, v in e.items() if k not in ("train_time_s", "images_per_s", "epoch_time_s")} for e in h]
    assert strip(res.history) == strip(ref.history)
    assert res.precision.scaler.state_dict() == ref.precision.scaler.state_dict()
    assert res.report()["expert_share"] == ref.report()["expert_share"]
    assert_same_networks(ref, res)


def test_natural_expert_step_leaves_teacher_bit_identical(tmp_path, splits):
    """Not forced: a trained teacher and a student confidently wrong elsewhere make the switch itself choose expert."""
    tr = Trainer(tiny_config(tmp_path, overrides=["method.options.freeze_teacher_bn=true", "train.batch_size=32"]),
                 data=splits, writable=False)
    teacher, student = tr.networks["teacher"], tr.networks["student"]
    tr.train_loader.set_epoch(0)
    x, y = next(iter(tr.train_loader))
    # Give the teacher optimizer state, and make it good: a few learning steps on this batch.
    tr.method.force_mode = "learning"
    for net in tr.networks.values():
        net.model.train()
    for _ in range(15):
        tr.train_step(x, y)
    tr.method.force_mode = None
    with torch.no_grad():  # the student now puts its mass on class 3, which the teacher rules out here
        student.model.fc.weight.zero_()
        student.model.fc.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 6.0]))
    keep = y != 3
    before = copy.deepcopy(teacher.model.state_dict()), copy.deepcopy(teacher.optimizer.state_dict())
    out = tr.train_step(x[keep], y[keep])
    assert tr.method.force_mode is None and out.expert == {"teacher->student": True}, out.switches
    assert out.stepping == ("student",)
    after = teacher.model.state_dict(), teacher.optimizer.state_dict()
    assert all(torch.equal(before[0][k], v) for k, v in after[0].items())
    assert all(torch.equal(before[1]["state"][i]["momentum_buffer"], after[1]["state"][i]["momentum_buffer"])
               for i in after[1]["state"])
    assert all(p.grad is None for p in teacher.model.parameters())


def test_schedules():
    from switokd.config import NetworkConfig
    from switokd.train.engine import lr_factor
    ms = NetworkConfig(schedule="multistep", milestones=[2, 4], gamma=0.1)
    assert [round(lr_factor(ms, s, 10, 6), 6) for s in (0, 19, 20, 39, 40, 59)] == [1, 1, 0.1, 0.1, 0.01, 0.01]
    cos = NetworkConfig(schedule="cosine")
    assert lr_factor(cos, 0, 10, 3) == 1.0 and lr_factor(cos, 15, 10, 3) == pytest.approx(0.5)
    assert lr_factor(cos, 30, 10, 3) == pytest.approx(0.0)
    assert lr_factor(NetworkConfig(schedule="constant"), 99, 10, 3) == 1.0


def test_paused_teacher_schedule_advances(tmp_path, splits):
    tr = Trainer(tiny_config(tmp_path, overrides=["method.options.force_mode=expert", "train.epochs=2",
                                                   "networks.teacher.schedule=cosine"]), data=splits)
    tr.fit()
    from switokd.train.engine import lr_factor
    steps = len(tr.train_loader)
    last = 0.1 * lr_factor(tr.networks["teacher"].cfg, 2 * steps - 1, steps, 2)  # the last batch's lr
    assert tr.networks["teacher"].optimizer.param_groups[0]["lr"] == pytest.approx(last) and last < 0.01
    assert tr.report()["paused_share"]["teacher"] == 1.0


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_trains(tmp_path, splits, precision):
    tr = Trainer(tiny_config(tmp_path, overrides=[f"train.precision={precision}", "train.channels_last=true",
                                                   "method.options.force_mode=learning"]), data=splits)
    report = tr.fit()
    assert report["networks"]["student"]["last_acc"] is not None
    assert tr.precision.scaler.is_enabled() == (precision == "fp16")
    if precision == "fp16":  # the one scaler stepped and updated: its state is checkpointed
        scaler = tr.state_dict()["scaler"]
        assert scaler["scale"] == tr.precision.scaler.get_scale() and scaler["_growth_tracker"] == tr.step


def test_fp16_expert_step_leaves_teacher_alone(tmp_path, splits):
    tr = Trainer(tiny_config(tmp_path, overrides=["train.precision=fp16", "method.options.force_mode=expert"]), data=splits,
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


def test_load_state_dict_puts_running_sums_on_the_trainers_device(tmp_path, splits):
    """The step and epoch sums restored mid-epoch live where training adds to them (a CUDA run's sums on CUDA).

    This machine has no GPU: the "meta" device stands in for it, so that a restore left on the CPU shows."""
    tr = Trainer(tiny_config(tmp_path), data=splits, writable=False)
    tr.train_loader.set_epoch(0)
    for _, (x, y) in zip(range(2), tr.train_loader):
        tr.meters.record(tr.train_step(x, y))
    state = tr.state_dict()
    tr.device = torch.device("meta")
    tr.load_state_dict(state)
    sums = [t for m in (tr.meters.step, tr.meters.epoch) for t in m.sums.values()]
    assert sums and all(t.device.type == "meta" for t in sums)


def test_best_epochs_and_best_checkpoint_score(tmp_path, splits):
    """Each network's best epoch moves only on a strictly better accuracy; best.pt follows the students' mean."""
    from test_methods_cohorts import nets
    tr = Trainer(tiny_config(tmp_path, networks=nets(("t", "wrn16_1", "teacher"), ("s1", "resnet20", "student"),
                                                     ("s2", "wrn16_1", "student"))), data=splits, writable=False)
    acc = lambda t, s1, s2: {"t": {"acc": t}, "s1": {"acc": s1}, "s2": {"acc": s2}}
    tr.epoch = 1
    assert tr._update_best(acc(0.0, 40.0, 50.0)) is True and tr.best_score == 45.0  # the students' mean
    assert tr.best == {"t": {"acc": 0.0, "epoch": 1}, "s1": {"acc": 40.0, "epoch": 1}, "s2": {"acc": 50.0, "epoch": 1}}
    tr.epoch = 2
    assert tr._update_best(acc(0.0, 40.0, 50.0)) is False  # a tie is not better
    tr.epoch = 3
    assert tr._update_best(acc(60.0, 30.0, 59.0)) is False and tr.best_score == 45.0  # mean 44.5
    assert tr.best == {"t": {"acc": 60.0, "epoch": 3}, "s1": {"acc": 40.0, "epoch": 1}, "s2": {"acc": 59.0, "epoch": 3}}
    # Without students (networks that all teach), every network counts.
    peers = Trainer(tiny_config(tmp_path, method="dml", networks=nets(("a", "wrn16_1", "teacher"), ("b", "resnet20", "teacher"))),
                    data=splits, writable=False)
    assert peers._update_best({"a": {"acc": 20.0}, "b": {"acc": 30.0}}) is True and peers.best_score == 25.0


def test_frozen_networks_build_no_graph(tmp_path, splits):
    """KD's trained teacher runs under no_grad: no autograd graph is kept for it."""
    van = Trainer(tiny_config(tmp_path / "v", method="vanilla"), data=splits)
    van.fit()
    kd = Trainer(tiny_config(tmp_path / "k", method="kd", overrides=[f"networks.teacher.checkpoint={van.run_dir / 'last.pt'}"]),
                 data=splits, writable=False)
    kd.train_loader.set_epoch(0)
    logits = kd.forward(next(iter(kd.train_loader))[0])
    assert not logits["teacher"].requires_grad and logits["student"].requires_grad


def test_save_checkpoint_syncs_checks_and_writes_only_last(tmp_path, splits):
    """A plain save writes last.pt only; it first averages the ranks' state (unless already done), and refuses
    non-finite weights without touching the file."""
    run = tmp_path / "r"
    run.mkdir()
    tr = Trainer(tiny_config(tmp_path), data=splits, run_dir=run)
    synced = []
    tr.dist.world_size = 2  # stand-ins for the collectives of a 2-process job
    tr.dist.average_buffers = lambda m: synced.append("bn")
    tr.dist.mean = lambda t: synced.append("sum") or t
    assert tr.save_checkpoint() == run / "last.pt" and not (run / "best.pt").exists()
    assert synced.count("bn") == 2  # each network's BatchNorm statistics
    synced.clear()
    tr.save_checkpoint(best=True, synced=True)
    assert synced == [] and (run / "best.pt").exists()
    good = (run / "last.pt").read_bytes()
    tr.step = 7
    with torch.no_grad():
        next(tr.networks["student"].model.parameters()).fill_(float("inf"))
    with pytest.raises(TrainingDiverged, match=rf"networks \['student'\] have non-finite parameters at step 7; "
                                               rf"the last good checkpoint in {run} is kept"):
        tr.save_checkpoint()
    assert (run / "last.pt").read_bytes() == good


def test_train_step_reduces_the_stepping_networks_gradients(tmp_path, splits):
    """Under several processes the gradients of the networks that step (and only theirs) are averaged over
    the global batch, weighted by this rank's examples (the reduction itself is tested in test_distributed)."""
    tr = Trainer(tiny_config(tmp_path, overrides=["train.batch_size=8"]), data=splits, writable=False)
    calls = []
    tr.dist.reduce_grads = lambda params, n: calls.append(([id(p) for p in params], n))
    tr.train_loader.set_epoch(0)
    x, y = next(iter(tr.train_loader))
    for mode in ("learning", "expert"):
        tr.method.force_mode = mode
        out = tr.train_step(x[:6], y[:6])
        expected = [id(p) for n in out.stepping for p in tr.networks[n].model.parameters()]
        assert calls[-1] == (expected, 6), mode
    assert len(calls[0][0]) > len(calls[1][0])  # the paused teacher's gradients are not reduced


def test_a_network_at_chance_for_an_epoch_is_named_once(caplog):
    """A MobileNet at lr 0.1 sat at chance for 38 epochs with no sign; now the trainer says so, in one line."""
    import logging
    import math
    from types import SimpleNamespace
    from switokd.train.hooks import ChanceWatch
    nets = {"teacher": SimpleNamespace(frozen=False, cfg=SimpleNamespace(lr=0.1)),
            "student": SimpleNamespace(frozen=False, cfg=SimpleNamespace(lr=0.1))}
    tr = SimpleNamespace(data=SimpleNamespace(num_classes=100), networks=nets, dist=SimpleNamespace(is_main=True))
    watch = ChanceWatch()
    chance = math.log(100)
    summary = lambda epoch, ce: {"epoch": epoch, "train": {"loss": {"teacher": {"ce": 2.0}, "student": {"ce": ce}}}}  # noqa: E731
    logger = logging.getLogger("switokd")
    logger.addHandler(caplog.handler)
    try:
        watch.on_epoch_end(tr, summary(1, chance + 1), None)  # the first epoch: not yet
        watch.on_epoch_end(tr, summary(2, chance + 0.1), None)
        watch.on_epoch_end(tr, summary(3, chance), None)  # once per network
    finally:
        logger.removeHandler(caplog.handler)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "network 'student' trained at chance in epoch 2" in lines[0]
    assert "networks.student.lr=0.1" in lines[0] and "if it stays there" in lines[0]
    # Noisy labels keep both networks near chance early (the demo's epochs 2-3): no warning; nor when the
    # epoch's evaluation shows the network predicting well above chance.
    quiet = ChanceWatch()
    caplog.clear()
    logger.addHandler(caplog.handler)
    try:
        both = {"epoch": 2, "train": {"loss": {"teacher": {"ce": 0.99 * chance}, "student": {"ce": chance}}}}
        quiet.on_epoch_end(tr, both, None)
        evaluated = {**summary(3, chance), "val": {"student": {"acc": 30.0}, "teacher": {"acc": 40.0}}}
        quiet.on_epoch_end(tr, evaluated, None)
    finally:
        logger.removeHandler(caplog.handler)
    assert not caplog.records
    # A branch network's ce sums its branches' and its ensemble's (ONE with 3 branches: 4 terms at 1.6 each, on
    # 10 classes): read per term it is learning, not at chance (the branch race warned on it). At chance per
    # term it is named, with the per-term figure.
    from switokd.methods import create_method
    one = create_method("one", {"student": "student"})
    one.branch_counts = {"student": 3}
    ten = SimpleNamespace(data=SimpleNamespace(num_classes=10), networks={"student": nets["student"]},
                          dist=SimpleNamespace(is_main=True), method=one)
    logger.addHandler(caplog.handler)
    try:
        learning = {"epoch": 4, "train": {"loss": {"student": {"ce": 6.4}}}, "val": {"student": {"acc": 15.0}}}
        quiet.on_epoch_end(ten, learning, None)
        assert not caplog.records
        stuck = {"epoch": 4, "train": {"loss": {"student": {"ce": 4 * math.log(10)}}}, "val": {"student": {"acc": 10.0}}}
        quiet.on_epoch_end(ten, stuck, None)
    finally:
        logger.removeHandler(caplog.handler)
    assert len(caplog.records) == 1 and "(mean CE 2.303 per term of 4, ln 10 = 2.303)" in caplog.records[0].getMessage()


def test_bn_refresh_at_an_evaluation_leaves_training_unchanged(tmp_path, splits):
    """train.bn_refresh_epochs (the race's rungs) scores with BatchNorm statistics re-estimated on the training
    split, then restores them: the run trains, and ends, exactly as without; only that epoch's scores differ."""
    from switokd.train.evaluation import refreshed_batchnorm

    def run(name, *extra):
        tr = Trainer(C.load_config(None, ["data.name=synthetic", "train.epochs=3", "train.batch_size=16",
                                          "train.progress=false", "train.precision=fp32", f"train.out_dir={tmp_path}",
                                          f"train.run_name={name}", "method.name=dml", "networks.teacher.lr=0.5",
                                          "networks.teacher.model=resnet20", "networks.student.model=resnet20",
                                          *extra]), data=splits)
        tr.fit()
        return tr
    plain, refreshed = run("plain"), run("refreshed", "train.bn_refresh_epochs=[1,2]")
    for n in plain.networks:
        a, b = plain.networks[n].model.state_dict(), refreshed.networks[n].model.state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), n  # weights and running statistics, bit for bit
    assert plain.history[-1]["test"] == refreshed.history[-1]["test"]
    assert [e.get("bn_refreshed", False) for e in refreshed.history] == [True, True, False]
    assert {b["epoch"] for b in refreshed.best.values()} == {3}  # refreshed scores rank a rung; they choose no best
    assert any(plain.history[i]["test"] != refreshed.history[i]["test"] for i in (0, 1))
    model = refreshed.networks["student"].model
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before, rng = bn.running_mean.clone(), torch.get_rng_state()
    with refreshed_batchnorm(refreshed) as count:
        inside = bn.running_mean.clone()
        assert count > 0 and not torch.equal(inside, before)
    assert torch.equal(bn.running_mean, before) and torch.equal(torch.get_rng_state(), rng) and bn.momentum == 0.1
    with pytest.raises(C.ConfigError, match="train.bn_refresh_epochs"):
        C.load_config(None, ["train.bn_refresh_epochs=[0]"])


def test_an_unset_lr_is_the_familys_reference():
    cfg = C.load_config(None, ["networks.student.model=mobilenetv2_x0.5"])
    assert [(n.model, n.lr) for n in cfg.networks] == [("wrn16_2", 0.1), ("mobilenetv2_x0.5", 0.01)]
    assert C.load_config(None, ["networks.student.model=mobilenetv2_x0.5", "networks.student.lr=0.05"]).networks[1].lr == 0.05
