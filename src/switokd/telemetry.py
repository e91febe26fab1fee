"""Structured metrics: device-side accumulators read at the log interval, the run's switching counts and
summaries, JSONL writers."""
from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from collections import Counter
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import torch
from torch import Tensor

from .runs.files import RUN_STATE, pair_means, read_jsonl  # noqa: F401  (read_jsonl: re-exported)
from .runs import files as F

if TYPE_CHECKING:
    from .methods import StepOutput


class Meter:
    """Running sums of 0-d tensors kept on their device; ``read`` syncs once for all of them.

    ``add`` stacks a step's values into one vector and adds it to the sum for that
    set of keys: two kernels per step however many statistics are logged.
    """

    def __init__(self) -> None:
        self.sums: dict[tuple[str, ...], Tensor] = {}
        self.counts: dict[tuple[str, ...], int] = {}

    def add(self, values: dict[str, Tensor]) -> None:
        if not values:
            return
        keys = tuple(values)
        v = torch.stack([t.detach().float() for t in values.values()])
        if keys in self.sums:
            self.sums[keys] += v
            self.counts[keys] += 1
        else:
            self.sums[keys] = v
            self.counts[keys] = 1

    def read(self, reduce: Callable[[Tensor], Tensor] | None = None) -> dict[str, float]:
        """Means per key over the steps that logged it (one host synchronisation), then reset.

        ``reduce`` (e.g. a mean over processes) is applied to the sums before they are read."""
        means = self.peek(reduce)
        self.sums.clear()
        self.counts.clear()
        return means

    def peek(self, reduce: Callable[[Tensor], Tensor] | None = None) -> dict[str, float]:
        """Means per key so far, without resetting (one host synchronisation)."""
        if not self.sums:
            return {}
        groups = list(self.sums)
        flat = torch.cat([self.sums[k] for k in groups])
        flat = (reduce(flat) if reduce else flat).tolist()
        totals: dict[str, float] = {}
        counts: dict[str, int] = {}
        i = 0
        for keys in groups:
            for k in keys:
                totals[k] = totals.get(k, 0.0) + flat[i]
                counts[k] = counts.get(k, 0) + self.counts[keys]
                i += 1
        return {k: totals[k] / counts[k] for k in totals}

    def state_dict(self) -> list[dict[str, Any]]:
        """The running sums as plain data (for a checkpoint inside an epoch)."""
        return [{"keys": list(k), "sum": self.sums[k].detach().cpu(), "count": self.counts[k]} for k in self.sums]

    def load_state_dict(self, state: list[dict[str, Any]], device: torch.device | str = "cpu") -> None:
        self.sums = {tuple(g["keys"]): g["sum"].to(device) for g in state}
        self.counts = {tuple(g["keys"]): int(g["count"]) for g in state}


def shares(counts: dict[str, int]) -> dict[str, dict[str, float]]:
    """Expert-mode share per pair and paused share per teacher over the counted steps."""
    steps = max(counts.get("steps", 0), 1)
    out: dict[str, dict[str, float]] = {}
    for k, v in counts.items():
        if k != "steps":
            kind, name = k.split("/", 1)
            out.setdefault(f"{kind}_share", {})[name] = v / steps
    return out


