"""Several processes (gloo on the CPU): shards, one decision on every rank, paused teachers, resume.

Workers are spawned with torch.multiprocessing and run the real Trainer; a torchrun test runs the CLI.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from switokd.train.checkpoint import CheckpointError, load_training_checkpoint
from switokd.data import TensorLoader
from switokd.data.shards import rank_slice, shard_bounds
from switokd.core.switching import decide
from switokd.runs.files import read_jsonl

from conftest import free_port, rank_env, synthetic_splits, tiny_config
from test_data import make_mnist_dir

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")


_env = rank_env


def _state(tr):
    return {n: {k: v.clone() for k, v in net.model.state_dict().items()} for n, net in tr.networks.items()}


def _params(tr):
    """Parameters only: BatchNorm statistics move per rank between the syncs at checkpoints and epoch ends."""
    return {n: {k: v.detach().clone() for k, v in net.model.named_parameters()} for n, net in tr.networks.items()}


def _worker(rank, world, port, out, cfg_overrides, splits, resume):
    """One rank: train, recording every step's mode and local logits, and the weights after every epoch."""
    _env(rank, world, port)
    from switokd.train.trainer import Trainer
    if resume:
        tr = Trainer.from_checkpoint(Path(out) / "run" / "run", ["train.epochs=3"], data=splits)
    else:
        tr = Trainer(tiny_config(Path(out) / "run", overrides=cfg_overrides), data=splits)
    record = {"steps": [], "epochs": []}
    real_step, real_eval = tr.method.step, tr.evaluate_split

    def step(logits, y):
        res = real_step(logits, y)
        record["steps"].append({"step": tr.step, "expert": dict(res.expert), "y": y.clone(),
                                "logits": {n: z.detach().float().clone() for n, z in logits.items()},
                                "gap": {p: float(s.gap) for p, s in res.switches.items()}})
        return res

    def evaluate():
        record["epochs"].append(_state(tr))  # after the epoch's last step and the buffer sync
        return real_eval()

    tr.method.step, tr.evaluate_split = step, evaluate
    report = tr.fit()
    tr.method.step = real_step
    # A step with the teacher paused, then a learning step: no hang, and the teacher untouched by the first.
    tr.train_loader.set_epoch(0)
    batches = iter(tr.train_loader)
    for net in tr.networks.values():
        net.model.train()
    before = {k: v.clone() for k, v in tr.networks["teacher"].model.state_dict().items()}
    tr.method.force_mode = "expert"
    assert tr.train_step(*next(batches)).stepping == ("student",)
    record["paused_same"] = all(torch.equal(before[k], v) for k, v in tr.networks["teacher"].model.named_parameters())
    record["after_paused"] = _params(tr)
    tr.method.force_mode = "learning"
    assert tr.train_step(*next(batches)).stepping == ("teacher", "student")
    record["after_learning"] = _params(tr)
    record["report"] = report
    torch.save(record, Path(out) / f"rank{rank}.pt")
    tr.dist.close()


def spawn(world, out, overrides, splits, resume=False):
    mp.spawn(_worker, args=(world, free_port(), str(out), overrides, splits, resume), nprocs=world, join=True)
    return [torch.load(Path(out) / f"rank{r}.pt", weights_only=False) for r in range(world)]


def same_state(a, b):
    return all(torch.equal(a[n][k], b[n][k]) for n in a for k in a[n])


TWO_PROC = ["train.epochs=2", "train.batch_size=8", "train.log_interval=2"]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    splits = synthetic_splits(n_train=70, n_test=30)  # 70 = 4 global batches of 16 + 6: an uneven last batch
    return out, splits, spawn(2, out, TWO_PROC, splits)


