"""Run conditions: noisy labels, few labels and drift, for every data set, with resume and several processes."""
import json
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from switokd import config as C
from switokd.cli import main
from switokd.data import DatasetError, load_dataset
from switokd.data.conditions import (MEMORISATION_CAP, Conditions, DriftStream, apply_conditions,
                                     class_balanced_subset, corrupt_labels, memorisation_counts,
                                     memorisation_shares)
from switokd.runs.files import read_jsonl
from switokd.train.trainer import Trainer

from conftest import DEFAULT_CONFIG, assert_same_networks, synthetic_splits, tiny_config
from test_data import make_mnist_dir

def _mnist(path: Path, **kw) -> Path:
    path.mkdir(parents=True)
    return make_mnist_dir(path, **kw)


LABELS = torch.arange(1000) % 10  # 100 examples of each of 10 classes


# ----------------------------------------------------------------------------- label noise


@pytest.mark.parametrize("p", [0.0, 0.1, 0.4, 0.95])
def test_symmetric_noise_changes_exactly_round_p_n_labels_to_other_classes(p):
    noisy = corrupt_labels(LABELS, 10, p, "symmetric", split_seed=3)
    changed = noisy != LABELS
    assert int(changed.sum()) == round(p * len(LABELS))
    assert noisy.min() >= 0 and noisy.max() <= 9 and noisy.dtype == LABELS.dtype
    if p >= 0.4:  # every other class is reached, roughly uniformly (400+ draws over 9 shifts)
        shifts = ((noisy - LABELS) % 10)[changed]
        counts = torch.bincount(shifts, minlength=10)
        assert counts[0] == 0 and bool((counts[1:] > 0).all())
        assert counts[1:].max() < 2.0 * counts[1:].float().mean()


@pytest.mark.parametrize("p", [0.1, 0.3, 0.45])
def test_pairflip_moves_class_k_to_k_plus_1(p):
    noisy = corrupt_labels(LABELS, 10, p, "pairflip")
    changed = noisy != LABELS
    assert int(changed.sum()) == round(p * len(LABELS))
    assert torch.equal(noisy[changed], (LABELS[changed] + 1) % 10)


def test_noise_depends_on_the_split_seed_only(tmp_path, splits):
    over = ["data.label_noise=0.5", "data.augment=false"]
    a = Trainer(tiny_config(tmp_path / "a", overrides=[*over, "train.seed=0"]), data=splits)
    b = Trainer(tiny_config(tmp_path / "b", overrides=[*over, "train.seed=7"]), data=splits)
    c = Trainer(tiny_config(tmp_path / "c", overrides=[*over, "data.split_seed=1"]), data=splits)
    assert torch.equal(a.data.train_y, b.data.train_y)
    assert not torch.equal(a.data.train_y, c.data.train_y)
    assert int((a.data.train_y != splits.train_y).sum()) == round(0.5 * len(splits.train_y))
    # The test split and the caller's splits are untouched; the clean labels are kept.
    for tr in (a, c):
        assert torch.equal(tr.data.test_y, splits.test_y) and torch.equal(tr.data.test_x, splits.test_x)
        assert torch.equal(tr.conditions.clean_y, splits.train_y)
    assert torch.equal(splits.train_y, synthetic_splits().train_y)


# ----------------------------------------------------------------------------- few labels


@pytest.mark.parametrize("n", [1, 7, 40])
def test_few_labels_keep_exactly_n_per_class(n):
    labels = torch.randint(0, 5, (400,), generator=torch.Generator().manual_seed(0))
    idx = class_balanced_subset(labels, n, 5, split_seed=2)
    assert torch.equal(torch.bincount(labels[idx], minlength=5), torch.full((5,), n))
    assert torch.equal(idx, idx.sort().values) and len(set(idx.tolist())) == len(idx)
    assert not torch.equal(idx, class_balanced_subset(labels, n, 5, split_seed=3)) or n == 1


def test_few_labels_refuse_a_class_that_is_too_small():
    labels = torch.tensor([0] * 10 + [1] * 3 + [2] * 10)
    with pytest.raises(DatasetError, match=r"data.labels_per_class=5: class 1 \('Trouser'\) has only 3"):
        class_balanced_subset(labels, 5, 3, class_names=["T-shirt", "Trouser", "Pullover"])


def test_few_labels_then_noise_on_the_subset(tmp_path, splits):
    counts = torch.bincount(splits.train_y)
    per = int(counts.min())
    tr = Trainer(tiny_config(tmp_path, overrides=[f"data.labels_per_class={per}", "data.label_noise=0.25"]),
                 data=splits)
    assert len(tr.data.train_y) == len(tr.data.train_x) == per * splits.num_classes
    assert torch.equal(torch.bincount(tr.conditions.clean_y), torch.full((splits.num_classes,), per))
    assert len(tr.conditions.noisy) == round(0.25 * per * splits.num_classes)


