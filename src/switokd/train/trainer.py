"""The training loop, and only the loop: build the cohort, step, run the epochs, evaluate. The engineering
under it has its own modules: the networks in ``cohort``, precision and optimizers in ``engine``, the whole
training state in ``train_state``, the run directory's files in ``rundir``, the sinks in ``telemetry``,
stops in ``signals``, several processes in ``distributed``, epoch-end extensions in ``hooks``.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from .. import config as C
from . import train_state
from .checkpoint import CheckpointSchedule
from .cohort import Network, build_network, ddp_errors
from ..data import DataSplits
from ..data.pipeline import build_run_data
from .distributed import Distributed
from ..errors import ConfigError, TrainingDiverged
from .engine import Precision, all_finite, check_finite_losses, frozen_batchnorm_stats, resolve_device, set_lr
from .features import setup_features
from .evaluation import evaluate, refreshed_batchnorm
from .hooks import ChanceWatch, ConditionsDiagnostics, EpochHook, Evaluation
from ..log import logger
from ..methods import StepOutput, method_from_config
from ..methods.base import INDEX
from .progress import Progress, TrainingClock
from .rundir import RunDirectory
from .runinfo import run_header
from .signals import StopControl, StopSignals
from ..telemetry import RunMeters, check_loggers, epoch_line, nest, recording_state, shares

class Trainer:
    """Trains a cohort of networks with one method. ``fit()`` runs the epochs.

    Args:
        cfg: the run's ``Config`` (``load_config``).
        data: the data (a ``DataSplits``); None reads ``cfg.data.name`` from ``cfg.data.dir``.
        run_dir: where the run writes (default ``train.out_dir/train.run_name``).
        writable: false writes nothing (evaluation, tests).
        initial_weights: false skips ``networks.NAME.checkpoint`` (the caller restores every network from a
            training checkpoint, as resume and eval do, so a KD teacher's source file is not needed).
        hooks: epoch-end hooks (``switokd.train.hooks``), after the run conditions' own.

    Example:
        >>> from switokd import Trainer, load_config
        >>> cfg = load_config("configs/fashion_mnist.yaml", ["train.epochs=1", "data.limit_train=512"])  # doctest: +SKIP
        >>> report = Trainer(cfg).fit()  # doctest: +SKIP
        >>> report["networks"]["student"]["last_acc"]  # doctest: +SKIP
    """

    def __init__(self, cfg: C.Config, data: DataSplits | None = None, run_dir: str | Path | None = None,
                 *, writable: bool = True, initial_weights: bool = True, hooks: Sequence[EpochHook] = ()) -> None:
        self.cfg = C.resolve_lrs(cfg)  # a Config built by hand may leave an lr to its family's reference
        t = cfg.train
        if t.threads > 0:
            torch.set_num_threads(t.threads)
        self.loggers = list(dict.fromkeys(t.loggers))  # the metrics' sinks
        check_loggers(self.loggers)
        self.dist = Distributed.from_env()
        self.device = resolve_device(t.device, self.dist.local_rank if self.dist.enabled else None)
        self.dist.init(self.device)
        self.precision = Precision(t.precision, self.device)
        self.method = method_from_config(cfg)
        self.method.reduce = self.dist.sum  # decisions on the global batch: every rank takes the same mode
        self.method.ignore_index = None  # the data's labels are checked when read: no per-step mask or sync
        # The splits with noise, few labels and drift applied (the same on every rank), and this rank's loaders.
        run_data = build_run_data(cfg, data, self.device, self.dist.rank, self.dist.world_size,
                                  self.dist.same_on_all_ranks)
        self.data, self.conditions = run_data.data, run_data.conditions
        self.train_loader, self.test_loader = run_data.train_loader, run_data.test_loader
        self.validation, self.val_loader = run_data.validation, run_data.val_loader  # None without data.val_split
        self.workers_note = run_data.workers_note
        torch.manual_seed(t.seed)
        self.networks: dict[str, Network] = {
            n.name: build_network(n, cfg, self.data, frozen=n.name in self.method.frozen, device=self.device,
                                  dist=self.dist, initial_weights=initial_weights) for n in cfg.networks}
        # The features the method reads, by module path, and the modules it owns, sized by a dry forward.
        self.taps = setup_features(self.method, self.networks, self.data, self.device, self.precision)
        views = getattr(self.method, "train_views", 1)  # PCL: one augmented view of each image per branch
        if views > 1:
            if not hasattr(self.train_loader, "views"):
                raise ConfigError(f"method {cfg.method.name!r} gives each branch its own augmented view, which the "
                                  "streaming loader does not draw: set data.in_memory=true, or "
                                  "method.options.views=false")
            self.train_loader.views = views
            from ..models.branches import BranchNet
            for net in self.networks.values():
                inner = getattr(net.model, "module", net.model)
                if isinstance(inner, BranchNet):
                    inner.per_view = True
        # Frozen teachers' logits computed once (networks.NAME.cache): checked now, opened by fit() (or
        # open_caches()), once a checkpoint's weights are in place, since the cache is keyed by them.
        from .teacher_cache import check_cache_config
        check_cache_config(self.cfg, self.method.frozen)
        from .teacher_cache import check_cache_data
        check_cache_data(self.cfg, self.data)
        self.caches: dict[str, Any] = {}
        self._batch_images: torch.Tensor | None = None  # the images of the current batch, for the caches
        self.lr_scale = float(self.dist.world_size) if t.scale_lr else 1.0
        # --- training state (checkpointed: train_state) ---
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
        self.log_offsets: dict[str, Any] | None = None  # from a resumed checkpoint: where the sinks stood
        # --- run files and controls (not state) ---
        self.rundir = RunDirectory(run_dir, writable and self.dist.is_main)  # rank 0 writes
        self.stop = StopControl(self.dist)
        self.hooks: list[EpochHook] = [*([ConditionsDiagnostics(self.conditions)] if self.conditions.measured else []),
                                       ChanceWatch(), *hooks]
        self.clock = TrainingClock()  # training time, apart from evaluation and checkpoints
        self.progress = Progress(enabled=t.progress and self.dist.is_main, epochs=t.epochs,
                                 steps_per_epoch=len(self.train_loader), interval_s=t.progress_interval_s)

    def open_caches(self) -> dict[str, Any]:
        """Open (or create) every ``networks.NAME.cache``, checked against this run's teacher weights, data and
        augmentation (``teacher_cache.TeacherCache.open``); ``fit`` calls it."""
        from .teacher_cache import TeacherCache, cache_views, run_identity
        for name, net in self.networks.items():
            n = net.cfg
            if n.cache and name not in self.caches:
                self.caches[name] = TeacherCache.open(
                    n.cache, f"networks.{name}.cache", run_identity(self.cfg, self.data, net, self.precision.name),
                    cache_views(self.cfg, self.data), len(self.data.train_y), self.data.num_classes, n.cache_dtype,
                    n.cache_topk)
        return self.caches

    @property
    def run_dir(self) -> Path | None:
        return self.rundir.path

    @property
    def writable(self) -> bool:
        return self.rundir.writable

    # ------------------------------------------------------------------ one step

    def _set_lrs(self) -> None:
        for net in self.networks.values():
            if net.optimizer is not None:
                set_lr(net.optimizer, net.cfg, self.step, len(self.train_loader), self.cfg.train.epochs, self.lr_scale)

    def forward(self, x: torch.Tensor, training: bool = False) -> dict[str, torch.Tensor]:
        logits = {}
        for name, net in self.networks.items():
            def run(net=net, name=name) -> torch.Tensor:
                with torch.no_grad() if net.frozen else contextlib.nullcontext(), ddp_errors(name, net.ddp):
                    return (net.train_module if training else net.model)(x)
            cache = self.caches.get(name) if training and self._batch_images is not None else None
            logits[name] = (cache.through(self.epoch, self._batch_images, run, self.device, self.precision.logits_dtype)
                            if cache is not None else run())
        return logits

    def pop_features(self) -> dict[str, Any]:
        """The features the last forward recorded (network -> path -> tensor; ``INDEX``: the batch's images'
        indices in the training set); the taps keep none of them."""
        try:
            return {**{n: tap.pop() for n, tap in self.taps.items()}, INDEX: self._batch_images}
        except ValueError as e:  # a train-mode-only in-place op the eval-mode dry forward did not meet
            raise ConfigError(str(e)) from None

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> StepOutput:
        """Forward every network, let the method decide, backward and step only the stepping ones."""
        out: StepOutput | None = None
        with contextlib.ExitStack() as stack:
            if self.method.freeze_paused_bn:
                for name in self.method.pausable:
                    stack.enter_context(frozen_batchnorm_stats(
                        self.networks[name].model, lambda n=name: out is not None and n not in out.stepping))
            with self.precision.autocast():
                logits = self.forward(x, training=True)
            out = self.method.step(logits, y, self.pop_features()) if self.taps else self.method.step(logits, y)
            # Free a paused network's autograd graph now, not after the others' backward.
            del logits
        stepping = [self.networks[n] for n in out.stepping]
        # Networks' losses share no parameters (soft targets are detached): one backward serves all.
        loss = sum(out.losses[n.name]["loss"] for n in stepping)
        if stepping:
            in_ddp = stepping[0].ddp is not None  # train.ddp under several processes: every learning network
            if in_ddp:
                # DDP averages the ranks' gradients; scaled by n_r * W / N, they average to the global mean
                # (N from one 1-element all-reduce: an uneven last batch is weighted as the bucketed path does).
                total = self.dist.sum(torch.tensor(float(len(y)), device=self.device))  # no host read
                loss = loss * (len(y) * self.dist.world_size / total)
            self.precision.backward(loss)
            owned = self.method.modules  # connectors and the like: stepped with the network they serve
            if not in_ddp:
                # Mean gradients over the global batch, for the stepping networks only (no-op in one process).
                self.dist.reduce_grads((p for n in stepping for m in (n.model, owned.get(n.name)) if m is not None
                                        for p in m.parameters()), len(y))
            else:
                self.dist.average_grads(p for n in stepping if n.name in owned for p in owned[n.name].parameters())
            self.precision.step([n.optimizer for n in stepping])
            for n in stepping:
                n.optimizer.zero_grad(set_to_none=True)
            self.method.after_step({n.name: n.model for n in stepping}, self.step + 1)
        return out

    # ------------------------------------------------------------------ epochs

    def train_epoch(self) -> dict[str, Any]:
        """Train from the current position to the end of the epoch; returns the epoch's training summary."""
        for name, net in self.networks.items():
            net.model.train(not net.frozen or name in self.method.train_mode_teachers)
        self.train_loader.set_epoch(self.epoch)
        self.method.set_epoch(self.epoch + 1)  # a loss's warm-up (DKD) reads the 1-based epoch
        self.progress.start_epoch(self.epoch, self.batch)
        schedule = CheckpointSchedule(self.cfg.train.checkpoint_every, self.cfg.train.checkpoint_every_s)
        self.clock.start()
        for x, y in self.train_loader.batches(start=self.batch):
            start, end = self.train_loader.bounds[self.batch]  # this global batch: every process's images
            if self.caches or self.taps:  # the caches' keys, and the features' INDEX (CRD's memory)
                self._batch_images = self.train_loader.image_indices(self.batch)
            self._set_lrs()
            self.meters.record(self.train_step(x, y))
            self.step += 1
            self.batch += 1
            self.epoch_images += end - start
            self.clock.images(end - start)
            if self.step % self.cfg.train.log_interval == 0:
                self._log_steps()
            self.progress.step(end - start, lambda: self.meters.progress(self.networks))
            if self.batch < len(self.train_loader) and self.stop.checkpoint_now(schedule.due(self.step), self.step):
                self.epoch_time += self.clock.tick()
                self.save_checkpoint()
                self.clock.start()  # the checkpoint's time is not training time
                schedule.written()
                self.stop.raise_if_stopped(self.epoch, self.step, self.run_dir if self.writable else None)
        self.progress.end_epoch()
        self._batch_images = None
        for cache in self.caches.values():
            cache.flush()
        self.epoch_time += self.clock.tick()
        means, counts = self.meters.read_epoch(self.dist.mean)
        check_finite_losses(means, self.step)
        summary = {"steps": counts.get("steps", 0), "images": self.epoch_images, "train_time_s": self.epoch_time,
                   "images_per_s": self.epoch_images / max(self.epoch_time, 1e-9),
                   "train": nest(means), "switch": shares(counts)}
        self.batch, self.epoch_time, self.epoch_images = 0, 0.0, 0
        return summary

    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every network's logits in the run's precision (call in eval mode, under no_grad)."""
        with self.precision.autocast():
            logits = self.forward(x)
        self.pop_features()  # recorded by the taps, not needed here
        return logits

    def eval_mode(self) -> None:
        for net in self.networks.values():
            net.model.eval()

    def evaluate(self, split: str = "test") -> dict[str, dict[str, float]]:
        """Top-1 accuracy (%) and loss of every network on the test split (or ``"val"``, the validation split)."""
        return self.evaluate_split(split).results

    def evaluate_split(self, split: str = "test") -> Evaluation:
        """Evaluate every network on the test split (or ``"val"``): accuracy, loss and per-class hits (all ranks'
        shards; ``evaluation.evaluate``)."""
        return evaluate(self, split)

    def evaluates_at(self, epoch: int) -> bool:
        """Whether epoch ``epoch`` (1-based) ends with an evaluation: every ``train.eval_every``, the epochs in
        ``train.eval_epochs`` and the last."""
        t = self.cfg.train
        return epoch % t.eval_every == 0 or epoch == t.epochs or epoch in t.eval_epochs

    def tests_at(self, epoch: int) -> bool:
        """Whether an evaluation at epoch ``epoch`` also reads the test split: always, or with
        ``train.eval_test=last`` at the last epoch only (the race's rungs read validation alone; the test split
        was most of an early rung's cost)."""
        return self.cfg.train.eval_test == "every" or epoch == self.cfg.train.epochs

    def fit(self, stop_after: int | None = None) -> dict[str, Any]:
        """Train to ``train.epochs``, evaluating, logging and checkpointing; write report.json.

        Args:
            stop_after: stop at the end of this epoch instead (a pause: last.pt holds the state, the status is
                "paused", no report.json is written, and ``Trainer.from_checkpoint(run).fit()`` continues exactly
                as if the run had never stopped). The race pauses trials at its rungs this way.

        SIGTERM/SIGINT finish the current step, write a checkpoint and raise ``Interrupted``.
        """
        total = self.cfg.train.epochs
        until = total if stop_after is None else min(int(stop_after), total)
        if self.epoch < until:
            self.open_caches()
        self.rundir.open(self.cfg, self.loggers, (self.log_offsets or {}) if self.step else None, self._run_facts())
        if self.cfg.train.progress and self.dist.is_main and self.epoch < until:
            logger.info("\n".join(run_header(self)))
        with recording_state(self._close_run, "finished" if until == total else "paused"), \
                StopSignals() as self.stop.signals:
            while self.epoch < until:
                t0 = time.perf_counter()
                summary = {"epoch": self.epoch + 1, **self.train_epoch(), "lr_end": self._lrs()}
                self.epoch += 1
                self._sync_ranks()
                evaluation = chosen_on = None
                if self.evaluates_at(self.epoch):
                    t_eval = time.perf_counter()
                    refresh = self.epoch in self.cfg.train.bn_refresh_epochs
                    with refreshed_batchnorm(self) if refresh else contextlib.nullcontext():
                        if self.val_loader is not None:  # model selection reads validation; test is for reporting
                            summary["val"] = self.evaluate_split("val").results
                        if self.tests_at(self.epoch):
                            evaluation = self.evaluate_split()
                            summary["test"] = evaluation.results
                    # Scores of BatchNorm statistics the checkpoint does not hold rank a rung; they choose no best.pt.
                    chosen_on = None if refresh else summary.get("val", summary.get("test"))
                    if refresh:
                        summary["bn_refreshed"] = True
                    self.progress.evaluated(time.perf_counter() - t_eval)
                for hook in self.hooks:  # memorisation under label noise, per-phase accuracy under drift, yours
                    summary.update(hook.on_epoch_end(self, summary, evaluation))
                summary["epoch_time_s"] = time.perf_counter() - t0
                self.history.append(summary)
                self.rundir.epoch(summary, self.step)
                if self.cfg.train.progress and self.dist.is_main:
                    logger.info(epoch_line(summary, self.cfg.train.epochs))
                self.save_checkpoint(best=chosen_on is not None and self._update_best(chosen_on, summary.get("test")),
                                     synced=True)
                self.stop.agree()
                self.stop.raise_if_stopped(self.epoch, self.step, self.run_dir if self.writable else None)
        report = self.report()
        if self.epoch >= total:
            self.rundir.write_report(report)
        return report

    def _update_best(self, chosen_on: dict[str, dict[str, float]], test: dict[str, dict[str, float]] | None = None) -> bool:
        return train_state.update_best(self, chosen_on, test)

    # ------------------------------------------------------------------ telemetry, run directory, checkpoints

    def _log_steps(self) -> dict[str, Any]:
        means, rest = self.meters.read_interval(self.dist.mean)
        check_finite_losses(means, self.step)
        self.epoch_time += self.clock.tick()
        seconds, images = self.clock.take_row()
        row = {"epoch": self.epoch + 1, "step": self.step, **nest(means), **rest, "lr": self._lrs(),
               "images_per_s": images / max(seconds, 1e-9)}  # all processes' images, over training time
        self.rundir.step(row)
        return row

    def _lrs(self) -> dict[str, float]:
        return {n: net.optimizer.param_groups[0]["lr"] for n, net in self.networks.items() if net.optimizer}

    def _run_facts(self) -> dict[str, int]:
        """Where the run is and its size, for status.json (``switokd status`` reads no checkpoint)."""
        return {"epoch": self.epoch, "step": self.step, "steps_per_epoch": len(self.train_loader),
                "global_batch": self.cfg.train.batch_size * self.dist.world_size}

    def _close_run(self, state: str = "stopped", reason: str = "") -> None:
        self.stop.signals = None
        self.rundir.close(state, reason, self._run_facts())

    def state_dict(self) -> dict[str, Any]:
        """The whole training state (``train_state.training_state``)."""
        return train_state.training_state(self)

    def load_state_dict(self, ckpt: dict[str, Any], path: str | Path = "checkpoint") -> None:
        """Restore a state from ``state_dict`` (``train_state.restore``)."""
        train_state.restore(self, ckpt, path)

    def report(self) -> dict[str, Any]:
        """Last-epoch and best-epoch accuracy of each network, and the switching shares (``report.json``)."""
        return train_state.build_report(self)

    def _sync_ranks(self) -> None:
        """Several processes: average BatchNorm statistics and the running metric sums over ranks, so that every
        rank holds the state rank 0 saves (both are linear in what follows, so training is unchanged). The
        method's own modules too: a gate's or fusion module's BatchNorm, PCL's temporal mean."""
        self.dist.sync_state([*(net.model for net in self.networks.values()), *self.method.feature_modules.values()],
                             [m.sums[k] for m in (self.meters.step, self.meters.epoch) for k in m.sums])

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
        return self.rundir.save_checkpoint(self.state_dict(), best) if self.writable else None

    @classmethod
    def from_checkpoint(cls, path: str | Path, overrides: list[str] | tuple[str, ...] = (), data: DataSplits | None = None,
                        *, evaluate_only: bool = False) -> "Trainer":
        """Rebuild a run from its checkpoint (a ``last.pt``/``best.pt`` or its run directory).

        Args:
            path: the checkpoint, or the run directory holding ``last.pt``.
            overrides: ``key=value`` changes; to continue training only those in ``train_state.RESUMABLE_OVERRIDES``.
            data: the run's data, when it was not a built-in data set.
            evaluate_only: load the networks' weights only, for evaluation: any override is allowed and
                nothing is written (``switokd eval``).

        Example:
            >>> trainer = Trainer.from_checkpoint("runs/demo")  # doctest: +SKIP
            >>> trainer.fit()  # continues to train.epochs  # doctest: +SKIP
        """
        return train_state.from_checkpoint(cls, path, overrides, data, evaluate_only=evaluate_only)
