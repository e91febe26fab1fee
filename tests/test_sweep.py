"""switokd sweep: the grid's plan, resumability, and the mean ± std table."""
import json

import pytest

from switokd import config as C
from switokd.race.plan import plan
from switokd.runs.stats import mean_std
from switokd.sweep import results_table, run_state, sweep
from switokd.train.trainer import Trainer

from test_data import make_mnist_dir

SMALL = ["data.name=mnist", "train.epochs=2", "train.batch_size=16", "train.eval_batch_size=64",
         "train.progress=false", "train.precision=fp32", "train.threads=1", "train.log_interval=2",
         "networks.teacher.model=resnet20", "networks.student.model=wrn16_1"]


def test_plan_orders_kd_after_its_teacher(tmp_path):
    specs = plan(None, ["kd", "switokd"], [0, 1], [], tmp_path)
    names = [s.name for s in specs]
    assert names == ["switokd-seed0", "teacher-alone-seed0", "kd-seed0", "switokd-seed1", "teacher-alone-seed1", "kd-seed1"]
    kd = specs[2]
    assert specs[1].method == "vanilla"
    assert f"networks.teacher.checkpoint={tmp_path / 'teacher-alone-seed0' / 'last.pt'}" in kd.overrides
    teacher_cfg = C.load_config(None, list(specs[1].overrides))
    assert [n.name for n in teacher_cfg.networks] == ["teacher"] and teacher_cfg.method.name == "vanilla"
    # With vanilla in the grid, kd reuses its teacher (trained on the labels alone) instead.
    specs = plan(None, ["vanilla", "kd"], [3], [], tmp_path)
    assert [s.name for s in specs] == ["vanilla-seed3", "kd-seed3"]
    assert f"networks.teacher.checkpoint={tmp_path / 'vanilla-seed3' / 'last.pt'}" in specs[1].overrides
    with pytest.raises(C.ConfigError, match="unknown method"):
        plan(None, ["dmll"], [0], [], tmp_path)
    with pytest.raises(C.ConfigError, match="must not repeat"):
        plan(None, ["dml", "dml"], [0], [], tmp_path)


def test_a_branch_method_in_a_grid_trains_the_grids_student_in_branches(tmp_path):
    specs = plan(None, ["dml", "one@options.ramp_epochs=8", "pcl"], [0], ["networks.student.lr=0.05"], tmp_path)
    dml, one, pcl = (C.load_config(None, list(s.overrides)) for s in specs)
    assert [n.name for n in dml.networks] == ["teacher", "student"]
    for cfg in (one, pcl):  # the student alone, in 3 branches at its default split, with its own settings
        (net,) = cfg.networks
        assert (net.name, net.model, net.branches, net.split, net.lr) == ("student", "wrn16_1", 3, "", 0.05)
    assert one.method.options == {"ramp_epochs": 8}
    # A config that splits a network already is left as it is.
    mine = ["networks=[{name: s, model: resnet20, role: student, branches: 2}]"]
    (spec,) = plan(None, ["ffl"], [0], mine, tmp_path)
    assert C.load_config(None, list(spec.overrides)).networks[0].branches == 2


def test_mean_std_and_table_on_known_inputs():
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert mean_std([5.0]) == (5.0, 0.0)

    def rep(seed, t, s, e):
        return {"method": "switokd", "seed": seed, "train_time_s": 10.0, "wall_time_s": 12.0 + seed,
                "networks": {"teacher": {"model": "wrn16_2", "role": "teacher", "last_acc": t, "best_acc": t + 1},
                             "student": {"model": "wrn16_1", "role": "student", "last_acc": s, "best_acc": s}},
                "expert_share": {"teacher->student": e}, "paused_share": {"teacher": e}}

    table = results_table([rep(0, 90.0, 80.0, 0.1), rep(1, 92.0, 84.0, 0.3), rep(2, 94.0, 82.0, 0.2)])
    rows = {r.split("|")[2].strip(): [c.strip() for c in r.split("|")[1:-1]] for r in table.splitlines()[2:]}
    assert rows["teacher"][4:9] == ["92.00 ± 2.00", "93.00 ± 2.00", "20.0 ± 10.0", "20.0 ± 10.0", "13 ± 1"]
    assert rows["student"][4:6] == ["82.00 ± 2.00", "82.00 ± 2.00"] and rows["student"][7] == "-"
    assert rows["student"][3] == "3"
    from switokd.sweep import comparison_table
    other = [{**r, "method": "dml", "networks": {**r["networks"], "student": {**r["networks"]["student"],
                                                                            "last_acc": r["networks"]["student"]["last_acc"] + d}}}
             for r, d in zip([rep(0, 90.0, 80.0, 0.1), rep(1, 92.0, 84.0, 0.3), rep(2, 94.0, 82.0, 0.2)], (1.0, 1.5, 0.5))]
    cmp = comparison_table([rep(0, 90.0, 80.0, 0.1), rep(1, 92.0, 84.0, 0.3), rep(2, 94.0, 82.0, 0.2), *other])
    assert "| student | 82.00 ± 2.00 | dml | 83.00 ± 2.29 | -1.00 | tie |" in cmp
    far = [{**o, "method": "vanilla", "networks": {**o["networks"], "student": {**o["networks"]["student"], "last_acc": 70.0}}}
           for o in other]
    assert "| vanilla | 70.00 ± 0.00 | +12.00 | switokd ahead |" in comparison_table([rep(0, 90.0, 80.0, 0.1), rep(1, 92.0, 84.0, 0.3), rep(2, 94.0, 82.0, 0.2), *far])