def test_ranks_agree_and_decide_on_the_global_batch(two_ranks):
    out, splits, (r0, r1) = two_ranks
    assert len(r0["steps"]) == len(r1["steps"]) == 2 * 5
    for a, b in zip(r0["steps"], r1["steps"]):
        assert a["expert"] == b["expert"] and a["gap"] == b["gap"]
        # One process deciding on the concatenated batch takes the same mode.
        y = torch.cat([a["y"], b["y"]])
        whole = decide(torch.cat([a["logits"]["teacher"], b["logits"]["teacher"]]),
                       torch.cat([a["logits"]["student"], b["logits"]["student"]]), y)
        assert whole.expert == a["expert"]["teacher->student"]
        assert whole.gap.item() == pytest.approx(a["gap"]["teacher->student"], abs=1e-6)
    assert {len(s["y"]) for s in r0["steps"]} == {8, 3} and {len(s["y"]) for s in r1["steps"]} == {8, 3}
    for ea, eb in zip(r0["epochs"], r1["epochs"]):  # identical weights and buffers after every epoch
        assert same_state(ea, eb)
    assert r0["report"]["networks"] == r1["report"]["networks"]


def test_paused_teacher_under_two_processes(two_ranks):
    _, _, (r0, r1) = two_ranks
    assert r0["paused_same"] and r1["paused_same"]
    assert same_state(r0["after_paused"], r1["after_paused"])
    assert same_state(r0["after_learning"], r1["after_learning"])
    assert not torch.equal(r0["after_paused"]["teacher"]["fc.weight"], r0["after_learning"]["teacher"]["fc.weight"])


def test_rank0_writes_logs_and_resume_from_two_process_checkpoint(two_ranks, tmp_path):
    out, splits, (r0, _) = two_ranks
    run = out / "run" / "run"
    steps = read_jsonl(run / "steps.jsonl")
    assert [s["step"] for s in steps] == [2, 4, 6, 8, 10] and len(read_jsonl(run / "epochs.jsonl")) == 2
    # Throughput is global: every process's images over the training time (70 images an epoch, 35 per rank).
    for e in read_jsonl(run / "epochs.jsonl"):
        assert e["images_per_s"] * e["train_time_s"] == pytest.approx(70)
    assert r0["report"]["processes"] == 2
    assert r0["report"]["images_per_s"] * r0["report"]["train_time_s"] == pytest.approx(140)
    ck = load_training_checkpoint(run / "last.pt")
    assert ck["world_size"] == 2 and ck["step"] == 10
    resumed = spawn(2, out, TWO_PROC, splits, resume=True)
    assert len(read_jsonl(run / "epochs.jsonl")) == 3 and resumed[0]["report"]["epochs"] == 3
    assert same_state(resumed[0]["epochs"][-1], resumed[1]["epochs"][-1])
    # Another process count: fine from an epoch's end (the step count follows the new batches per epoch) ...
    from switokd.train.trainer import Trainer
    one = Trainer.from_checkpoint(run / "last.pt", ["train.epochs=4"], data=splits)
    assert one.epoch == 3 and len(one.train_loader) == 9 and one.step == 3 * 9
    # ... refused in the middle of an epoch.
    mid = torch.load(run / "last.pt", weights_only=True)
    mid["loader"]["batch"] = 2
    torch.save(mid, tmp_path / "mid.pt")
    with pytest.raises(CheckpointError, match="written by 2 process"):
        Trainer.from_checkpoint(tmp_path / "mid.pt", data=splits)


@pytest.fixture(scope="module")
def ddp_and_bucketed(tmp_path_factory):
    """The same 2-process run with the bucketed all-reduce and with train.ddp, on 69 images: the last global
    batch of 5 splits 3 + 2, so each rank's gradient must be weighted by its share."""
    splits = synthetic_splits(n_train=69, n_test=30)
    base = tmp_path_factory.mktemp("bucketed")
    ddp = tmp_path_factory.mktemp("ddp-wrapper")
    # fp32 on every CPU: the bound below is float32 rounding (precision auto is bf16 where the CPU has it).
    args = [*TWO_PROC, "train.precision=fp32"]
    return spawn(2, base, args, splits), spawn(2, ddp, [*args, "train.ddp=true"], splits)


