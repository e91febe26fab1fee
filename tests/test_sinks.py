"""Loggers as sinks: MLflow's local file store read back with mlflow's own client, a resumed run that writes
no metric twice, a logger of one's own registered in one place, and clear errors."""

import pytest

from switokd import config as C
from switokd.train.trainer import Trainer
from switokd.telemetry import SINKS, register_sink

from conftest import tiny_config

OVER = ["train.loggers=[jsonl, mlflow]", "train.epochs=2", "train.batch_size=8", "train.log_interval=2"]


def history(run_dir):
    """{metric: [steps]} and the params of the run's MLflow run, through mlflow's client."""
    pytest.importorskip("mlflow")
    import os
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=(run_dir / "mlruns").resolve().as_uri())
    exp = client.get_experiment_by_name("switokd")
    (run,) = client.search_runs([exp.experiment_id])
    keys = list(run.data.metrics)
    return {k: [m.step for m in client.get_metric_history(run.info.run_id, k)] for k in keys}, run


def test_mlflow_sink_is_read_back_by_mlflow(tmp_path, splits):
    pytest.importorskip("mlflow")
    tr = Trainer(tiny_config(tmp_path, overrides=OVER), data=splits)
    tr.fit()
    metrics, run = history(tr.run_dir)
    assert metrics["loss/student/loss"] == [2, 4, 6, 8, 10, 12, 14, 16]
    assert metrics["pair/teacher_to_student/gap"] == [2, 4, 6, 8, 10, 12, 14, 16]
    assert metrics["test/student/acc"] == [8, 16]  # at the step each epoch ended on
    assert run.data.params["method.name"] == "switokd" and run.data.params["train.epochs"] == "2"
    assert run.info.status == "FINISHED"


def test_mlflow_resume_writes_no_metric_twice(tmp_path, splits, monkeypatch):
    pytest.importorskip("mlflow")
    from conftest import killed_after_an_older_checkpoint
    ref, cut = killed_after_an_older_checkpoint(tmp_path, splits, monkeypatch, OVER)
    assert history(cut.run_dir)[0]["loss/student/loss"] == [2, 4, 6, 8, 10, 12]
    Trainer.from_checkpoint(cut.run_dir, data=splits).fit()
    got, want = history(cut.run_dir)[0], history(ref.run_dir)[0]
    assert got == want and all(len(set(v)) == len(v) for v in got.values())


def test_a_logger_of_ones_own_lands_in_one_place(tmp_path, splits):
    seen = []

    class Memory:
        def __init__(self, run_dir, resume_at, config_text):
            self.rows = 0 if resume_at is None else resume_at

        def step(self, row, step):
            self.rows += 1
            seen.append(("step", step))

        def epoch(self, row, step):
            seen.append(("epoch", step))

        def tell(self):
            return self.rows

        def close(self):
            seen.append(("close", self.rows))

    if "memory" not in SINKS:
        register_sink("memory")(Memory)
    tr = Trainer(tiny_config(tmp_path, overrides=["train.loggers=[memory]", "train.epochs=1", "train.batch_size=8",
                                                  "train.log_interval=2"]), data=splits)
    tr.fit()
    assert seen == [("step", 2), ("step", 4), ("step", 6), ("step", 8), ("epoch", 8), ("close", 4)]
    assert (tr.run_dir / "steps.jsonl").is_file()  # jsonl is always on: switokd's own tools read it
    with pytest.raises(ValueError, match="already registered"):
        register_sink("memory")(Memory)


def test_an_unknown_logger_is_one_line(tmp_path, splits):
    with pytest.raises(C.ConfigError, match=r"config key 'train.loggers': unknown logger 'mlfow'. Did you mean 'mlflow'"):
        Trainer(tiny_config(tmp_path, overrides=["train.loggers=[mlfow]"]), data=splits)