# ----------------------------------------------------------------------------- drift


@pytest.mark.parametrize("phases,share", [(2, 0.8), (5, 0.6), (3, 1.0)])
def test_drift_shares_per_phase(phases, share):
    epochs = 10
    drift = DriftStream(LABELS, 10, phases, share, epochs, split_seed=1)
    assert sorted(c for g in drift.groups for c in g) == list(range(10))  # the groups partition the classes
    assert max(map(len, drift.groups)) - min(map(len, drift.groups)) <= 1
    seen_phases = []
    for e in range(epochs):
        k = drift.phase(e)
        seen_phases.append(k)
        idx = drift.epoch_indices(e)
        assert len(idx) == len(LABELS)
        in_group = torch.isin(LABELS[idx], torch.tensor(drift.groups[k]))
        assert int(in_group.sum()) == round(share * len(LABELS))  # exactly the share the README gives
        # Whole permutations of a pool before any repeat: no example of a part repeats more than needed.
        reps = torch.bincount(idx[in_group], minlength=len(LABELS))[LABELS_IN(drift.groups[k])]
        assert reps.max() - reps.min() <= 1
    assert seen_phases == sorted(seen_phases) and set(seen_phases) == set(range(phases))
    lengths = [seen_phases.count(k) for k in range(phases)]  # phases of consecutive epochs, as equal as can be
    assert sum(lengths) == epochs and max(lengths) - min(lengths) <= 1


def LABELS_IN(group):
    return torch.isin(LABELS, torch.tensor(group))


def test_drift_depends_on_the_split_seed_and_epoch():
    a, b = DriftStream(LABELS, 10, 2, 0.8, 4, 0), DriftStream(LABELS, 10, 2, 0.8, 4, 0)
    assert torch.equal(a.epoch_indices(1), b.epoch_indices(1))
    assert not torch.equal(a.epoch_indices(0), a.epoch_indices(1))
    assert a.groups != DriftStream(LABELS, 10, 2, 0.8, 4, 5).groups or \
        not torch.equal(a.epoch_indices(0), DriftStream(LABELS, 10, 2, 0.8, 4, 5).epoch_indices(0))


def test_drifting_loader_draws_the_streams_examples(tmp_path, splits):
    tr = Trainer(tiny_config(tmp_path, overrides=["data.drift_phases=2", "data.drift_share=0.75", "train.epochs=4",
                                                  "data.augment=false"]), data=splits)
    drift = tr.conditions.drift
    for epoch in (0, 3):
        tr.train_loader.set_epoch(epoch)
        ys = torch.cat([y for _, y in tr.train_loader])
        assert len(ys) == len(splits.train_y)
        group = torch.tensor(drift.groups[drift.phase(epoch)])
        assert int(torch.isin(ys, group).sum()) == round(0.75 * len(ys))
        assert torch.equal(ys.sort().values, splits.train_y[drift.epoch_indices(epoch)].sort().values)


def test_drift_run_resumed_mid_phase_is_bit_identical(tmp_path, splits, monkeypatch):
    over = ["train.epochs=4", "train.batch_size=8", "train.log_interval=1", "data.drift_phases=2",
            "data.drift_share=0.9", "data.label_noise=0.2"]
    ref = Trainer(tiny_config(tmp_path / "ref", overrides=over), data=splits)
    ref_report = ref.fit()
    from test_checkpoint import _interrupt_after, strip_timing
    from switokd.train.signals import Interrupted
    _interrupt_after(monkeypatch, 11)  # epoch 2 of 4 (phase 1), batch 3 of 8
    tr = Trainer(tiny_config(tmp_path / "cut", overrides=over), data=splits)
    with pytest.raises(Interrupted):
        tr.fit()
    monkeypatch.undo()
    again = Trainer.from_checkpoint(tr.run_dir, data=splits)
    assert again.batch == 3 and again.epoch == 1
    report = again.fit()
    assert_same_networks(ref, again)
    assert report["networks"] == ref_report["networks"]
    for log in ("steps.jsonl", "epochs.jsonl"):
        assert strip_timing(read_jsonl(tr.run_dir / log)) == strip_timing(read_jsonl(ref.run_dir / log)), log
    epochs = read_jsonl(ref.run_dir / "epochs.jsonl")
    assert [e["drift"]["phase"] for e in epochs] == [1, 1, 2, 2]
    assert all(set(e["drift"]["test_acc_group"]) == {"teacher", "student"} for e in epochs)


