"""The training loop. The engineering under it lives in its own modules: precision and optimizers in
``engine``, checkpoint files in ``checkpoint``, signals in ``signals``, progress in ``progress``, metrics in
``telemetry``.

Training state is explicit and in one place (``Trainer.state_dict``): every network and optimizer (the LR
schedule is a function of the step), the grad scaler, the switching totals, RNG states, the epoch, step and
position inside the epoch, the running metric sums, the history and the config. A checkpoint written in the
middle of an epoch continues bit-exactly.
"""
from __future__ import annotations

import contextlib
import json
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import config as C
from .config import yaml_text
from .data import DataSplits
from .data.pipeline import build_run_data
from .checkpoint import (CHECKPOINT_FORMAT, CheckpointError, CheckpointSchedule, extract_state_dict,
                         load_training_checkpoint, load_weights, resolve_resume_path, rng_state, save_atomic,
                         set_rng_state)
from .distributed import Distributed
from .errors import TrainingDiverged
from .log import logger
from .engine import Precision, all_finite, build_optimizer, frozen_batchnorm_stats, resolve_device, set_lr
from .methods import Method, StepOutput, method_from_config
from .models import create_model
from .progress import Progress
from .runinfo import run_header
from .signals import Interrupted, StopSignals
from .runs import files as F
from .telemetry import (RunMeters, RunWriters, check_loggers, epoch_line, nest, recording_state, run_switch_stats,
                        shares, write_run_state)

# Keys a resumed run may change; anything else would make it a different run.
RESUMABLE_OVERRIDES = ("train.epochs", "train.progress", "train.progress_interval_s", "train.log_interval",
                       "train.device", "train.threads", "train.eval_every", "train.checkpoint_every_s",
                       "train.checkpoint_every", "train.tensorboard", "train.loggers", "data.dir")




@dataclass
class Network:
    """One network of the cohort and what trains it (no optimizer if frozen)."""

    cfg: C.NetworkConfig
    model: nn.Module
    optimizer: torch.optim.Optimizer | None

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def frozen(self) -> bool:
        return self.optimizer is None


def build_method(cfg: C.Config) -> Method:
    """The config's method (``switokd.methods.method_from_config``)."""
    return method_from_config(cfg)


