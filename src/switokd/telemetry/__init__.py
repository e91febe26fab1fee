"""Metrics: device-side meters (``meters``), where they go (``sinks``: JSONL, TensorBoard, MLflow, yours), the
lines a run prints (``console``) and the run's status file (``rundir_state``)."""
from .console import epoch_line  # noqa: F401
from .meters import Meter, RunMeters, nest, shares  # noqa: F401
from .rundir_state import recording_state, write_run_state  # noqa: F401
from .sinks import (EPOCH_SCALARS, SINKS, JsonlSink, JsonlWriter, MlflowSink, NullWriter, RunWriters, Sink,  # noqa: F401
                    TensorBoardSink, TensorBoardWriter, check_loggers, flat_scalars, mlflow_available,
                    register_sink, tensorboard_available)