# ----------------------------------------------------------------------------- memorisation


def test_memorisation_on_a_hand_made_case():
    clean = torch.tensor([0, 1, 2, 3, 0])
    noisy = torch.tensor([1, 2, 3, 0, 2])
    # Predictions: teacher says the noisy label for 0, 1, the true one for 2, 3, and neither for 4.
    teacher = torch.tensor([1, 2, 2, 3, 3])
    student = torch.tensor([0, 1, 2, 3, 0])  # always the true label

    def predict(x):
        return {"teacher": torch.nn.functional.one_hot(teacher[x], 4).float(),
                "student": torch.nn.functional.one_hot(student[x], 4).float()}

    batches = [(torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2])), (torch.tensor([3, 4]), torch.tensor([3, 4]))]
    shares = memorisation_shares(memorisation_counts(predict, batches, noisy, clean))
    assert shares["teacher"] == {"noisy_label": 2 / 5, "true_label": 2 / 5, "images": 5}
    assert shares["student"] == {"noisy_label": 0.0, "true_label": 1.0, "images": 5}


def test_memorisation_sample_is_capped_and_spread():
    noisy = torch.arange(0, 3 * MEMORISATION_CAP, 3)
    c = Conditions([], torch.zeros(1), noisy)
    s = c.memorisation_sample()
    assert len(s) == MEMORISATION_CAP and torch.equal(s, noisy)
    c = Conditions([], torch.zeros(1), torch.arange(2 * MEMORISATION_CAP + 5))
    s = c.memorisation_sample()
    assert len(s) == MEMORISATION_CAP and s[0] == 0 and s[-1] > 2 * MEMORISATION_CAP - 5
    assert Conditions([]).memorisation_sample() is None


def test_memorisation_in_the_run_logs_and_report(tmp_path, splits):
    tr = Trainer(tiny_config(tmp_path, overrides=["data.label_noise=0.5", "train.epochs=2", "train.eval_every=2"]),
                 data=splits)
    report = tr.fit()
    epochs = read_jsonl(tr.run_dir / "epochs.jsonl")
    assert [("memorisation" in e, "test" in e) for e in epochs] == [(True, False), (True, True)]  # every epoch
    m = epochs[-1]["memorisation"]
    assert set(m) == {"teacher", "student"} and m["student"]["images"] == len(tr.conditions.noisy) == 32
    # Recompute the last epoch's figure by hand from the networks.
    sample = tr.conditions.memorisation_sample()
    x = tr.conditions.memorisation.loader.normalize(splits.train_x[sample])
    for name, net in tr.networks.items():
        net.model.eval()
        with torch.no_grad():
            pred = net.model(x).argmax(1)
        assert m[name]["noisy_label"] == pytest.approx(float((pred == tr.data.train_y[sample]).float().mean()))
        assert m[name]["true_label"] == pytest.approx(float((pred == splits.train_y[sample]).float().mean()))
    assert report["memorisation"] == m
    assert report["conditions"]["noisy_labels"] == 32
    assert (tr.run_dir / "config.yaml").read_text().startswith("# run conditions: 50% symmetric label noise")


# ----------------------------------------------------------------------------- every data set, the header


def _image_folder(root: Path, classes=3, per_class=6, size=10):
    from PIL import Image
    for split, n in (("train", per_class), ("val", 2)):
        for c in range(classes):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(n):
                Image.new("L", (size, size), 40 * c + i).save(d / f"{i}.png")
    return root


@pytest.mark.parametrize("in_memory", [True, False])
def test_conditions_on_image_folders_in_memory_and_streamed(tmp_path, in_memory):
    root = _image_folder(tmp_path / "data")
    cfg = tiny_config(tmp_path, overrides=[
        "data.name=image_folder", f"data.dir={root}", f"data.in_memory={str(in_memory).lower()}", "data.workers=0",
        "data.labels_per_class=4", "data.label_noise=0.5", "data.drift_phases=3", "data.drift_share=0.5",
        "train.epochs=3", "train.batch_size=4", "data.channels=1"])
    tr = Trainer(cfg)
    assert len(tr.data.train_y) == 12 and len(tr.conditions.noisy) == 6
    assert torch.equal(torch.bincount(tr.conditions.clean_y), torch.tensor([4, 4, 4]))
    report = tr.fit()
    assert report["memorisation"]["student"]["images"] == 6
    epochs = read_jsonl(tr.run_dir / "epochs.jsonl")
    assert [e["drift"]["phase"] for e in epochs] == [1, 2, 3]