class Trainer:
    """Trains a cohort of networks with one method. ``fit()`` runs the epochs.

    Args:
        cfg: the run's ``Config`` (``load_config``).
        data: the data (a ``DataSplits``); None reads ``cfg.data.name`` from ``cfg.data.dir``.
        run_dir: where the run writes (default ``train.out_dir/train.run_name``).
        writable: false writes nothing (evaluation, tests).
        initial_weights: false skips ``networks.NAME.checkpoint`` (the caller restores every network).

    Example:
        >>> from switokd import Trainer, load_config
        >>> cfg = load_config("configs/fashion_mnist.yaml", ["train.epochs=1", "data.limit_train=512"])  # doctest: +SKIP
        >>> report = Trainer(cfg).fit()  # doctest: +SKIP
        >>> report["networks"]["student"]["last_acc"]  # doctest: +SKIP
    """

    def __init__(self, cfg: C.Config, data: DataSplits | None = None, run_dir: str | Path | None = None,
                 *, writable: bool = True, initial_weights: bool = True) -> None:
        """``initial_weights=False``: skip ``networks.NAME.checkpoint`` (the caller restores every network from a
        training checkpoint, as resume and eval do, so a KD teacher's source file is not needed)."""
        self.cfg = cfg
        self.initial_weights = initial_weights
        t = cfg.train
        if t.threads > 0:
            torch.set_num_threads(t.threads)
        # Sinks for the metrics (train.tensorboard is the older spelling of loggers: [..., tensorboard]).
        self.loggers = list(dict.fromkeys([*t.loggers, *(["tensorboard"] if t.tensorboard else [])]))
        check_loggers(self.loggers)
        self.dist = Distributed.from_env()
        self.device = resolve_device(t.device, self.dist.local_rank if self.dist.enabled else None)
        self.dist.init(self.device)
        self.precision = Precision(t.precision, self.device)
        self.method = build_method(cfg)
        self.method.reduce = self.dist.sum  # decisions on the global batch: every rank takes the same mode
        # The splits with noise, few labels and drift applied (the same on every rank), and this rank's loaders.
        run_data = build_run_data(cfg, data, self.device, self.dist.rank, self.dist.world_size,
                                  self.dist.same_on_all_ranks)
        self.data, self.conditions = run_data.data, run_data.conditions
        self.train_loader, self.test_loader = run_data.train_loader, run_data.test_loader
        torch.manual_seed(t.seed)
        self.networks: dict[str, Network] = {n.name: self._build_network(n) for n in cfg.networks}
        self.lr_scale = float(self.dist.world_size) if t.scale_lr else 1.0
        # --- training state (checkpointed) ---
        self.epoch = 0  # epochs completed
        self.step = 0  # optimizer steps taken (batches seen)
        self.batch = 0  # batches done in the current epoch
        self.epoch_time = 0.0  # training seconds of the current epoch so far (across resumes)
        self.epoch_images = 0  # images of the current epoch so far, over all processes
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, dict[str, float]] = {}
        self.best_score = -1.0  # the students' mean accuracy at best.pt
        # Sums behind steps.jsonl and epochs.jsonl, expert/paused counts and the run's switching totals.
        self.meters = RunMeters(self.method.pausable)
        self._log_offsets: dict[str, int] | None = None  # from a resumed checkpoint: where the logs end
        # --- run files and controls (not state) ---
        self._logs = RunWriters()
        self._t0 = 0.0  # when training time last started counting
        self._interval = [0.0, 0]  # training seconds and images (all processes) since the last steps.jsonl row
        self.run_dir = Path(run_dir) if run_dir else None
        self.writable = writable and self.dist.is_main  # logs, reports and checkpoints come from rank 0
        self.stop: StopSignals | None = None
        self.progress = Progress(enabled=t.progress and self.dist.is_main, epochs=t.epochs,
                                 steps_per_epoch=len(self.train_loader), interval_s=t.progress_interval_s)

    # ------------------------------------------------------------------ building

    def _build_network(self, n: C.NetworkConfig) -> Network:
        try:
            model = create_model(n.model, self.data.num_classes, self.data.in_chans, self.data.image_size)
        except KeyError as e:
            raise C.ConfigError(f"config key 'networks.{n.name}.model': {e.args[0]}") from None
        if n.checkpoint and self.initial_weights:
            sd = extract_state_dict(n.checkpoint, n.checkpoint_network or n.name)
            load_weights(model, sd, f"{n.checkpoint} for networks.{n.name} ({n.model})")
        elif n.name in self.method.frozen and self.initial_weights:
            raise C.ConfigError(
                f"method {self.cfg.method.name!r} keeps networks.{n.name} frozen, so it needs trained weights: "
                f"set networks.{n.name}.checkpoint=PATH (for example a vanilla run's last.pt)")
        if self.dist.enabled and (n.sync_bn or self.cfg.train.sync_bn):
            if self.device.type != "cuda":
                raise C.ConfigError(f"config key 'networks.{n.name}.sync_bn' (or train.sync_bn): PyTorch's "
                                    "SyncBatchNorm runs on GPUs only; turn it off for CPU (gloo) training")
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model.to(self.device)
        if self.cfg.train.channels_last:
            model.to(memory_format=torch.channels_last)
        self.dist.broadcast_module(model)  # every rank starts from rank 0's weights
        if n.name in self.method.frozen:
            model.eval().requires_grad_(False)
            return Network(n, model, None)
        return Network(n, model, build_optimizer(model, n))

    # ------------------------------------------------------------------ one step

    def _set_lrs(self) -> None:
        for net in self.networks.values():
            if net.optimizer is not None:
                set_lr(net.optimizer, net.cfg, self.step, len(self.train_loader), self.cfg.train.epochs, self.lr_scale)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = {}
        for name, net in self.networks.items():
            with torch.no_grad() if net.frozen else contextlib.nullcontext():
                logits[name] = net.model(x)
        return logits

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> StepOutput:
        """Forward every network, let the method decide, backward and step only the stepping ones."""
        out: StepOutput | None = None
        with contextlib.ExitStack() as stack:
            if self.cfg.method.freeze_teacher_bn:
                for name in self.method.pausable:
                    stack.enter_context(frozen_batchnorm_stats(
                        self.networks[name].model, lambda n=name: out is not None and n not in out.stepping))
            with self.precision.autocast():
                logits = self.forward(x)
            out = self.method.step(logits, y)
            # Free a paused network's autograd graph now, not after the others' backward.
            del logits
        stepping = [self.networks[n] for n in out.stepping]
        # Networks' losses share no parameters (soft targets are detached): one backward serves all.
        loss = sum(out.losses[n.name]["loss"] for n in stepping)
        if stepping:
            self.precision.backward(loss)
            # Under several processes: mean gradients over the global batch, for the stepping networks only.
            self.dist.reduce_grads((p for n in stepping for p in n.model.parameters()), len(y))
            self.precision.step([n.optimizer for n in stepping])
            for n in stepping:
                n.optimizer.zero_grad(set_to_none=True)
        return out

    # ------------------------------------------------------------------ epochs

    def train_epoch(self) -> dict[str, Any]:
        """Train from the current position to the end of the epoch; returns the epoch's training summary."""
        for net in self.networks.values():
            net.model.train(not net.frozen)
        self.train_loader.set_epoch(self.epoch)
        self.method.set_epoch(self.epoch + 1)  # a loss's warm-up (DKD) reads the 1-based epoch
        self.progress.start_epoch(self.epoch, self.batch)
        schedule = CheckpointSchedule(self.cfg.train.checkpoint_every, self.cfg.train.checkpoint_every_s)
        self._t0 = time.perf_counter()
        for x, y in self.train_loader.batches(start=self.batch):
            start, end = self.train_loader.bounds[self.batch]  # this global batch: every process's images
            self._set_lrs()
            self.meters.record(self.train_step(x, y))
            self.step += 1
            self.batch += 1
            self.epoch_images += end - start
            self._interval[1] += end - start
            if self.step % self.cfg.train.log_interval == 0:
                self._log_steps()
            self.progress.step(end - start, lambda: self.meters.progress(self.networks))
            if self.batch < len(self.train_loader) and self._checkpoint_now(schedule):
                self._tick()
                self.save_checkpoint()
                self._t0 = time.perf_counter()  # the checkpoint's time is not training time
                schedule.written()
                self._raise_if_stopped()
        self.progress.end_epoch()
        self._tick()
        means, counts = self.meters.read_epoch(self.dist.mean)
        self._check_finite(means)
        summary = {"steps": counts.get("steps", 0), "train_time_s": self.epoch_time,
                   "images_per_s": self.epoch_images / max(self.epoch_time, 1e-9),
                   "train": nest(means), "switch": shares(counts)}
        self.batch, self.epoch_time, self.epoch_images = 0, 0.0, 0
        return summary

    def _tick(self) -> None:
        """Count the training time since the last tick (evaluation and checkpoints are not counted)."""
        now = time.perf_counter()
        self.epoch_time += now - self._t0
        self._interval[0] += now - self._t0
        self._t0 = now

    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every network's logits in the run's precision (call in eval mode, under no_grad)."""
        with self.precision.autocast():
            return self.forward(x)

    def _eval_mode(self) -> None:
        for net in self.networks.values():
            net.model.eval()

    @torch.no_grad()
    def evaluate(self) -> dict[str, dict[str, float]]:
        """Top-1 accuracy (%) and loss of every network on the test split (per-class hits in ``class_hits``)."""
        self._eval_mode()
        classes = self.data.num_classes
        hits = {n: torch.zeros(classes, device=self.device) for n in self.networks}
        loss = {n: torch.zeros((), device=self.device) for n in self.networks}
        seen = torch.zeros(classes, device=self.device)
        for x, y in self.test_loader:  # this rank's shard of the test split
            for n, z in self.predict(x).items():
                hits[n] += torch.bincount(y[z.argmax(1) == y], minlength=classes)
                loss[n] += nn.functional.cross_entropy(z.float(), y, reduction="sum")
            seen += torch.bincount(y, minlength=classes)
        names = list(self.networks)
        sums = self.dist.sum(torch.cat([torch.stack([hits[n] for n in names]).flatten(),
                                        torch.stack([loss[n] for n in names]), seen]).float())
        per_class = sums[:len(names) * classes].view(len(names), classes)
        self.class_hits = {n: per_class[i] for i, n in enumerate(names)}, sums[-classes:]
        total = sums[-classes:].sum().item()
        correct, losses = per_class.sum(1).tolist(), sums[len(names) * classes:-classes].tolist()
        return {n: {"acc": 100.0 * correct[i] / total, "loss": losses[i] / total} for i, n in enumerate(names)}

    def fit(self) -> dict[str, Any]:
        """Train to ``train.epochs``, evaluating, logging and checkpointing; write report.json.

        SIGTERM/SIGINT finish the current step, write a checkpoint and raise ``Interrupted``.
        """
        self._open_run()
        if self.cfg.train.progress and self.dist.is_main:
            logger.info("\n".join(run_header(self)))
        with recording_state(self._close_run), StopSignals() as self.stop:
            while self.epoch < self.cfg.train.epochs:
                t0 = time.perf_counter()
                summary = {"epoch": self.epoch + 1, **self.train_epoch(), "lr_end": self._lrs()}
                self.epoch += 1
                self._sync_ranks()
                improved = False
                if self.epoch % self.cfg.train.eval_every == 0 or self.epoch == self.cfg.train.epochs:
                    t_eval = time.perf_counter()
                    summary["test"] = self.evaluate()
                    self.progress.eval_s = time.perf_counter() - t_eval
                    improved = self._update_best(summary["test"])
                if self.conditions.measured:  # memorisation under label noise, per-phase accuracy under drift
                    self._eval_mode()
                    summary.update(self.conditions.diagnostics(self.epoch - 1, self.predict, self.dist.sum,
                                                               self.class_hits if "test" in summary else None))
                summary["epoch_time_s"] = time.perf_counter() - t0
                self.history.append(summary)
                self._logs.epoch(summary, self.step)
                self._print_epoch(summary)
                self.save_checkpoint(best=improved, synced=True)
                self._agree_on_stop()
                self._raise_if_stopped()
        report = self.report()
        if self.writable and self.run_dir is not None:
            (self.run_dir / F.REPORT).write_text(json.dumps(report, indent=2))
        return report

    def _update_best(self, test: dict[str, dict[str, float]]) -> bool:
        """Record each network's best epoch; true when the students' mean accuracy is a new best (best.pt)."""
        for n, r in test.items():
            if r["acc"] > self.best.get(n, {"acc": -1.0})["acc"]:
                self.best[n] = {"acc": r["acc"], "epoch": self.epoch}
        judged = self.method.students or list(test)
        score = sum(test[n]["acc"] for n in judged) / len(judged)
        if score > self.best_score:
            self.best_score = score
            return True
        return False

    def _stop_requested(self) -> bool:
        return self.stop is not None and self.stop.signum is not None

    CONTROL_EVERY = 10  # steps between the ranks' agreement on checkpoints and stops (several processes)

    def _checkpoint_now(self, schedule: CheckpointSchedule) -> bool:
        """Whether to write a checkpoint inside the epoch now: it is due, or a signal asks to stop.

        Under several processes the ranks agree every ``CONTROL_EVERY`` steps (one small collective), so
        that they all stop, or all write, at the same step; a signal one rank received stops them all.
        """
        due, stop = schedule.due(self.step), self._stop_requested()
        if not self.dist.enabled:
            return due or stop
        if self.step % self.CONTROL_EVERY:
            return False
        due, stop = self.dist.any([due, stop])
        if stop:
            self._agree_on_stop(True)
        return due or stop

    def _agree_on_stop(self, stop: bool | None = None) -> None:
        """Several processes: a signal any rank received stops every rank (at an epoch's end, one collective)."""
        if stop is None:
            if not self.dist.enabled:
                return
            (stop,) = self.dist.any([self._stop_requested()])
        if stop and self.stop is not None and self.stop.signum is None:
            self.stop.signum = signal.SIGTERM  # another rank was signalled

    def _raise_if_stopped(self) -> None:
        if self._stop_requested():
            assert self.stop is not None
            where = self.run_dir if self.writable else None
            raise Interrupted(self.stop.signum, f"stopped by {self.stop.name} at epoch {self.epoch + 1}, step {self.step}"
                              + (f"; checkpoint written. Continue with: switokd train --resume {where}" if where else ""))

    # ------------------------------------------------------------------ telemetry

    def _log_steps(self) -> dict[str, Any]:
        means, rest = self.meters.read_interval(self.dist.mean)
        self._check_finite(means)
        self._tick()
        seconds, images = self._interval
        self._interval = [0.0, 0]
        row = {"epoch": self.epoch + 1, "step": self.step, **nest(means), **rest, "lr": self._lrs(),
               "images_per_s": images / max(seconds, 1e-9)}  # all processes' images, over training time
        self._logs.step(row)
        return row

    def _check_finite(self, means: dict[str, float]) -> None:
        bad = [k for k, v in means.items() if k.startswith("loss/") and not math.isfinite(v)]
        if bad:
            raise TrainingDiverged(f"non-finite loss at step {self.step} ({', '.join(bad)}); "
                                   "the last good checkpoint is kept. Lower the learning rate or use fp32.")

    def _lrs(self) -> dict[str, float]:
        return {n: net.optimizer.param_groups[0]["lr"] for n, net in self.networks.items() if net.optimizer}

    def _print_epoch(self, s: dict[str, Any]) -> None:
        if self.cfg.train.progress and self.dist.is_main:
            logger.info(epoch_line(s, self.cfg.train.epochs))

    # ------------------------------------------------------------------ run directory, checkpoints

    def _open_run(self) -> None:
        if not self.writable:
            return
        if self.run_dir is None:
            name = self.cfg.train.run_name or f"{self.cfg.method.name}-{self.cfg.data.name}-{time.strftime('%Y%m%d-%H%M%S')}"
            self.run_dir = Path(self.cfg.train.out_dir) / name
            if (self.run_dir / F.LAST).exists() and self.step == 0:
                raise CheckpointError(
                    f"run directory {self.run_dir} already holds a checkpoint; continue it with "
                    f"`switokd train --resume {self.run_dir}` or choose another train.run_name")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        C.dump_yaml(self.cfg, self.run_dir / F.CONFIG)
        offsets = self._log_offsets or {}
        # On resume, rows written after the checkpoint (before a kill) are dropped: they will be written again.
        self._logs = RunWriters(self.run_dir, offsets if self.step else None, self.loggers, yaml_text(self.cfg))
        write_run_state(self.run_dir, "running", **self._run_facts())

    def _run_facts(self) -> dict[str, int]:
        """Where the run is and its size, for status.json (``switokd status`` reads no checkpoint)."""
        return {"epoch": self.epoch, "step": self.step, "steps_per_epoch": len(self.train_loader),
                "global_batch": self.cfg.train.batch_size * self.dist.world_size}

    def _close_run(self, state: str = "stopped", reason: str = "") -> None:
        self.stop = None
        self._logs.close()
        self._logs = RunWriters()
        if self.writable and self.run_dir is not None and self.run_dir.is_dir():
            write_run_state(self.run_dir, state, reason=reason, **self._run_facts())

    def state_dict(self) -> dict[str, Any]:
        """The whole training state, as tensors and plain containers only (loadable with weights_only=True)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "config": C.to_dict(self.cfg),
            "epoch": self.epoch,
            "step": self.step,
            # Where in the epoch: the loader's order and augmentation are a function of (seed, epoch).
            "loader": {"batch": self.batch, "train_time_s": self.epoch_time, "images": self.epoch_images},
            # No scheduler state: the learning rate is a function of ``step`` and the config.
            "networks": {n: {"model": net.model.state_dict(),
                             "optimizer": net.optimizer.state_dict() if net.optimizer else None}
                         for n, net in self.networks.items()},
            "scaler": self.precision.scaler.state_dict(),
            "switch_totals": dict(self.meters.totals),
            "meters": self.meters.state_dict(),
            "logs": self._logs.tell(),
            "world_size": self.dist.world_size,
            "rng": rng_state(),
            "history": self.history,
            "best": self.best,
            "best_score": self.best_score,
            "data": {"name": self.data.name, "classes": list(self.data.class_names), "mean": list(self.data.mean),
                     "std": list(self.data.std), "in_chans": self.data.in_chans, "image_size": self.data.image_size,
                     "num_classes": self.data.num_classes},
        }

    def load_state_dict(self, ckpt: dict[str, Any], path: str | Path = "checkpoint") -> None:
        """Restore a state from ``state_dict`` (or a v1 checkpoint, which continues at its epoch's end)."""
        if set(ckpt["networks"]) != set(self.networks):
            raise CheckpointError(f"{path}: networks {sorted(ckpt['networks'])} differ from the config's {sorted(self.networks)}")
        try:
            for n, net in self.networks.items():
                s = ckpt["networks"][n]
                load_weights(net.model, s["model"], f"{path}, network {n!r}")
                if net.optimizer is not None:
                    net.optimizer.load_state_dict(s["optimizer"])
            self.precision.scaler.load_state_dict(ckpt["scaler"])
            self.epoch, self.step = ckpt["epoch"], ckpt["step"]
            loader = ckpt.get("loader", {})
            self.batch, self.epoch_time, self.epoch_images = (loader.get("batch", 0), loader.get("train_time_s", 0.0),
                                                             loader.get("images", 0))
            self.meters.load_state_dict(ckpt.get("meters", {}), ckpt["switch_totals"], self.device)
            self._log_offsets = ckpt.get("logs")
            self.history, self.best = list(ckpt["history"]), dict(ckpt["best"])
            self.best_score = ckpt.get("best_score", -1.0)
            set_rng_state(ckpt["rng"])
        except CheckpointError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
            raise CheckpointError(f"{path}: malformed training state ({type(e).__name__}: {e})") from None
        saved_world = ckpt.get("world_size", 1)
        if saved_world != self.dist.world_size:
            if self.batch:
                raise CheckpointError(
                    f"{path} was written by {saved_world} process(es) in the middle of epoch {self.epoch + 1}; "
                    f"resume it with {saved_world}, or resume from a checkpoint written at an epoch's end with any number")
            # At an epoch's end the global batch may change: the step count follows the new batches per epoch.
            self.step = self.epoch * len(self.train_loader)
        if not 0 <= self.batch < max(len(self.train_loader), 1):
            raise CheckpointError(f"{path}: its position (batch {self.batch}) is outside this data set's "
                                  f"{len(self.train_loader)} batches per epoch; data or batch size changed")

    def _sync_ranks(self) -> None:
        """Several processes: average BatchNorm statistics and the running metric sums over ranks, so that every
        rank holds the state rank 0 saves (both are linear in what follows, so training is unchanged)."""
        if not self.dist.enabled:
            return
        for net in self.networks.values():
            self.dist.average_buffers(net.model)
        for meter in (self.meters.step, self.meters.epoch):
            for keys in meter.sums:
                self.dist.mean(meter.sums[keys])

    def save_checkpoint(self, best: bool = False, synced: bool = False) -> Path | None:
        """Write ``last.pt`` (and ``best.pt``) atomically, refusing to replace a good one with non-finite weights.

        Every rank calls it (at the same step); rank 0 writes."""
        if not synced:
            self._sync_ranks()
        # Checked on every rank (their weights are identical), so that all of them stop together.
        bad = [n for n, net in self.networks.items() if not all_finite(net.model)]
        if bad:
            raise TrainingDiverged(f"networks {bad} have non-finite parameters at step {self.step}; "
                                   f"the last good checkpoint in {self.run_dir} is kept")
        if not self.writable:
            return None
        state = self.state_dict()
        path = self.run_dir / F.LAST
        save_atomic(state, path)
        if best:
            save_atomic(state, self.run_dir / F.BEST)
        return path

    @classmethod
    def from_checkpoint(cls, path: str | Path, overrides: list[str] | tuple[str, ...] = (), data: DataSplits | None = None,
                        *, evaluate_only: bool = False) -> "Trainer":
        """Rebuild a run from its checkpoint (a ``last.pt``/``best.pt`` or its run directory).

        Args:
            path: the checkpoint, or the run directory holding ``last.pt``.
            overrides: ``key=value`` changes; to continue training only those in ``RESUMABLE_OVERRIDES``.
            data: the run's data, when it was not a built-in data set.
            evaluate_only: load the networks' weights only, for evaluation: any override is allowed and
                nothing is written (``switokd eval``).

        Example:
            >>> trainer = Trainer.from_checkpoint("runs/demo")  # doctest: +SKIP
            >>> trainer.fit()  # continues to train.epochs  # doctest: +SKIP
        """
        path = resolve_resume_path(path)
        ckpt = load_training_checkpoint(path)
        tree = ckpt["config"]
        for o in overrides:
            key = o.split("=", 1)[0].strip()
            if not evaluate_only and key not in RESUMABLE_OVERRIDES:
                raise C.ConfigError(f"override {key!r} cannot change on --resume (allowed: {', '.join(RESUMABLE_OVERRIDES)})")
            C.apply_override(tree, o)
        try:
            cfg = C.from_dict(tree)
        except C.ConfigError as e:
            raise CheckpointError(f"{path}: its config is not valid here ({e})") from None
        # Every network comes from the checkpoint: a kd teacher's own source file is not needed.
        trainer = cls(cfg, data=data, run_dir=None if evaluate_only else Path(path).parent,
                      writable=not evaluate_only, initial_weights=False)
        if not evaluate_only:
            trainer.load_state_dict(ckpt, path)
            return trainer
        if set(ckpt["networks"]) != set(trainer.networks):
            raise CheckpointError(f"{path}: networks {sorted(ckpt['networks'])} differ from its config's "
                                  f"{sorted(trainer.networks)}")
        for name, net in trainer.networks.items():
            load_weights(net.model, ckpt["networks"][name]["model"], f"{path}, network {name!r}")
        trainer.epoch = ckpt["epoch"]
        return trainer

    def report(self) -> dict[str, Any]:
        """Last-epoch and best-epoch accuracy of each network, and the switching shares of the run."""
        last = next((h["test"] for h in reversed(self.history) if "test" in h), {})
        nets = {n: {"model": net.cfg.model, "role": net.cfg.role,
                    "last_acc": last.get(n, {}).get("acc"),
                    "best_acc": self.best.get(n, {}).get("acc"), "best_epoch": self.best.get(n, {}).get("epoch")}
                for n, net in self.networks.items()}
        train_time = sum(h["train_time_s"] for h in self.history)
        wall_time = sum(h.get("epoch_time_s", h["train_time_s"]) for h in self.history)
        images = sum(h.get("images_per_s", 0.0) * h["train_time_s"] for h in self.history)
        return {"method": C.method_label(self.cfg.method), "dataset": self.cfg.data.name, "epochs": self.epoch,
                "precision": self.precision.name, "networks": nets, **shares(dict(self.meters.totals)),
                "switch_stats": run_switch_stats(self.history), "train_time_s": train_time, "wall_time_s": wall_time,
                "images_per_s": images / max(train_time, 1e-9), "processes": self.dist.world_size,
                **({"conditions": self.conditions.describe()} if self.conditions.lines else {}),
                **({"memorisation": self.history[-1]["memorisation"]}
                   if self.history and "memorisation" in self.history[-1] else {}),
                "run_dir": str(self.run_dir) if self.run_dir else None}
