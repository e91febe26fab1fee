"""data.val_split: a class-balanced held-out split drawn from the split seed; best.pt and the best epoch are
chosen on it, the test split is read for reporting; noise and few labels apply to the training part only."""
import json

import pytest
import torch

from switokd import config as C
from switokd.data.conditions import split_validation, validation_count, validation_indices
from switokd.data.readers import DatasetError
from switokd.train.trainer import Trainer

from conftest import synthetic_splits, tiny_config


def test_validation_indices_are_class_balanced_seeded_and_sorted():
    y = torch.arange(1000) % 10
    a = validation_indices(y, 105, 10, split_seed=3)
    assert len(a) == 105 and len(set(a.tolist())) == 105 and torch.equal(a, a.sort().values)
    counts = torch.bincount(y[a], minlength=10)
    assert counts.min() == 10 and counts.max() == 11 and int((counts == 11).sum()) == 5
    assert torch.equal(a, validation_indices(y, 105, 10, split_seed=3))  # the same on every rank and resume
    assert not torch.equal(a, validation_indices(y, 105, 10, split_seed=4))


def test_val_split_is_a_fraction_or_a_count():
    assert validation_count(0.1, 1000) == 100 and validation_count(250, 1000) == 250 and validation_count(0, 9) == 0
    for bad in ("-0.1", "2.5"):
        with pytest.raises(C.ConfigError, match="config key 'data.val_split'"):
            C.load_config(None, [f"data.val_split={bad}"])


def test_a_split_that_empties_a_class_is_refused_naming_it():
    y = torch.tensor([0] * 20 + [1] * 2)
    with pytest.raises(DatasetError, match=r"class 1 has 2 training images.*lower data.val_split"):
        validation_indices(y, 10, 2)
    with pytest.raises(DatasetError, match="leave at least one to train on"):
        validation_indices(y, 22, 2)


def test_noise_and_few_labels_apply_to_the_training_part_only(tmp_path):
    data = synthetic_splits(n_train=200, n_test=16)
    cfg = tiny_config(tmp_path, overrides=["data.val_split=40", "data.label_noise=0.5", "data.split_seed=1"])
    tr = Trainer(cfg, data=data, writable=False)
    held, val = split_validation(data, 40, 1)
    assert torch.equal(tr.validation.labels, val.labels)  # the user's labels, unchanged
    idx = validation_indices(data.train_y, 40, data.num_classes, 1)
    assert torch.equal(val.images, data.train_x[idx]) and torch.equal(val.labels, data.train_y[idx])
    assert len(tr.data.train_y) == 160 and len(tr.conditions.noisy) == 80  # half of the 160 that train
    # No training image is a validation image.
    train_rows = {tuple(x.flatten().tolist()) for x in tr.data.train_x}
    assert not any(tuple(x.flatten().tolist()) in train_rows for x in val.images)
    few = Trainer(tiny_config(tmp_path, overrides=["data.val_split=0.2", "data.labels_per_class=5"]), data=data,
                  writable=False)
    assert len(few.validation.labels) == 40 and len(few.data.train_y) == 5 * data.num_classes


def test_best_checkpoint_is_chosen_on_validation_and_reported_on_test(tmp_path, splits):
    tr = Trainer(tiny_config(tmp_path, method="dml", overrides=["data.val_split=16", "train.epochs=2"]), data=splits)
    assert any(line.startswith("selection  validation 16 of 64") for line in __import__("switokd").train.runinfo.run_header(tr))
    tr.epoch = 1
    val = lambda t, s: {"teacher": {"acc": t}, "student": {"acc": s}}
    assert tr._update_best(val(50.0, 60.0), val(70.0, 20.0)) is True
    tr.epoch = 2  # test says epoch 2 is better, validation says it is not: validation decides
    assert tr._update_best(val(40.0, 55.0), val(90.0, 90.0)) is False
    assert tr.best["student"] == {"acc": 20.0, "val_acc": 60.0, "epoch": 1}
    report = Trainer(tiny_config(tmp_path / "fit", method="dml", overrides=["data.val_split=16", "train.epochs=2"]),
                     data=splits).fit()
    assert report["best_chosen_on"] == "val"
    student = report["networks"]["student"]
    assert {"last_val_acc", "best_val_acc"} <= set(student)
    epochs = [json.loads(line) for line in (tmp_path / "fit" / "run" / "epochs.jsonl").read_text().splitlines()]
    assert all("val" in e and "test" in e for e in epochs)
    best_epoch = max(epochs, key=lambda e: (e["val"]["student"]["acc"], -e["epoch"]))
    assert student["best_epoch"] == best_epoch["epoch"] and student["best_acc"] == best_epoch["test"]["student"]["acc"]


def test_without_validation_best_is_a_test_maximum_and_says_so(tmp_path, splits):
    report = Trainer(tiny_config(tmp_path, method="vanilla"), data=splits).fit()
    assert report["best_chosen_on"] == "test" and "best_val_acc" not in report["networks"]["student"]
    from switokd.cli import _report_lines
    assert any("test-set maximum" in line for line in _report_lines(report))


def test_a_user_dataset_takes_a_validation_split_too(tmp_path):
    from torch.utils.data import TensorDataset
    from switokd.data import DatasetSplits
    g = torch.Generator().manual_seed(0)
    imgs, y = torch.rand(48, 1, 8, 8, generator=g), torch.arange(48) % 4
    data = DatasetSplits(TensorDataset(imgs, y), TensorDataset(imgs[:16], y[:16]), name="toy")
    report = Trainer(tiny_config(tmp_path, method="vanilla", overrides=["data.val_split=0.25"]), data=data).fit()
    assert report["best_chosen_on"] == "val" and report["networks"]["student"]["best_val_acc"] is not None


def test_eval_test_last_reads_the_test_split_at_the_last_epoch_only(tmp_path, splits):
    """train.eval_test=last (the race's rungs): the same training and validation curve, the test split read once;
    a best epoch before the last has no test figure rather than another epoch's."""
    over = ["data.val_split=16", "train.epochs=3"]
    every = Trainer(tiny_config(tmp_path / "every", method="dml", overrides=over), data=splits)
    every.fit()
    last = Trainer(tiny_config(tmp_path / "last", method="dml", overrides=[*over, "train.eval_test=last"]), data=splits)
    report = last.fit()
    rows = lambda tr: [json.loads(x) for x in (tr.run_dir / "epochs.jsonl").read_text().splitlines()]  # noqa: E731
    assert [("val" in e, "test" in e) for e in rows(last)] == [(True, False), (True, False), (True, True)]
    assert [e["val"] for e in rows(last)] == [e["val"] for e in rows(every)]  # evaluating test changes nothing
    assert rows(last)[-1]["test"] == rows(every)[-1]["test"]
    for n in every.networks:
        a, b = every.networks[n].model.state_dict(), last.networks[n].model.state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), n
    for n, r in report["networks"].items():
        assert r["last_acc"] == rows(every)[-1]["test"][n]["acc"]
        assert r["best_acc"] == (r["last_acc"] if r["best_epoch"] == 3 else None)
    with pytest.raises(C.ConfigError, match="'train.eval_test': 'last' .* set data.val_split"):
        C.load_config(None, ["train.eval_test=last"])
    with pytest.raises(C.ConfigError, match="'train.eval_test': 'sometimes' is not one of every, last"):
        C.load_config(None, ["train.eval_test=sometimes", "data.val_split=0.1"])