def test_ddp_wrapper_is_the_bucketed_all_reduce(ddp_and_bucketed):
    (b0, b1), (d0, d1) = ddp_and_bucketed
    assert sorted(len(r["steps"][4]["y"]) for r in (d0, d1)) == [2, 3]  # the last batch, uneven
    for a, b in zip(d0["steps"], d1["steps"]):  # one decision on every rank, on the global batch
        assert a["expert"] == b["expert"] and a["gap"] == b["gap"]
    for ea, eb in zip(d0["epochs"], d1["epochs"]):  # the ranks hold the same weights and statistics
        assert same_state(ea, eb)
    assert d0["paused_same"] and same_state(d0["after_learning"], d1["after_learning"])
    # Against the bucketed all-reduce: the same modes throughout. Up to the first uneven batch the steps are
    # the same to the bit (the scale is 1); its 0.8 and 1.2 scales round differently from the bucketed path's
    # weights, by about one float32 ulp, which later steps on 2-image BatchNorm batches amplify.
    assert [s["expert"] for s in d0["steps"]] == [s["expert"] for s in b0["steps"]]
    for sd, sb in zip(d0["steps"][:5], b0["steps"][:5]):
        assert all(torch.equal(sd["logits"][n], sb["logits"][n]) for n in sd["logits"])
    ed, eb = d0["epochs"][0], b0["epochs"][0]  # after the uneven step
    assert max((ed[n][k].float() - eb[n][k].float()).abs().max().item() for n in ed for k in ed[n]) < 1e-6


def with_an_unused_layer(num_classes, in_chans, image_size):
    """A student whose second head never takes part in the loss (a common leftover in users' models)."""
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(in_chans, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                      nn.Flatten())
            self.head, self.unused = nn.Linear(8, num_classes), nn.Linear(8, num_classes)

        def forward(self, x):
            return self.head(self.body(x))
    return Net()


def _unused_worker(rank, world, port, out, splits, ddp):
    _env(rank, world, port)
    from switokd.errors import SwitokdError
    from switokd.train.trainer import Trainer
    over = [*TWO_PROC, f"train.ddp={ddp}", "networks.student.model=test_distributed:with_an_unused_layer"]
    tr = Trainer(tiny_config(Path(out) / f"unused-{ddp}", overrides=over), data=splits)
    try:
        tr.fit()
        result = {"ok": tr.step}
    except SwitokdError as e:
        result = {"error": str(e), "code": e.exit_code}
    torch.save(result, Path(out) / f"unused-{ddp}-{rank}.pt")
    tr.dist.close()


def test_ddp_with_a_parameter_that_gets_no_gradient_is_one_line(tmp_path):
    splits = synthetic_splits(n_train=64, n_test=16)
    for ddp in ("false", "true"):
        mp.spawn(_unused_worker, args=(2, free_port(), str(tmp_path), splits, ddp), nprocs=2, join=True)
    for rank in (0, 1):
        assert torch.load(tmp_path / f"unused-false-{rank}.pt") == {"ok": 8}  # the bucketed path skips it
        r = torch.load(tmp_path / f"unused-true-{rank}.pt")
        assert r["code"] == 2 and r["error"].startswith("config key 'train.ddp': networks.student has parameters")


