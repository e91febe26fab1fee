"""The teacher cache (networks.NAME.cache): cached and live runs train the same student to the bit; a stale,
partial or damaged cache is never read; a learning network cannot have one; two gloo processes read it."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch.utils.data import Dataset

from switokd import config as C
from switokd.cli import main
from switokd.data import DatasetSplits
from switokd.train.trainer import Trainer

from conftest import free_port, rank_env, synthetic_splits, tiny_config
from test_data import make_mnist_dir


def same_student(a: Trainer, b: Trainer) -> bool:
    sa, sb = a.networks["student"].model.state_dict(), b.networks["student"].model.state_dict()
    return all(torch.equal(v, sb[k]) for k, v in sa.items())


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A trained teacher (a vanilla run's last.pt) for the synthetic splits."""
    out = tmp_path_factory.mktemp("teacher")
    van = Trainer(tiny_config(out, method="vanilla", overrides=["train.epochs=2"]), data=synthetic_splits())
    van.fit()
    return van.run_dir / "last.pt"


def kd(tmp_path, name, teacher, cache=None, extra=()):
    over = [f"networks.teacher.checkpoint={teacher}", "data.augment_seed=5", "train.epochs=2", *extra]
    if cache is not None:
        over.append(f"networks.teacher.cache={cache}")
    return Trainer(tiny_config(tmp_path / name, method="kd", overrides=over), data=synthetic_splits())


def test_cached_and_live_runs_train_the_same_student(tmp_path, teacher):
    live = kd(tmp_path, "live", teacher)
    live.fit()
    fill = kd(tmp_path, "fill", teacher, tmp_path / "cache")
    fill.fit()
    read = kd(tmp_path, "read", teacher, tmp_path / "cache", ["train.seed=1"])  # another seed: the same views
    assert read.open_caches()["teacher"].filled_share(2) == 1.0
    read.fit()
    assert fill.caches["teacher"].misses == 8 and fill.caches["teacher"].hits == 0  # 2 epochs x 4 batches, computed
    assert read.caches["teacher"].hits == 8 and read.caches["teacher"].misses == 0  # all read
    assert same_student(live, fill)
    again = kd(tmp_path, "again", teacher, tmp_path / "cache")  # the fill run's seed, reading
    again.fit()
    assert same_student(live, again) and again.caches["teacher"].misses == 0
    report = json.loads((tmp_path / "again" / "run" / "report.json").read_text())
    assert report["teacher_cache"]["teacher"]["batches_read"] == 8


@pytest.mark.parametrize("compression", [["networks.teacher.cache_dtype=fp16"], ["networks.teacher.cache_topk=3"]])
def test_a_lossy_cache_trains_the_same_student_in_the_run_that_fills_it(tmp_path, teacher, compression):
    """fp16 or top-k: the filling run trains on the values it stored, as every later run does. In fp32: under
    bf16 (precision auto on a CPU with native bf16) the teacher's logits are bf16 values, which fp16 holds
    exactly, so an fp16 cache would not change the student."""
    compression = [*compression, "train.precision=fp32"]
    fill = kd(tmp_path, "fill", teacher, tmp_path / "cache", compression)
    fill.fit()
    assert fill.caches["teacher"].misses == 8 and fill.caches["teacher"].hits == 0  # it reads nothing back
    read = kd(tmp_path, "read", teacher, tmp_path / "cache", compression)
    read.fit()
    assert read.caches["teacher"].misses == 0 and same_student(fill, read)
    live = kd(tmp_path, "live", teacher, extra=["train.precision=fp32"])
    live.fit()
    assert not same_student(live, read)  # the compression changed what the student learned from


def test_an_interrupted_fill_is_completed_not_trusted(tmp_path, teacher):
    kd(tmp_path, "fill", teacher, tmp_path / "cache").fit()
    filled = np.load(tmp_path / "cache" / "filled.npy", mmap_mode="r+")
    filled[1, :20] = 0  # as if the fill stopped there
    filled.flush()
    del filled
    live = kd(tmp_path, "live", teacher)
    live.fit()
    resumed = kd(tmp_path, "resumed", teacher, tmp_path / "cache")
    resumed.fit()
    assert resumed.caches["teacher"].misses > 0 and same_student(live, resumed)
    assert resumed.caches["teacher"].filled_share(2) == 1.0


