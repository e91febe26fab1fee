"""switokd status: a finished, a stopped, a diverged and a running run, a copied one, and what is not a run."""
import json
import os

import pytest

from switokd.cli import main
from switokd.runs.status import run_status, status_lines
from switokd.errors import TrainingDiverged
from switokd.runs.files import RUN_STATE
from switokd.telemetry import write_run_state
from switokd.train.trainer import Trainer

from conftest import tiny_config


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    from conftest import synthetic_splits
    root = tmp_path_factory.mktemp("status")
    tr = Trainer(tiny_config(root, overrides=["train.epochs=2", "train.log_interval=1"]), data=synthetic_splits())
    tr.fit()
    return tr.run_dir


def test_finished_run(finished, capsys):
    s = run_status(finished)
    assert s["state"] == "finished" and (s["epoch"], s["step"], s["epochs"]) == (2, 8, 2)
    assert s["test"]["epoch"] == 2 and set(s["test"]) == {"epoch", "teacher", "student"}
    pair = s["pairs"]["teacher->student"]
    assert set(pair) == {"gap", "threshold", "epsilon", "shared_ratio", "expert_share"}
    assert s["last.pt"]["path"].endswith("last.pt") and s["images_per_s"] > 0
    assert main(["status", str(finished)]) == 0
    out = capsys.readouterr().out
    assert "state      finished" in out and "epoch 2/2 done, step 8" in out and "img/s (all processes" in out
    assert "switch     teacher->student: G " in out and "checkpoint last.pt (" in out
    assert "ETA" not in out


def test_run_shorter_than_the_log_interval(finished, tmp_path):
    """No step row (fewer steps than train.log_interval): the switch line comes from the epochs log."""
    import shutil
    run = tmp_path / "short"
    shutil.copytree(finished, run)
    (run / "steps.jsonl").write_text("")
    epochs = [json.loads(line) for line in (run / "epochs.jsonl").read_text().splitlines()]
    pair = run_status(run)["pairs"]["teacher->student"]
    assert pair["gap"] == epochs[-1]["train"]["pair"]["teacher->student"]["gap"]
    shares = [e["switch"]["expert_share"]["teacher->student"] for e in epochs]
    assert pair["expert_share"] == pytest.approx(sum(shares) / len(shares))  # equal steps per epoch
    assert any(line.startswith("  switch     teacher->student: G ") for line in status_lines(run_status(run)))


def test_stopped_and_diverged_runs(tmp_path, splits, monkeypatch):
    from test_checkpoint import _interrupt_after
    from switokd.train.signals import Interrupted
    _interrupt_after(monkeypatch, 3)
    tr = Trainer(tiny_config(tmp_path / "stop", overrides=["train.epochs=2", "train.log_interval=1"]), data=splits)
    with pytest.raises(Interrupted):
        tr.fit()
    monkeypatch.undo()
    s = run_status(tr.run_dir)
    assert s["state"].startswith("stopped: stopped by SIGTERM at epoch 1, step 3") and s["step"] == 3
    assert "test" not in s and s["epoch"] == 1 and not s["epoch_done"]  # no epoch finished yet
    # ETA from the last logged images/s and status.json: 4 steps per epoch, global batch 16
    assert s["eta_s"] == pytest.approx((2 * 4 - 3) * 16 / s["images_per_s"])
    assert "left if resumed" in "\n".join(status_lines(s))
    assert "last.pt" in s
    bad = Trainer(tiny_config(tmp_path / "nan", overrides=["networks.student.lr=1e30", "train.log_interval=1"]),
                  data=splits)
    with pytest.raises(TrainingDiverged):
        bad.fit()
    assert run_status(bad.run_dir)["state"].startswith("diverged: non-finite loss")


def test_running_run_here_elsewhere_and_gone(finished, tmp_path):
    run = tmp_path / "copy"
    run.mkdir()
    for name in ("config.yaml", "steps.jsonl", "epochs.jsonl"):
        (run / name).write_bytes((finished / name).read_bytes())
    (run / "epochs.jsonl").write_text((finished / "epochs.jsonl").read_text().splitlines()[0] + "\n{\"epo")
    write_run_state(run, "running", epoch=1, step=4)  # this process: alive
    s = run_status(run)
    assert s["state"].startswith("running, last log written") and s["epoch"] == 2 and s["step"] == 8
    assert s["eta_s"] is not None and s["eta_s"] >= 0  # a half-written last line is left out
    assert "ETA" in "\n".join(status_lines(s)) and "checkpoint none yet" in "\n".join(status_lines(s))
    state = json.loads((run / RUN_STATE).read_text())
    (run / RUN_STATE).write_text(json.dumps({**state, "host": "gpu-node-7"}))
    assert run_status(run)["state"].startswith("running on gpu-node-7 (as this copy says")
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    (run / RUN_STATE).write_text(json.dumps({**state, "pid": pid}))
    assert run_status(run)["state"].startswith(f"stopped (its process {pid} is gone")
    (run / RUN_STATE).unlink()
    assert run_status(run)["state"].startswith("unknown (no status.json")


def test_not_a_run_is_one_line_exit_2(tmp_path, capsys):
    assert main(["status", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a switokd run directory (no config.yaml)" in err
    assert main(["status", str(tmp_path / "nowhere")]) == 2
    assert "is not a run directory" in capsys.readouterr().err