def test_conditions_on_idx_files_and_the_header(tmp_path, capsys):
    data = _mnist(tmp_path / "data", n_train=200, n_test=20)
    code = main(["train", "--config", DEFAULT_CONFIG, "data.val_split=0", "data.name=mnist", f"data.dir={data}", "train.epochs=1",
                 "data.limit_train=0", "data.label_noise=0.4", "data.labels_per_class=10", "train.batch_size=32",
                 "networks.teacher.model=resnet20", f"train.out_dir={tmp_path}", "train.run_name=r",
                 "train.progress_interval_s=0"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "condition  few labels 10 per class (split seed 0): 100 of 200 training images kept" in err
    assert "condition  label noise 40% symmetric (split seed 0): 40 of 100 training labels changed" in err


def test_cifar_reader_with_noise(tmp_path):
    from test_data import write_cifar
    write_cifar(tmp_path, 10)
    s = load_dataset("cifar10", str(tmp_path))
    d = C.DataConfig(name="cifar10", label_noise=0.3, label_noise_kind="pairflip")
    noisy, cond = apply_conditions(s, d, epochs=1)
    assert int((noisy.train_y != s.train_y).sum()) == round(0.3 * len(s.train_y))
    assert torch.equal(noisy.train_y[cond.noisy], (s.train_y[cond.noisy] + 1) % 10)


# ----------------------------------------------------------------------------- bad values


@pytest.mark.parametrize("override,key", [
    ("data.label_noise=1.0", "data.label_noise"), ("data.label_noise=-0.1", "data.label_noise"),
    ("data.label_noise_kind=uniform", "data.label_noise_kind"),
    ("data.label_noise_kind=pairflip data.label_noise=0.5", "data.label_noise"),
    ("data.labels_per_class=-1", "data.labels_per_class"), ("data.labels_per_class=100000", "data.labels_per_class"),
    ("data.drift_share=0", "data.drift_share"), ("data.drift_share=1.5", "data.drift_share"),
    ("data.drift_phases=-2", "data.drift_phases"), ("data.drift_phases=1", "data.drift_phases"),
    ("data.drift_phases=11 train.epochs=20", "data.drift_phases"), ("data.split_seed=-1", "data.split_seed"),
    ("data.drift_phases=4 train.epochs=3", "data.drift_phases"),
    ("data.label_noise=lots", "data.label_noise"),
])
def test_bad_condition_values_exit_2_naming_the_key_and_write_nothing(tmp_path, capsys, override, key):
    data = _mnist(tmp_path / "data", n_train=40, n_test=10)
    out = tmp_path / "runs"
    code = main(["train", "--config", DEFAULT_CONFIG, "data.val_split=0", "data.name=mnist", f"data.dir={data}", "data.limit_train=0",
                 f"train.out_dir={out}", *override.split()])
    err = capsys.readouterr().err
    assert code == 2 and key in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


# ----------------------------------------------------------------------------- several processes


def _rank_worker(rank, world, port, out, data_dir, split_seeds):
    from conftest import rank_env as _env
    _env(rank, world, port)
    cfg = tiny_config(Path(out) / f"run{rank}", overrides=[
        "data.name=mnist", f"data.dir={data_dir}", "data.limit_train=0", "data.label_noise=0.4",
        "data.drift_phases=2", f"data.split_seed={split_seeds[rank]}", "train.epochs=2"])
    try:
        tr = Trainer(cfg)
    except DatasetError as e:
        torch.save({"error": str(e)}, Path(out) / f"rank{rank}.pt")
        return
    tr.train_loader.set_epoch(1)
    ys = torch.cat([y for _, y in tr.train_loader])
    torch.save({"train_y": tr.data.train_y, "noisy": tr.conditions.noisy, "epoch1": ys}, Path(out) / f"rank{rank}.pt")
    tr.dist.close()


@pytest.mark.slow
@pytest.mark.parametrize("split_seeds,agree", [((0, 0), True), ((0, 1), False)])
def test_every_rank_gets_the_same_labels(tmp_path, split_seeds, agree):
    from conftest import free_port
    data = _mnist(tmp_path / "data", n_train=96, n_test=10)
    mp.spawn(_rank_worker, args=(2, free_port(), str(tmp_path), str(data), split_seeds), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    if agree:
        assert torch.equal(r0["train_y"], r1["train_y"]) and torch.equal(r0["noisy"], r1["noisy"])
        assert len(r0["noisy"]) == round(0.4 * 96)
        # Each rank's shard of the drifting stream: together, the epoch's whole stream, once.
        assert len(r0["epoch1"]) + len(r1["epoch1"]) == 96
    else:
        assert all("training labels differ between processes" in r["error"] for r in (r0, r1))