def test_a_paused_cached_run_resumes_from_its_checkpoint(tmp_path, teacher):
    """The cache is keyed by the teacher's weights: opened after a checkpoint restored them, not before."""
    live = kd(tmp_path, "live", teacher)
    live.fit()
    first = kd(tmp_path, "paused", teacher, tmp_path / "cache")
    first.fit(stop_after=1)
    resumed = Trainer.from_checkpoint(tmp_path / "paused" / "run", data=synthetic_splits())
    resumed.fit()
    assert same_student(live, resumed) and resumed.caches["teacher"].misses == 4  # epoch 2, computed and written
    evaluated = Trainer.from_checkpoint(tmp_path / "paused" / "run", data=synthetic_splits(), evaluate_only=True)
    assert evaluated.caches == {} and evaluated.evaluate()["student"]["acc"] >= 0  # evaluation opens no cache


class Augmenting(Dataset):
    """A user's Dataset with a random flip of its own (torch's RNG): the cache sees the same flips."""

    def __init__(self, s):
        self.x, self.y = s.train_x, s.train_y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        img = self.x[i]
        return (img.flip(-1) if torch.rand(()) < 0.5 else img), int(self.y[i])


def test_a_users_dataset_is_cached_exactly(tmp_path, teacher):
    s = synthetic_splits()
    data = lambda: DatasetSplits(Augmenting(s), Augmenting(synthetic_splits(n_train=32)), name="aug", num_classes=4,  # noqa: E731
                                 mean=[0.3], std=[0.3])
    over = [f"networks.teacher.checkpoint={teacher}", "data.augment_seed=2", "train.epochs=2", "data.workers=0"]
    runs = {}
    for name, cache in (("live", None), ("fill", tmp_path / "c"), ("read", tmp_path / "c")):
        extra = [f"networks.teacher.cache={cache}"] if cache else []
        runs[name] = Trainer(tiny_config(tmp_path / name, method="kd", overrides=[*over, *extra]), data=data())
        runs[name].fit()
    assert runs["read"].caches["teacher"].hits == 8
    assert same_student(runs["live"], runs["fill"]) and same_student(runs["live"], runs["read"])


@pytest.fixture(scope="module")
def cli_setup(tmp_path_factory):
    """MNIST-format files, a teacher trained on them, and a filled cache, for the CLI's exit codes."""
    root = tmp_path_factory.mktemp("cli")
    (root / "data").mkdir()
    data = make_mnist_dir(root / "data", n_train=48, n_test=16)
    (root / "c.yaml").write_text("{}\n")
    base = ["--config", str(root / "c.yaml"), "data.name=mnist", f"data.dir={data}", "train.batch_size=16", "train.eval_batch_size=64",
            "train.progress=false", "train.precision=fp32", "train.threads=1", "networks.teacher.model=resnet20",
            "networks.student.model=wrn16_1", "train.epochs=2", f"train.out_dir={root}"]
    for seed in (0, 1):
        assert main(["train", *base, "method.name=vanilla", f"train.seed={seed}", f"train.run_name=t{seed}"]) == 0
    cache = root / "cache"
    kd = [*base, "method.name=kd", f"networks.teacher.checkpoint={root / 't0' / 'last.pt'}", "data.augment_seed=0",
          f"networks.teacher.cache={cache}"]
    assert main(["cache", *kd]) == 0
    assert np.load(cache / "filled.npy").all()
    return root, base, kd, cache


