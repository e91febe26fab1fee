"""Where a run's metrics go: sinks. A sink receives every ``steps.jsonl`` row and every epoch summary, says
where it stands (``tell``, saved in the checkpoint) and, on resume, is opened at that position so that it
writes no row twice: resume truncation is part of the protocol.

    jsonl        steps.jsonl and epochs.jsonl (always on: switokd's own tools read them)
    tensorboard  TensorBoard event files in RUN_DIR/tensorboard/   (pip install 'switokd[tensorboard]')
    mlflow       an MLflow file store in RUN_DIR/mlruns/            (pip install 'switokd[mlflow]')

``train.loggers`` picks them. A logger of your own: a class with ``step``, ``epoch``, ``tell`` and ``close``,
and a factory registered with ``@register_sink("name")``.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Protocol

from ..errors import ConfigError
from ..registry import Registry
from ..runs import files as F


class Sink(Protocol):
    """What every logger implements. ``resume_at`` given to its factory is what ``tell`` returned when the
    checkpoint being resumed was written (None for a new run)."""

    def step(self, row: dict[str, Any], step: int) -> None: ...

    def epoch(self, row: dict[str, Any], step: int) -> None: ...

    def tell(self) -> Any: ...

    def close(self) -> None: ...


# name -> factory(run_dir, resume_at, config_text) -> Sink
SINKS: Registry = Registry("logger")


def register_sink(name: str) -> Callable[[Callable[..., Sink]], Callable[..., Sink]]:
    """Register a sink factory ``factory(run_dir: Path, resume_at: Any | None, config_text: str) -> Sink``."""
    return SINKS.register(name)


def _clean(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


class JsonlWriter:
    """Appends one JSON object per line; flushed each write so a killed run keeps its rows.

    ``truncate_to`` (on resume) drops the rows written after the checkpoint being resumed,
    whose size in bytes ``tell`` gave when it was saved: no row is then duplicated or lost.
    """

    def __init__(self, path: str | Path, truncate_to: int | None = None) -> None:
        self.path = Path(path)
        if truncate_to is not None and self.path.is_file() and self.path.stat().st_size > truncate_to:
            with open(self.path, "r+b") as f:
                f.truncate(truncate_to)
        self.f = open(self.path, "a", encoding="utf-8")

    def write(self, row: dict[str, Any]) -> None:
        self.f.write(json.dumps(_clean(row)) + "\n")
        self.f.flush()

    def tell(self) -> int:
        return self.f.tell()

    def close(self) -> None:
        self.f.close()


class NullWriter:
    """A writer that drops every row (runs that write no files)."""

    def write(self, row: dict[str, Any]) -> None:
        pass

    def tell(self) -> int:
        return 0

    def close(self) -> None:
        pass


def flat_scalars(row: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """{"loss": {"student": {"ce": 1.0}}, "mode": {...: "expert"}} -> {"loss/student/ce": 1.0}: the numbers only."""
    out: dict[str, float] = {}
    for k, v in row.items():
        key = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(flat_scalars(v, key))
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[key] = float(v)
    return out


def tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


class TensorBoardWriter:
    """TensorBoard event files in one folder: scalars at each log interval and epoch, and the config as text.

    Like ``JsonlWriter`` on resume: ``truncate_to`` ({file name: size}, what ``tell`` gave when the checkpoint
    was saved) cuts each event file back to that size and deletes event files the checkpoint did not know,
    before a new file is started; so a resumed run continues the same curves with no step written twice.
    """

    def __init__(self, log_dir: str | Path, truncate_to: dict[str, int] | None = None, config_text: str | None = None,
                 flush_secs: int = 30) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.dir = Path(log_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        if truncate_to is not None:
            for f in self.dir.glob("events.out.tfevents.*"):
                size = truncate_to.get(f.name)
                if size is None:
                    f.unlink()
                elif f.stat().st_size > size:
                    with open(f, "r+b") as fh:
                        fh.truncate(size)
        self.writer = SummaryWriter(str(self.dir), flush_secs=flush_secs)
        if config_text is not None:  # indented: TensorBoard renders text as Markdown
            self.writer.add_text("config", "\n".join("    " + line for line in config_text.splitlines()), 0)

    def scalars(self, row: dict[str, Any], step: int) -> None:
        for tag, v in flat_scalars(row).items():
            self.writer.add_scalar(tag, v, step)

    def tell(self) -> dict[str, int]:
        self.writer.flush()
        return {f.name: f.stat().st_size for f in sorted(self.dir.glob("events.out.tfevents.*"))}

    def close(self) -> None:
        self.writer.close()


# The epoch summary's parts that TensorBoard and MLflow show (the step rows carry the losses and statistics).
EPOCH_SCALARS = ("val", "test", "memorisation", "drift", "images_per_s", "train_time_s")


def epoch_scalars(row: dict[str, Any]) -> dict[str, Any]:
    return {("epoch/" + k if not isinstance(row[k], dict) else k): row[k] for k in EPOCH_SCALARS if k in row}


class JsonlSink:
    """``steps.jsonl`` and ``epochs.jsonl``; ``tell`` is their sizes in bytes."""

    def __init__(self, run_dir: Path, resume_at: dict[str, int] | None = None) -> None:
        cut = resume_at is not None
        self.steps = JsonlWriter(run_dir / F.STEPS, truncate_to=resume_at.get("steps", 0) if cut else None)
        self.epochs = JsonlWriter(run_dir / F.EPOCHS, truncate_to=resume_at.get("epochs", 0) if cut else None)

    def step(self, row: dict[str, Any], step: int) -> None:
        self.steps.write(row)

    def epoch(self, row: dict[str, Any], step: int) -> None:
        self.epochs.write(row)

    def tell(self) -> dict[str, int]:
        return {"steps": self.steps.tell(), "epochs": self.epochs.tell()}

    def close(self) -> None:
        self.steps.close()
        self.epochs.close()


class TensorBoardSink:
    """Scalars of each step row and epoch summary at the training step; the config as text."""

    def __init__(self, run_dir: Path, resume_at: dict[str, int] | None, config_text: str) -> None:
        self.tb = TensorBoardWriter(run_dir / F.TENSORBOARD, resume_at, None if resume_at is not None else config_text)

    def step(self, row: dict[str, Any], step: int) -> None:
        self.tb.scalars({k: v for k, v in row.items() if k not in ("epoch", "step")}, step)

    def epoch(self, row: dict[str, Any], step: int) -> None:
        self.tb.scalars(epoch_scalars(row), step)

    def tell(self) -> dict[str, int]:
        return self.tb.tell()

    def close(self) -> None:
        self.tb.close()


def mlflow_available() -> bool:
    try:
        import mlflow  # noqa: F401
    except ImportError:
        return False
    return True


class MlflowSink:
    """An MLflow run in a local file store, ``RUN_DIR/mlruns`` (offline; ``mlflow ui --backend-store-uri
    RUN_DIR/mlruns`` shows it): the config's keys as params, every scalar as a metric at the training step.

    The file store keeps each metric as a text file of lines; ``tell`` is the run id and those files' sizes,
    and a resumed run cuts each file back to its size, as the JSONL logs are cut. (MLflow 3 keeps the file
    store in maintenance mode; this sink opts into it for its own folder only.)
    """

    def __init__(self, run_dir: Path, resume_at: dict[str, Any] | None, config_text: str) -> None:
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.tracking import MlflowClient

        self.root = (run_dir / "mlruns").resolve()
        self.client = MlflowClient(tracking_uri=self.root.as_uri())
        if resume_at is not None and resume_at.get("run_id"):
            self.run_id = resume_at["run_id"]
            self._truncate(resume_at.get("files", {}))
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            exp = self.client.get_experiment_by_name("switokd")
            exp_id = exp.experiment_id if exp else self.client.create_experiment("switokd")
            self.run_id = self.client.create_run(exp_id, run_name=run_dir.name).info.run_id
            params = _config_params(config_text)
            for k, v in params.items():
                self.client.log_param(self.run_id, k, v)

    def _metric_dir(self) -> Path:
        run = self.client.get_run(self.run_id)
        return self.root / run.info.experiment_id / self.run_id / "metrics"

    def _truncate(self, sizes: dict[str, int]) -> None:
        mdir = self._metric_dir()
        if not mdir.is_dir():
            return
        for f in [p for p in mdir.rglob("*") if p.is_file()]:
            size = sizes.get(f.relative_to(mdir).as_posix())
            if size is None:
                f.unlink()
            elif f.stat().st_size > size:
                with open(f, "r+b") as fh:
                    fh.truncate(size)

    def _log(self, scalars: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric
        import time

        now = int(time.time() * 1000)
        metrics = [Metric(_mlflow_key(k), v, now, step) for k, v in scalars.items()]
        for i in range(0, len(metrics), 1000):  # MLflow's batch limit
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])

    def step(self, row: dict[str, Any], step: int) -> None:
        self._log(flat_scalars({k: v for k, v in row.items() if k not in ("epoch", "step")}), step)

    def epoch(self, row: dict[str, Any], step: int) -> None:
        self._log(flat_scalars(epoch_scalars(row)), step)

    def tell(self) -> dict[str, Any]:
        mdir = self._metric_dir()
        files = {p.relative_to(mdir).as_posix(): p.stat().st_size for p in sorted(mdir.rglob("*")) if p.is_file()} \
            if mdir.is_dir() else {}
        return {"run_id": self.run_id, "files": files}

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def _mlflow_key(key: str) -> str:
    # MLflow allows letters, digits, _ - . space : and /; a pair's "->" becomes "_to_".
    return key.replace("->", "_to_")


def _config_params(config_text: str) -> dict[str, str]:
    import yaml

    tree = yaml.safe_load(config_text) or {}
    out: dict[str, str] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        elif isinstance(node, list) and node and all(isinstance(n, dict) and "name" in n for n in node):
            for n in node:
                walk({k: v for k, v in n.items() if k != "name"}, f"{prefix}.{n['name']}")
        else:
            out[prefix] = json.dumps(node) if not isinstance(node, str) else node
    walk(tree, "")
    return {k: v[:6000] for k, v in out.items()}


@register_sink("jsonl")
def _jsonl(run_dir: Path, resume_at: Any, config_text: str) -> Sink:
    return JsonlSink(run_dir, resume_at)


@register_sink("tensorboard")
def _tensorboard(run_dir: Path, resume_at: Any, config_text: str) -> Sink:
    return TensorBoardSink(run_dir, resume_at, config_text)


@register_sink("mlflow")
def _mlflow(run_dir: Path, resume_at: Any, config_text: str) -> Sink:
    return MlflowSink(run_dir, resume_at, config_text)


def check_loggers(names: list[str]) -> None:
    """Fail before a run starts when a logger is unknown or its package is missing (one line naming it)."""
    for n in names:
        try:
            SINKS.get(n)
        except KeyError as e:
            raise ConfigError(f"config key 'train.loggers': {e.args[0]}") from None
    if "tensorboard" in names and not tensorboard_available():
        raise ConfigError("config key 'train.loggers': tensorboard needs the tensorboard package; "
                          "pip install 'switokd[tensorboard]' (or drop tensorboard from train.loggers)")
    if "mlflow" in names and not mlflow_available():
        raise ConfigError("config key 'train.loggers': mlflow needs the mlflow package; pip install 'switokd[mlflow]'")


class RunWriters:
    """A run's sinks, written by rank 0. ``offsets`` (a resumed run: the checkpoint's ``tell()``) opens each at
    its position; ``run_dir`` None writes nothing. ``tell`` keeps the JSONL sizes at the top level and every
    other sink's position under its name (the checkpoint format of earlier versions)."""

    def __init__(self, run_dir: Path | None = None, offsets: dict[str, Any] | None = None,
                 loggers: list[str] | tuple[str, ...] = ("jsonl",), config_text: str = "") -> None:
        self.sinks: dict[str, Sink] = {}
        if run_dir is None:
            return
        check_loggers(list(loggers))  # the one place that knows each sink's package
        cut = offsets is not None
        for name in dict.fromkeys(["jsonl", *loggers]):  # jsonl first and always: switokd's tools read it
            at = (offsets if name == "jsonl" else offsets.get(name, {})) if cut else None
            self.sinks[name] = SINKS.get(name)(run_dir, at, config_text)

    def step(self, row: dict[str, Any]) -> None:
        for s in self.sinks.values():
            s.step(row, row["step"])

    def epoch(self, row: dict[str, Any], step: int) -> None:
        """An epoch's summary; the sinks put it at the training step the epoch ended on."""
        for s in self.sinks.values():
            s.epoch(row, step)

    def tell(self) -> dict[str, Any]:
        out: dict[str, Any] = {"steps": 0, "epochs": 0}
        for name, s in self.sinks.items():
            if name == "jsonl":
                out.update(s.tell())
            else:
                out[name] = s.tell()
        return out

    def close(self) -> None:
        for s in self.sinks.values():
            s.close()