def _signal_worker(rank, world, port, out, splits, signal_at, resume):
    """Rank 1 alone gets SIGTERM after ``signal_at`` steps; every rank must stop at the same step."""
    import signal as sig
    _env(rank, world, port)
    from switokd.train.signals import Interrupted
    from switokd.train.trainer import Trainer
    over = ["train.epochs=2", "train.batch_size=8", "train.log_interval=1"]
    if resume:
        tr = Trainer.from_checkpoint(Path(out) / "cut" / "run", data=splits)
    else:
        tr = Trainer(tiny_config(Path(out) / ("cut" if signal_at else "ref"), overrides=over), data=splits)
    real = tr.train_step
    count = {"n": 0}

    def step(x, y):
        res = real(x, y)
        count["n"] += 1
        if rank == 1 and count["n"] == signal_at:
            os.kill(os.getpid(), sig.SIGTERM)
        return res

    tr.train_step = step
    code = 0
    try:
        tr.fit()
    except Interrupted as e:
        code = e.exit_code
    torch.save({"code": code, "step": tr.step, "params": _params(tr)}, Path(out) / f"sig{rank}.pt")
    tr.dist.close()


def _run_signal(out, splits, signal_at, resume=False):
    mp.spawn(_signal_worker, args=(2, free_port(), str(out), splits, signal_at, resume), nprocs=2, join=True)
    return [torch.load(Path(out) / f"sig{r}.pt", weights_only=False) for r in range(2)]


def test_a_signal_to_one_rank_stops_all_at_the_same_step_and_resumes(tmp_path):
    splits = synthetic_splits(n_train=224, n_test=30)  # 14 steps per epoch with 2 x 8
    ref = _run_signal(tmp_path, splits, 0)
    cut = _run_signal(tmp_path, splits, 3)
    assert [c["code"] for c in cut] == [143, 143] and cut[0]["step"] == cut[1]["step"] == 10  # agreed at step 10
    ck = load_training_checkpoint(tmp_path / "cut" / "run" / "last.pt")
    assert (ck["step"], ck["loader"]["batch"], ck["world_size"]) == (10, 10, 2)
    done = _run_signal(tmp_path, splits, 0, resume=True)
    assert done[0]["step"] == done[1]["step"] == ref[0]["step"] == 28
    assert same_state(done[0]["params"], ref[0]["params"]) and same_state(done[1]["params"], ref[1]["params"])


@pytest.mark.parametrize("n,world", [(70, 2), (64, 2), (33, 3), (5, 2), (17, 4)])
def test_shards_cover_every_example_once(n, world):
    bounds = shard_bounds(n, 8, world, drop_last=False)
    seen = []
    for s, e in bounds:
        parts = [rank_slice(s, e, r, world) for r in range(world)]
        assert all(p.stop - p.start >= 1 for p in parts)
        seen += [i for p in parts for i in range(p.start, p.stop)]
    assert seen == list(range(n))


def test_loader_shards_are_the_single_process_batch(splits):
    kw = dict(mean=splits.mean, std=splits.std, train=True, crop_padding=1, hflip=True, seed=5)
    one = TensorLoader(splits.train_x, splits.train_y, 16, **kw)
    ranks = [TensorLoader(splits.train_x, splits.train_y, 8, rank=r, world_size=2, **kw) for r in range(2)]
    for loader in (one, *ranks):
        loader.set_epoch(3)
    assert len(one) == len(ranks[0]) == len(ranks[1]) == 4
    for (x, y), (x0, y0), (x1, y1) in zip(one, *ranks):
        assert torch.equal(torch.cat([y0, y1]), y) and torch.equal(torch.cat([x0, x1]), x)


def torchrun(launcher: list[str], tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    """``torchrun LAUNCHER -m switokd train`` on a tiny MNIST-format folder; a crashing rank dumps its stacks."""
    (tmp_path / "data").mkdir()
    data = make_mnist_dir(tmp_path / "data", n_train=64, n_test=30)
    env = dict(os.environ, PYTHONFAULTHANDLER="1")
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", *launcher, "-m", "switokd", "train",
                           "--config", str(ROOT / "configs" / "fashion_mnist.yaml"), "data.val_split=0", "data.name=mnist",
                           f"data.dir={data}", "train.epochs=1", "train.batch_size=8",
                           "networks.teacher.model=resnet20", f"train.out_dir={tmp_path}", "train.run_name=r",
                           *overrides], capture_output=True, text=True, cwd=ROOT, timeout=300, env=env)