@pytest.mark.parametrize("change,named", [
    (lambda r: [f"networks.teacher.checkpoint={r / 't1' / 'last.pt'}"], "another teacher (weights SHA-256)"),
    (lambda r: ["data.limit_train=40"], "another number of training images (48 there, 40 in this run)"),
    (lambda r: ["data.augment_seed=1"], "another augmentation seed (data.augment_seed) (0 there, 1 in this run)"),
    (lambda r: ["data.hflip=false"], "another flip setting (data.hflip)"),
    (lambda r: ["train.epochs=3"], "holds 2 views per image"),
])
def test_a_stale_cache_is_refused_with_exit_2(cli_setup, capsys, change, named):
    root, base, kd, cache = cli_setup
    before = {f.name: f.stat().st_mtime_ns for f in cache.iterdir()}
    code = main(["train", *kd, *change(root), "train.run_name=stale"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and named in err[0] and str(cache) in err[0], err
    assert {f.name: f.stat().st_mtime_ns for f in cache.iterdir()} == before  # nothing written into it


def test_a_truncated_cache_file_is_refused(cli_setup, capsys, tmp_path):
    root, base, kd, cache = cli_setup
    broken = tmp_path / "broken"
    shutil.copytree(cache, broken)
    logits = broken / "logits.npy"
    logits.write_bytes(logits.read_bytes()[:200])
    code = main(["train", *[o for o in kd if not o.startswith("networks.teacher.cache=")],
                 f"networks.teacher.cache={broken}", "train.run_name=broken"])
    err = capsys.readouterr().err
    assert code == 2 and "logits.npy is damaged" in err and "remove" in err


def test_a_learning_network_cannot_be_cached(tmp_path):
    with pytest.raises(C.ConfigError, match=r"networks.teacher.cache.: teacher learns in method 'dml'"):
        Trainer(tiny_config(tmp_path, method="dml", overrides=[f"networks.teacher.cache={tmp_path / 'c'}",
                                                               "data.augment_seed=0"]), data=synthetic_splits())
    with pytest.raises(C.ConfigError, match="needs data.augment_seed"):
        from switokd.train.teacher_cache import check_cache_config
        check_cache_config(C.load_config(None, ["method.name=kd", f"networks.teacher.cache={tmp_path}"]), ["teacher"])


def _rank(rank, world, port, out, teacher, cache, tag):
    rank_env(rank, world, port)
    tr = kd(Path(out), tag, teacher, cache or None, ["train.batch_size=8"])
    tr.fit()
    c = tr.caches.get("teacher")
    torch.save({"student": tr.networks["student"].model.state_dict(), "hits": c.hits if c else 0,
                "misses": c.misses if c else 0}, Path(out) / f"{tag}{rank}.pt")
    tr.dist.close()


def test_two_gloo_processes_read_the_cache_each_its_shard(tmp_path, teacher):
    single = kd(tmp_path, "single", teacher, tmp_path / "cache", ["train.batch_size=16"])
    single.fit()  # fills every entry: one process, global batch 16
    for tag, cache in (("live", ""), ("cached", str(tmp_path / "cache"))):
        mp.spawn(_rank, args=(2, free_port(), str(tmp_path), str(teacher), cache, tag), nprocs=2, join=True)
    live, cached = ([torch.load(tmp_path / f"{tag}{r}.pt", weights_only=False) for r in (0, 1)] for tag in ("live", "cached"))
    assert all(r["hits"] == 8 and r["misses"] == 0 for r in cached)  # each rank read its half of every batch
    for a, b in zip(live, cached):  # reading the cache is running the teacher live, to the bit, on every rank
        assert all(torch.equal(v, b["student"][k]) for k, v in a["student"].items())
    for k, v in cached[0]["student"].items():  # the ranks agree (BatchNorm statistics are synced at epoch ends)
        assert torch.equal(v, cached[1]["student"][k]), k


def test_a_sweep_gives_each_seeds_teacher_a_cache_of_its_own(tmp_path):
    from switokd.race.plan import plan
    specs = plan(None, ["vanilla", "dml", "kd", "dist"], [0, 1], [f"networks.teacher.cache={tmp_path / 'c'}",
                                                                  "data.augment_seed=0"], tmp_path)
    cfgs = {s.name: C.load_config(None, list(s.overrides)) for s in specs}
    for seed in (0, 1):
        assert cfgs[f"kd-seed{seed}"].network("teacher").cache == str(tmp_path / "c" / f"vanilla-seed{seed}")
        assert cfgs[f"dist-seed{seed}"].network("teacher").cache == cfgs[f"kd-seed{seed}"].network("teacher").cache
        assert cfgs[f"vanilla-seed{seed}"].network("teacher").cache is None  # it learns
        assert cfgs[f"dml-seed{seed}"].network("teacher").cache is None
    alone = plan(None, ["kd"], [3], [f"networks.teacher.cache={tmp_path / 'c'}", "data.augment_seed=0"], tmp_path)
    assert [s.name for s in alone] == ["teacher-alone-seed3", "kd-seed3"]
    assert C.load_config(None, list(alone[0].overrides)).network("teacher").cache is None
    assert C.load_config(None, list(alone[1].overrides)).network("teacher").cache == str(tmp_path / "c" / "teacher-alone-seed3")
