"""Progress while training: a tqdm bar on a terminal, a plain line every ``interval_s`` elsewhere.

Without a terminal (nohup, CI logs, a pipe) tqdm prints nothing useful, so a line such as

    epoch 1/4 step 120/469 (26%)  157 img/s  ETA epoch 2m13s, run 9m40s  loss teacher 0.52 student 0.61  expert 0.0%

goes to stderr about every 30 s instead. Both show the ETA of the epoch and of the whole run.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Callable, TextIO

from ..log import logger
from ..runs.stats import fmt_duration


clock = time.perf_counter  # the training clock's source (a test replaces it)


class TrainingClock:
    """Training seconds, apart from evaluation and checkpoints: ``start`` when training resumes, ``tick`` for the
    seconds since then (added to the epoch's time), ``take_row`` for the seconds and images since the last
    ``steps.jsonl`` row."""

    def __init__(self) -> None:
        self._t0 = 0.0  # set by start()
        self._row = [0.0, 0]

    def start(self) -> None:
        self._t0 = clock()

    def tick(self) -> float:
        now = clock()
        seconds, self._t0 = now - self._t0, now
        self._row[0] += seconds
        return seconds

    def images(self, n: int) -> None:
        self._row[1] += n

    def take_row(self) -> tuple[float, int]:
        (seconds, images), self._row = self._row, [0.0, 0]
        return seconds, int(images)


class Progress:
    """Counts steps and images; reports them as a bar (TTY) or as periodic lines (anything else)."""

    def __init__(self, *, enabled: bool, epochs: int, steps_per_epoch: int, interval_s: float = 30.0,
                 stream: TextIO | None = None, tty: bool | None = None) -> None:
        self.enabled = enabled
        self.epochs, self.steps_per_epoch = epochs, steps_per_epoch
        self.interval_s = interval_s
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.bar: Any = None
        self.epoch = 0
        self.t_start = self.t_epoch = self.t_last = time.perf_counter()
        self.steps_done = self.images_epoch = 0  # steps this process has run, images this epoch
        self.step_in_epoch = self.start_step = 0
        self.eval_s = 0.0  # the last evaluation's time, counted into the run's ETA
        self.summary = ""

    def start_epoch(self, epoch: int, start_step: int) -> None:
        """``epoch`` counts from 0; ``start_step`` is the batch the epoch (re)starts at."""
        self.epoch, self.step_in_epoch, self.start_step, self.images_epoch = epoch, start_step, start_step, 0
        self.t_epoch = self.t_last = time.perf_counter()
        if self.enabled and self.tty:
            from tqdm import tqdm
            self.bar = tqdm(total=self.steps_per_epoch, initial=start_step, desc=f"epoch {epoch + 1}/{self.epochs}",
                            leave=False, dynamic_ncols=True, file=self.stream)

    def step(self, images: int, summary: Callable[[], str] | None = None) -> None:
        """Count one step; when a report is due, ``summary()`` gives its losses and shares (it may sync)."""
        self.steps_done += 1
        self.step_in_epoch += 1
        self.images_epoch += images
        if not self.enabled:
            return
        now = time.perf_counter()
        if self.bar is not None:
            self.bar.update(1)
            if now - self.t_last >= 2.0:
                self.t_last = now
                self.summary = summary() if summary else ""
                self.bar.set_postfix_str(f"run ETA {fmt_duration(self.eta_run(now))} {self.summary}", refresh=False)
        elif now - self.t_last >= self.interval_s:
            self.t_last = now
            self.summary = summary() if summary else ""
            if self.stream is sys.stderr:
                logger.info(self.line(now))  # routable like every other line of the library
            else:
                print(self.line(now), file=self.stream, flush=True)

    def evaluated(self, seconds: float) -> None:
        """Tell how long the last evaluation took: it counts into the run's ETA."""
        self.eval_s = seconds

    def end_epoch(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def eta_run(self, now: float) -> float:
        per_step = (now - self.t_start - self.eval_s * self.epoch) / max(self.steps_done, 1)
        left_steps = (self.epochs - self.epoch) * self.steps_per_epoch - self.step_in_epoch
        return per_step * left_steps + self.eval_s * (self.epochs - self.epoch)

    def line(self, now: float | None = None) -> str:
        now = time.perf_counter() if now is None else now
        elapsed = now - self.t_epoch
        done = self.step_in_epoch - self.start_step
        rate = self.images_epoch / elapsed if elapsed > 0 else 0.0
        eta_epoch = elapsed / max(done, 1) * (self.steps_per_epoch - self.step_in_epoch)
        pct = 100.0 * self.step_in_epoch / max(self.steps_per_epoch, 1)
        return (f"epoch {self.epoch + 1}/{self.epochs} step {self.step_in_epoch}/{self.steps_per_epoch} ({pct:.0f}%)  "
                f"{rate:.0f} img/s  ETA epoch {fmt_duration(eta_epoch)}, run {fmt_duration(self.eta_run(now))}"
                + (f"  {self.summary}" if self.summary else ""))
