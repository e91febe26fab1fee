"""TensorBoard events: the tags and steps a user looks for, read back with tensorboard's own reader, and a
resumed run that continues the same curves without a duplicated or lost step."""
import pytest

from switokd.cli import main
from switokd.train.trainer import Trainer

from conftest import tiny_config

pytest.importorskip("tensorboard")


def scalars(run_dir):
    """{tag: [steps]} from the run's event files, as TensorBoard reads them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return {t: [e.step for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}, acc


OVER = ["train.loggers=[jsonl,tensorboard]", "train.epochs=2", "train.batch_size=8", "train.log_interval=2",
        "data.label_noise=0.25"]


def test_tags_and_steps(tmp_path, splits):
    tr = Trainer(tiny_config(tmp_path, overrides=OVER), data=splits)
    tr.fit()
    tags, acc = scalars(tr.run_dir)
    # The teacher logs a loss only in intervals where it learned (the switch may pause it throughout one).
    assert tags["loss/teacher/loss"] and set(tags["loss/teacher/loss"]) <= {2, 4, 6, 8, 10, 12, 14, 16}
    for tag in ("loss/student/ce", "loss/student/kl", "pair/teacher->student/gap",
                "pair/teacher->student/threshold", "pair/teacher->student/epsilon",
                "pair/teacher->student/shared_ratio", "expert_share/teacher->student", "lr/teacher", "lr/student",
                "images_per_s"):
        assert tags[tag] == [2, 4, 6, 8, 10, 12, 14, 16], tag
    for tag in ("test/teacher/acc", "test/student/acc", "memorisation/student/noisy_label", "epoch/images_per_s"):
        assert tags[tag] == [8, 16], tag  # at the step each epoch ended on
    assert "config" in str(acc.Tags()["tensors"]) or acc.Tags().get("tensors")


def test_resume_continues_the_curves_without_duplicates(tmp_path, splits, monkeypatch):
    from conftest import killed_after_an_older_checkpoint
    ref, cut = killed_after_an_older_checkpoint(tmp_path, splits, monkeypatch, OVER)
    assert scalars(cut.run_dir)[0]["loss/student/loss"] == [2, 4, 6, 8, 10, 12]
    again = Trainer.from_checkpoint(cut.run_dir, data=splits)
    again.fit()
    got, _ = scalars(cut.run_dir)
    want, _ = scalars(ref.run_dir)
    assert got == want and all(len(set(v)) == len(v) for v in got.values())


def test_tensorboard_without_the_package_is_one_line(tmp_path, monkeypatch, capsys):
    import switokd.telemetry.sinks as sinks
    monkeypatch.setattr(sinks, "tensorboard_available", lambda: False)
    from test_data_conditions import _mnist
    data = _mnist(tmp_path / "data", n_train=40, n_test=10)
    from conftest import DEFAULT_CONFIG
    assert main(["train", "--config", DEFAULT_CONFIG, "data.val_split=0", "data.name=mnist", f"data.dir={data}", "data.limit_train=0",
                 f"train.out_dir={tmp_path}/runs", "train.loggers=[jsonl,tensorboard]"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'switokd[tensorboard]'" in err
    assert not (tmp_path / "runs").exists()