@pytest.mark.slow
def test_torchrun_cli(tmp_path):
    """The user's command: torchrun --nproc_per_node=2 -m switokd train ..."""
    r = torchrun(["--nproc_per_node=2", "--master_port", str(free_port())], tmp_path, "train.progress_interval_s=0",
                 "data.label_noise=0.25", "data.drift_phases=2", "train.epochs=2")
    assert r.returncode == 0, r.stderr[-6000:]
    # Every rank built the same noisy labels (each checks with the others before training) and drifting stream.
    assert r.stderr.count("condition  label noise 25% symmetric (split seed 0): 16 of 64 training labels") == 1
    epochs = read_jsonl(tmp_path / "r" / "epochs.jsonl")
    assert epochs[0]["memorisation"]["student"]["images"] == 16
    assert [e["drift"]["phase"] for e in epochs] == [1, 2]
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["epochs"] == 2 and load_training_checkpoint(tmp_path / "r" / "last.pt")["world_size"] == 2
    assert r.stderr.count("device     ") == 1  # the header comes from rank 0 only
    assert "processes  2 (gloo)" in r.stderr and "global batch 16 (8 per process)" in r.stderr
    assert "gradients by a bucketed all-reduce (train.ddp=false)" in r.stderr
    assert r.stdout.count("last-epoch acc") == 2  # the final report once (two networks), from rank 0


@pytest.mark.slow
def test_torchrun_multinode_form(tmp_path):
    """The multi-node command line (--nnodes, c10d rendezvous at --rdzv-endpoint), here as one node of one,
    with torch's DistributedDataParallel (train.ddp)."""
    r = torchrun(["--nnodes=1", "--nproc_per_node=2", "--rdzv-backend=c10d",
                  f"--rdzv-endpoint=127.0.0.1:{free_port()}", "--rdzv-id=switokd-test"], tmp_path,
                 "train.progress_interval_s=0", "train.ddp=true")
    assert r.returncode == 0, r.stderr[-6000:]
    assert "gradients in DistributedDataParallel (train.ddp)" in r.stderr
    assert load_training_checkpoint(tmp_path / "r" / "last.pt")["world_size"] == 2


_EXIT_WORKER = """
import glob, sys, torch
from switokd.train.distributed import Distributed
d = Distributed.from_env()
d.init(torch.device("cpu"))
torch.optim.SGD([torch.nn.Parameter(torch.ones(3))], lr=0.1)  # the first optimizer imports torch._dynamo
t = torch.ones(1000)
for _ in range(20):
    d.sum(t)
if sys.argv[1] == "close":
    d.close()
    print(sorted(open(f).read().strip() for f in glob.glob("/proc/self/task/*/comm")))
"""


def _run_pair(mode: str) -> list[subprocess.CompletedProcess]:
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE="2",
               OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", _EXIT_WORKER, mode], env=dict(env, RANK=str(r), LOCAL_RANK=str(r)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    try:
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:  # a rank left waiting for a peer that died would wait for gloo's 30-minute timeout
            p.kill()
    return [subprocess.CompletedProcess(p.args, p.returncode, *out) for p, out in zip(procs, outs)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads thread names from /proc")
def test_close_stops_gloos_threads():
    """After close no gloo thread is left to outlive the interpreter, although an optimizer (which imports
    torch._dynamo, which then kept the group alive) was made after the group."""
    for r in _run_pair("close"):
        assert r.returncode == 0, r.stderr[-3000:]
        assert "gloo" not in r.stdout, r.stdout


@pytest.mark.slow
def test_workers_that_never_close_exit_cleanly():
    """Without close (an error, a signal, a user's script) the group is destroyed at exit. Before, such a
    process aborted (SIGABRT, 'terminate called without an active exception') in about 4 runs of 10."""
    for _ in range(4):
        for r in _run_pair("no-close"):
            assert r.returncode == 0, r.stderr[-3000:]