class RunMeters:
    """What a run logs of its steps: device-side sums of every loss and switching statistic (since the last
    ``steps.jsonl`` row, and this epoch), host-side counts of expert and paused steps, and the run's totals.

    Recording a step reads nothing on the host; the sums are read at the log interval (one sync).
    """

    def __init__(self, pausable: Iterable[str]) -> None:
        self.pausable = tuple(pausable)
        self.step, self.epoch = Meter(), Meter()
        self.step_counts: Counter[str] = Counter()
        self.epoch_counts: Counter[str] = Counter()
        self.totals: Counter[str] = Counter()  # the whole run's: checkpointed
        self.last_expert: dict[str, bool] = {}

    def record(self, out: "StepOutput") -> None:
        values = {f"loss/{n}/{k}": v for n, terms in out.losses.items() for k, v in terms.items()}
        for p, s in out.switches.items():
            for k in s.LOGGED:
                values[f"pair/{p}/{k}"] = getattr(s, k)
        self.step.add(values)
        self.epoch.add(values)
        self.last_expert = out.expert
        counts = Counter({"steps": 1})
        for p, e in out.expert.items():
            counts[f"expert/{p}"] += int(e)
        for t in self.pausable:
            counts[f"paused/{t}"] += int(t not in out.stepping)
        for c in (self.step_counts, self.epoch_counts, self.totals):
            c.update(counts)

    def read_interval(self, reduce: Callable[[Tensor], Tensor] | None = None) -> tuple[dict[str, float], dict[str, Any]]:
        """The means and shares since the last row, and the last step's modes; resets the interval."""
        means, counts = self.step.read(reduce), dict(self.step_counts)
        self.step_counts.clear()
        return means, {**shares(counts), "mode": {p: ("expert" if e else "learning") for p, e in self.last_expert.items()}}

    def read_epoch(self, reduce: Callable[[Tensor], Tensor] | None = None) -> tuple[dict[str, float], dict[str, int]]:
        """The epoch's means and counts; resets the epoch."""
        means, counts = self.epoch.read(reduce), dict(self.epoch_counts)
        self.epoch_counts.clear()
        return means, counts

    def progress(self, order: Iterable[str]) -> str:
        """Each network's mean loss and each pair's expert share so far this epoch (one host read)."""
        losses = nest(self.epoch.peek()).get("loss", {})
        parts = ["loss " + " ".join(f"{n} {losses[n]['loss']:.3f}" for n in order if "loss" in losses.get(n, {}))]
        steps = max(self.epoch_counts.get("steps", 0), 1)
        parts += [f"expert {k.split('/', 1)[1]} {v / steps:.1%}" for k, v in self.epoch_counts.items()
                  if k.startswith("expert/")]
        return "  ".join(parts)

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step.state_dict(), "epoch": self.epoch.state_dict(), "step_counts": dict(self.step_counts),
                "epoch_counts": dict(self.epoch_counts), "last_expert": dict(self.last_expert)}

    def load_state_dict(self, state: dict[str, Any], totals: dict[str, int], device: torch.device | str = "cpu") -> None:
        """Restore a checkpoint's sums and counts (v1 checkpoints have only the run totals)."""
        self.totals = Counter(totals)
        self.step.load_state_dict(state.get("step", []), device)
        self.epoch.load_state_dict(state.get("epoch", []), device)
        self.step_counts, self.epoch_counts = Counter(state.get("step_counts", {})), Counter(state.get("epoch_counts", {}))
        self.last_expert = dict(state.get("last_expert", {}))


run_switch_stats = pair_means  # each pair's statistics averaged over the run's epochs (runs.files)


def epoch_line(s: dict[str, Any], epochs: int) -> str:
    """The line (two with switches) printed after each epoch. Images/s are every process's images over the
    epoch's training time; the times are the epoch's training and its evaluation and diagnostics."""
    accs = " ".join(f"{n} {r['acc']:.2f}%" for n, r in s.get("test", {}).items())
    expert = " ".join(f"expert[{p}] {v:.1%}" for p, v in s["switch"].get("expert_share", {}).items())
    pairs = " ".join(f"[{p}] G {v['gap']:.3f} delta {v['threshold']:.3f} rho {v['shared_ratio']:.2f} "
                     f"eps {v['epsilon']:.2f}" for p, v in s["train"].get("pair", {}).items())
    other = max(s["epoch_time_s"] - s["train_time_s"], 0.0)
    return (f"epoch {s['epoch']:>3}/{epochs}  {accs}  {expert}  {s['images_per_s']:.0f} img/s  "
            f"{s['train_time_s']:.0f}s training + {other:.0f}s eval"
            + (f"\n           {pairs}" if pairs else ""))