def test_sweep_skips_finished_and_continues_interrupted(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    data = make_mnist_dir(tmp_path / "data", n_train=48, n_test=24)
    out = tmp_path / "sweep"
    overrides = [*SMALL, f"data.dir={data}"]
    real_save = Trainer.save_checkpoint

    def save_then_die(self, *args, **kwargs):
        path = real_save(self, *args, **kwargs)
        if self.cfg.train.run_name == "switokd-seed1" and self.epoch == 1:
            raise KeyboardInterrupt  # killed after its first epoch's checkpoint
        return path

    monkeypatch.setattr(Trainer, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        sweep(None, ["vanilla", "switokd"], [0, 1], out, overrides, report=False, log=lambda m: None)
    monkeypatch.setattr(Trainer, "save_checkpoint", real_save)
    assert run_state(out / "vanilla-seed1", 2) == "done" and run_state(out / "switokd-seed1", 2) == "partial"
    done_before = (out / "switokd-seed0" / "last.pt").stat().st_mtime_ns

    messages = []
    reports = sweep(None, ["vanilla", "switokd"], [0, 1], out, overrides, report=False, log=messages.append)
    assert sum("skipped" in m for m in messages) == 3
    assert any("switokd-seed1: continuing" in m for m in messages)
    assert (out / "switokd-seed0" / "last.pt").stat().st_mtime_ns == done_before  # not retrained
    assert [r["run"] for r in reports] == ["vanilla-seed0", "switokd-seed0", "vanilla-seed1", "switokd-seed1"]
    assert all(r["epochs"] == 2 for r in reports)
    assert len(json.loads((out / "results.json").read_text())) == 4
    text = (out / "results.md").read_text()
    assert "| switokd | student | wrn16_1 | 2 |" in text and "mean ± sample std" in text
    # Tables from the runs' logs: SwitOKD minus vanilla paired by seed, the curves, when the switch fired.
    diffs = [reports[i + 1]["networks"]["student"]["last_acc"] - reports[i]["networks"]["student"]["last_acc"]
             for i in (0, 2)]
    assert f"| student | vanilla | 2 | {diffs[0]:+.2f}, {diffs[1]:+.2f} |" in text
    assert "| vanilla | student |" in text.split("Training curves")[1]
    assert "| switokd-seed0 | teacher->student |" in text.split("The switch, run by run")[1]
    # The continued run ends where an uninterrupted one with the same seed ends.
    ref = Trainer(C.load_config(None, [*overrides, "method.name=switokd", "train.seed=1",
                                       f"train.out_dir={tmp_path / 'ref'}", "train.run_name=r"])).fit()
    assert ref["networks"]["student"]["last_acc"] == reports[3]["networks"]["student"]["last_acc"]
    # A changed config in the same directory is refused, not mixed in.
    (out / "switokd-seed1" / "report.json").unlink()
    with pytest.raises(C.ConfigError, match="another config"):
        sweep(None, ["switokd"], [1], out, [*overrides, "networks.student.lr=0.05"], report=False, log=lambda m: None)
    # A second sweep on the same directory while one runs would not see its study (it is in memory) and would
    # train the same runs in the same directories at once: it is refused, naming the holder and the way to share.
    import fcntl
    with open(out / "sweep.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.seek(0)
        held.truncate()
        held.write("pid 12345 on elsewhere")
        held.flush()
        with pytest.raises(C.ConfigError, match=r"another sweep is running in .*\(pid 12345 on elsewhere\).*--storage"):
            sweep(None, ["vanilla"], [0], out, overrides, report=False, log=lambda m: None)
    assert sweep(None, ["vanilla"], [0], out, overrides, report=False, log=lambda m: None)  # released: it runs
