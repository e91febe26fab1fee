"""A real training process killed with SIGKILL at random points and once with SIGTERM, resumed each time,
ends bit-identical to an uninterrupted run, with the same rows in its JSONL logs."""
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from switokd.train.checkpoint import load_training_checkpoint
from switokd.runs.files import read_jsonl

from test_checkpoint import strip_timing
from test_data import make_mnist_dir

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def args_for(data, out, name):
    return ["--config", str(ROOT / "configs" / "fashion_mnist.yaml"), "data.val_split=0", "data.name=mnist", f"data.dir={data}",
            "train.epochs=3", "train.batch_size=16", "train.eval_batch_size=64", "train.precision=fp32",
            "train.threads=1", "train.log_interval=1", "train.checkpoint_every=2", "train.progress_interval_s=0",
            "networks.teacher.model=resnet20", "networks.student.model=wrn16_1", "networks.teacher.schedule=cosine",
            "networks.student.schedule=multistep", "networks.student.milestones=[1,2]",
            f"train.out_dir={out}", f"train.run_name={name}"]


def start(argv):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "switokd", "train", *argv], stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def run_until(argv, steps, signum):
    """Start (or resume) the run and send ``signum`` once it has printed ``steps`` progress lines."""
    p = start(argv)
    seen = 0
    lines = []
    for line in p.stderr:
        lines.append(line)
        if line.startswith("epoch ") and " step " in line:
            seen += 1
            if seen == steps:
                p.send_signal(signum)
    p.wait(timeout=120)
    rest = p.stderr.read() if p.stderr else ""
    return p.returncode, "".join(lines) + rest


def test_kill_and_resume_is_bit_exact(tmp_path):
    (tmp_path / "data").mkdir()
    data = make_mnist_dir(tmp_path / "data", n_train=160, n_test=40)  # 10 steps per epoch, 30 in all
    ref = subprocess.run([sys.executable, "-m", "switokd", "train", *args_for(data, tmp_path, "ref")],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert ref.returncode == 0, ref.stderr
    run = tmp_path / "cut"
    rng = random.Random(1234)
    kills = [(rng.randint(3, 9), signal.SIGKILL) for _ in range(3)] + [(rng.randint(2, 6), signal.SIGTERM)]
    log = []
    argv = args_for(data, tmp_path, "cut")
    for i, (steps, signum) in enumerate(kills):
        code, err = run_until(argv, steps, signum)
        ck = load_training_checkpoint(run / "last.pt")
        log.append(f"{signal.Signals(signum).name} after {steps} steps of process {i + 1}: exit {code}, "
                   f"checkpoint at step {ck['step']} (epoch {ck['epoch']}, batch {ck['loader']['batch']})")
        if signum == signal.SIGKILL:
            assert code == -signal.SIGKILL
        else:
            assert code == 143 and f"switokd train --resume {run}" in err, err
        argv = ["--resume", str(run)]
    final = subprocess.run([sys.executable, "-m", "switokd", "train", "--resume", str(run)],
                           capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert final.returncode == 0, final.stderr
    print("\n".join(log))
    a, b = load_training_checkpoint(tmp_path / "ref" / "last.pt"), load_training_checkpoint(run / "last.pt")
    assert a["step"] == b["step"] == 30
    for n in a["networks"]:
        for k, v in a["networks"][n]["model"].items():
            assert torch.equal(v, b["networks"][n]["model"][k]), (n, k)
        sa, sb = a["networks"][n]["optimizer"], b["networks"][n]["optimizer"]
        assert all(torch.equal(sa["state"][i]["momentum_buffer"], sb["state"][i]["momentum_buffer"]) for i in sa["state"])
    for name in ("steps.jsonl", "epochs.jsonl"):
        ra, rb = read_jsonl(tmp_path / "ref" / name), read_jsonl(run / name)
        assert strip_timing(ra) == strip_timing(rb), name
    assert len(read_jsonl(run / "steps.jsonl")) == 30
    import json
    ja, jb = json.loads((tmp_path / "ref" / "report.json").read_text()), json.loads((run / "report.json").read_text())
    assert ja["networks"] == jb["networks"] and ja["expert_share"] == jb["expert_share"]


def test_a_branch_run_killed_mid_epoch_resumes_bit_exactly(tmp_path):
    """PCL on a three-branch ResNet-20: the trunk, the branches, the ensemble head and the temporal mean (an EMA
    stepped after every optimizer step) all come back to the bit after a SIGKILL mid-epoch."""
    (tmp_path / "data").mkdir()
    data = make_mnist_dir(tmp_path / "data", n_train=160, n_test=40)

    def argv(name):
        return [*args_for(data, tmp_path, name)[:-7], "method.name=pcl", "train.epochs=2",
                "networks=[{name: student, model: resnet20, role: student, branches: 3, split: stage3, "
                "schedule: cosine}]", f"train.out_dir={tmp_path}", f"train.run_name={name}"]
    ref = subprocess.run([sys.executable, "-m", "switokd", "train", *argv("ref")], capture_output=True, text=True,
                         cwd=ROOT, timeout=300)
    assert ref.returncode == 0, ref.stderr
    code, err = run_until(argv("cut"), 13, signal.SIGKILL)  # in the second epoch, after its checkpoint at step 12
    assert code == -signal.SIGKILL, err
    ck = load_training_checkpoint(tmp_path / "cut" / "last.pt")
    assert ck["epoch"] == 1 and ck["loader"]["batch"] > 0  # the checkpoint is mid-epoch
    final = subprocess.run([sys.executable, "-m", "switokd", "train", "--resume", str(tmp_path / "cut")],
                           capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert final.returncode == 0, final.stderr
    a, b = load_training_checkpoint(tmp_path / "ref" / "last.pt"), load_training_checkpoint(tmp_path / "cut" / "last.pt")
    assert a["step"] == b["step"] == 20
    sa, sb = a["networks"]["student"]["model"], b["networks"]["student"]["model"]
    assert any(k.startswith("branches.2.") for k in sa) and all(torch.equal(v, sb[k]) for k, v in sa.items())
    ma, mb = a["method_modules"], b["method_modules"]
    flat = lambda d, p="": {f"{p}{k}": v for k, v in d.items()} if all(torch.is_tensor(v) for v in d.values()) else \
        {x: y for k, v in d.items() for x, y in flat(v, f"{p}{k}.").items()}
    fa, fb = flat(ma), flat(mb)
    assert any(".mean." in k for k in fa) and fa.keys() == fb.keys()
    assert all(torch.equal(fa[k], fb[k]) for k in fa)
    assert strip_timing(read_jsonl(tmp_path / "ref" / "epochs.jsonl")) == strip_timing(read_jsonl(tmp_path / "cut" / "epochs.jsonl"))