def nest(flat: dict[str, float], sep: str = "/") -> dict[str, Any]:
    """{"loss/student/ce": 1.0} -> {"loss": {"student": {"ce": 1.0}}}."""
    out: dict[str, Any] = {}
    for k, v in flat.items():
        node = out
        *head, last = k.split(sep)
        for h in head:
            node = node.setdefault(h, {})
        node[last] = v
    return out


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


# The epoch summary's parts that TensorBoard shows (the step rows carry the losses and switch statistics).
EPOCH_SCALARS = ("test", "memorisation", "drift", "images_per_s", "train_time_s")


class RunWriters:
    """A run's structured logs, written by rank 0: ``steps.jsonl``, ``epochs.jsonl`` and, with
    ``tensorboard``, TensorBoard events in ``tensorboard/``. ``offsets`` (a resumed run: the checkpoint's
    ``tell()``) drops what was written after the checkpoint; ``run_dir`` None writes nothing."""

    def __init__(self, run_dir: Path | None = None, offsets: dict[str, Any] | None = None, tensorboard: bool = False,
                 config_text: str | None = None) -> None:
        self.tb: TensorBoardWriter | None = None
        if run_dir is None:
            self.steps: JsonlWriter | NullWriter = NullWriter()
            self.epochs: JsonlWriter | NullWriter = NullWriter()
            return
        cut = offsets is not None
        self.steps = JsonlWriter(run_dir / F.STEPS, truncate_to=offsets.get("steps", 0) if cut else None)
        self.epochs = JsonlWriter(run_dir / F.EPOCHS, truncate_to=offsets.get("epochs", 0) if cut else None)
        if tensorboard:
            self.tb = TensorBoardWriter(run_dir / "tensorboard", offsets.get("tensorboard", {}) if cut else None,
                                        None if cut else config_text)

    def step(self, row: dict[str, Any]) -> None:
        self.steps.write(row)
        if self.tb is not None:
            self.tb.scalars({k: v for k, v in row.items() if k not in ("epoch", "step")}, row["step"])

    def epoch(self, row: dict[str, Any], step: int) -> None:
        """An epoch's summary; TensorBoard puts it at the training step the epoch ended on."""
        self.epochs.write(row)
        if self.tb is not None:
            self.tb.scalars({("epoch/" + k if not isinstance(row[k], dict) else k): row[k]
                             for k in EPOCH_SCALARS if k in row}, step)

    def tell(self) -> dict[str, Any]:
        out: dict[str, Any] = {"steps": self.steps.tell(), "epochs": self.epochs.tell()}
        if self.tb is not None:
            out["tensorboard"] = self.tb.tell()
        return out

    def close(self) -> None:
        for w in (self.steps, self.epochs, self.tb):
            if w is not None:
                w.close()




def write_run_state(run_dir: Path, state: str, **info: Any) -> None:
    """``RUN_DIR/status.json``: running (with this process's pid and host), finished, stopped or diverged, for
    ``switokd status``. Written whole and renamed, so a reader never sees half a file."""
    import os
    import socket
    import time

    row = {"state": state, "time": time.time(), "pid": os.getpid(), "host": socket.gethostname(), **info}
    tmp = run_dir / (RUN_STATE + ".tmp")
    tmp.write_text(json.dumps(_clean(row)))
    os.replace(tmp, run_dir / RUN_STATE)


@contextlib.contextmanager
def recording_state(close: Callable[[str, str], None]) -> Iterator[None]:
    """Run the body, then ``close(state, reason)``: finished, or what the exception that ended it says (its
    ``run_state`` attribute, e.g. diverged; stopped otherwise) with its message."""
    state, reason = "stopped", "an error"
    try:
        yield
        state, reason = "finished", ""
    except BaseException as e:
        state, reason = getattr(e, "run_state", "stopped"), str(e) or type(e).__name__
        raise
    finally:
        close(state, reason)


