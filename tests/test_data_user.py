"""Any torch Dataset as a run's data (DatasetSplits): float images in [0, 1] train from Python and resume
bit-exactly, the Dataset's own random transforms included; the run conditions apply; bad input is one
clear error naming what it got and what was expected."""

import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from switokd import Trainer
from switokd.data import DataSplits, DatasetError, DatasetSplits
from switokd.runs.files import read_jsonl

from conftest import assert_same_networks, synthetic_splits, tiny_config


class FloatImages(Dataset):
    """A user's Dataset: float images in [0, 1] with a random flip as its augmentation (torch's RNG)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, augment: bool) -> None:
        self.x, self.y, self.augment = x.float() / 255.0, y, augment

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        img = self.x[i]
        if self.augment and torch.rand(()) < 0.5:
            img = img.flip(-1)
        return img, int(self.y[i])


def user_data():
    s = synthetic_splits()
    return DatasetSplits(FloatImages(s.train_x, s.train_y, AUG), FloatImages(s.test_x, s.test_y, False),
                         name="my-floats")


AUG = True
OVER = ["train.epochs=3", "train.batch_size=8", "train.log_interval=1", "data.workers=0"]


def test_a_float_dataset_trains_and_resumes_bit_exactly(tmp_path, monkeypatch):
    from test_checkpoint import _interrupt_after
    from switokd.train.signals import Interrupted
    data = user_data()
    assert (data.num_classes, data.in_chans, data.image_size) == (4, 1, 8)
    ref = Trainer(tiny_config(tmp_path / "ref", overrides=OVER), data=data)
    ref_report = ref.fit()
    assert ref_report["dataset"] == "my-floats"  # the data actually passed, not the config's data.name
    _interrupt_after(monkeypatch, 11)  # epoch 2, batch 3 of 8
    cut = Trainer(tiny_config(tmp_path / "cut", overrides=OVER), data=user_data())
    with pytest.raises(Interrupted):
        cut.fit()
    monkeypatch.undo()
    again = Trainer.from_checkpoint(cut.run_dir, data=user_data())
    report = again.fit()
    assert_same_networks(ref, again)
    assert report["networks"] == ref_report["networks"]
    strip = lambda rows: [{k: v for k, v in r.items() if "time" not in k and "per_s" not in k} for r in rows]  # noqa: E731
    assert strip(read_jsonl(cut.run_dir / "steps.jsonl")) == strip(read_jsonl(ref.run_dir / "steps.jsonl"))
    ckpt = torch.load(ref.run_dir / "last.pt", weights_only=True)
    assert ckpt["data"]["name"] == "my-floats" and len(ckpt["data"]["mean"]) == 1  # for predict and export


def test_conditions_apply_to_a_users_dataset(tmp_path):
    tr = Trainer(tiny_config(tmp_path, overrides=["train.epochs=1", "data.workers=0", "data.label_noise=0.25",
                                                  "data.labels_per_class=8"]), data=user_data())
    assert len(tr.data.train_y) == 32 and tr.conditions.lines
    tr.fit()
    assert "memorisation" in read_jsonl(tr.run_dir / "epochs.jsonl")[-1]


def test_mean_and_std_are_computed_when_not_given():
    s = synthetic_splits()
    data = DatasetSplits(TensorDataset(s.train_x.float() / 255, s.train_y), TensorDataset(s.test_x.float() / 255, s.test_y),
                         name="t")
    want = (s.train_x.float() / 255)
    assert data.mean[0] == pytest.approx(want.mean().item(), rel=1e-4)
    assert data.std[0] == pytest.approx(want.std().item(), rel=1e-3)


class Listed(Dataset):
    """A dataset from a list of (image, label) pairs, as a user might write one."""

    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def _mixed_sizes(s):
    items = [(s.train_x[i].float() / 255, int(s.train_y[i])) for i in range(8)]
    items[5] = (torch.rand(1, 10, 10), 0)
    return Listed(items)


def _with_nan(s):
    items = [(s.train_x[i].float() / 255, int(s.train_y[i])) for i in range(8)]
    items[3][0][0, 2, 2] = float("nan")
    return Listed(items)



def test_an_image_of_another_size_met_while_training_is_named(tmp_path):
    """With mean and std given, nothing reads the images up front: the loader names the odd one."""
    s = synthetic_splits()
    data = DatasetSplits(_mixed_sizes(s), TensorDataset(s.test_x, s.test_y), name="n", mean=[0.3], std=[0.3],
                         num_classes=4)
    with pytest.raises(DatasetError, match=r"n \(train\)\[5\]: the image is 1 x 10 x 10 \(C x H x W\)"):
        Trainer(tiny_config(tmp_path, overrides=["data.workers=0"]), data=data).fit()


def test_float_labels_given_to_a_method_are_one_error():
    from switokd import create_method
    z = {"teacher": torch.randn(4, 3), "student": torch.randn(4, 3)}
    with pytest.raises(ValueError, match=r"method 'dml': labels must be class indices, an integer tensor, got torch.float32"):
        create_method("dml", {"teacher": "teacher", "student": "student"}).step(z, torch.tensor([0.0, 1.0, 2.0, 1.0]))


def test_workers_above_the_cores_are_capped_and_the_header_says_so(tmp_path):
    from switokd.data.pipeline import capped_workers
    from switokd.hardware import usable_cores
    from switokd.train.runinfo import run_header
    n = usable_cores()
    assert capped_workers(n) == (n, "") and capped_workers(n + 3) == (n, f"data.workers={n + 3} capped to this machine's {n} cores")
    s = synthetic_splits()
    data = DatasetSplits(TensorDataset(s.train_x, s.train_y), TensorDataset(s.test_x, s.test_y), name="n")
    tr = Trainer(tiny_config(tmp_path, overrides=[f"data.workers={n + 3}"]), data=data, writable=False)
    assert tr.train_loader.workers == n
    assert any(f"data.workers={n + 3} capped to this machine's {n} cores" in line for line in run_header(tr))


@pytest.mark.parametrize("make,message", [
    (lambda s: DatasetSplits(TensorDataset(s.train_x.float() / 255 * 2 - 1, s.train_y), TensorDataset(s.test_x, s.test_y),
                             name="n"), "a float image must be in [0, 1], got values in [-1"),
    (lambda s: DatasetSplits(TensorDataset(s.train_x, s.train_y + 10), TensorDataset(s.test_x, s.test_y), name="n",
                             num_classes=4), "label 1"),
    (lambda s: DatasetSplits([1, 2, 3], TensorDataset(s.test_x, s.test_y), name="n"), "expected an (image, label) pair, got int"),
    (lambda s: DatasetSplits(object(), TensorDataset(s.test_x, s.test_y), name="n"),
     "expected a map-style torch Dataset (with __getitem__ and __len__) yielding (image, label), got object"),
    (lambda s: DataSplits("f", s.train_x.float() / 255, s.train_y, s.test_x, s.test_y, 4, (0.3,), (0.3,), 1),
     "train_x must be uint8 (0-255), got torch.float32 (for float images in [0, 1] use switokd.data.DatasetSplits"),
    (lambda s: DataSplits("f", s.train_x, s.train_y + 4, s.test_x, s.test_y, 4, (0.3,), (0.3,), 1),
     "train label 7 is outside the 4 classes"),
    # an item that is not what a DatasetSplits needs: named by the dataset and its index
    (lambda s: DatasetSplits(_mixed_sizes(s), TensorDataset(s.test_x, s.test_y), name="n"),
     "n (train)[5]: the image is 1 x 10 x 10 (C x H x W), but n (train)[0] is 1 x 8 x 8; every image must have the same size"),
    (lambda s: DatasetSplits(Listed([(s.train_x[0], "cat"), (s.train_x[1], "dog")]), TensorDataset(s.test_x, s.test_y),
                             name="n"), "n (train)[0]: the label is 'cat' (str); expected a class index"),
    (lambda s: DatasetSplits(Listed([(s.train_x[0], 1), (s.train_x[1], 2.5)]), TensorDataset(s.test_x, s.test_y),
                             name="n"), "n (train)[1]: the label is 2.5 (float)"),
    (lambda s: DatasetSplits(_with_nan(s), TensorDataset(s.test_x, s.test_y), name="n"),
     "n (train)[3]: the image has a non-finite value (nan at (0, 2, 2))"),
])
def test_bad_input_is_one_clear_error(make, message):
    with pytest.raises(DatasetError) as e:
        make(synthetic_splits())
    assert message in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_a_raw_dataset_given_to_the_trainer_says_how_to_wrap_it(tmp_path):
    s = synthetic_splits()
    with pytest.raises(DatasetError, match=r"got TensorDataset; wrap your datasets: switokd.data.DatasetSplits"):
        Trainer(tiny_config(tmp_path), data=TensorDataset(s.train_x, s.train_y))
