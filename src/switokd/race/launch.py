"""Running a race: check its spec and arguments before anything is written, create or join its study, and
work it with one or more worker processes (or as a torchrun job); then write the results."""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from .. import config as C
from ..errors import ConfigError, SwitokdError
from . import results as R
from .engine import (RaceDefinition, Study, TrialSpec, WorkerOptions, check_journal, make_dir, open_storage,
                     reuse_conflict, work, work_ranks)
from .schedule import rung_epochs, rungs_before_decay, rungs_before_memorising
from .trials import SEARCH_SPACE, build


@dataclass
class RaceResult:
    """What ``race`` returns: the study, the race as plain data (``race.json``) and where it was written."""

    study: Any
    data: dict[str, Any]
    path: Path

    @property
    def winner(self) -> dict[str, Any] | None:
        return self.data["winner"]

    @property
    def ranking(self) -> list[dict[str, Any]]:
        return self.data["ranking"]


@dataclass
class RaceSpec:
    """What a race is: which methods, on which config and seeds, halved how.

    Args:
        config, overrides: the runs' config (a YAML file, then ``key=value`` overrides); it needs a validation
            split (``data.val_split``) when pruning, since every decision reads it.
        methods: as ``switokd sweep --methods`` (``dml``, ``kd+ls``, ``dml+dkd@warmup_epochs=3``).
        seeds: every method runs each; a rung ranks a method by its seeds' mean.
        out: the runs' directories, the study's journal file (unless a storage is given) and the results.
        eta: the reduction factor: each rung keeps the top 1/eta of the methods, and rungs are eta apart.
        rungs, min_epochs: the rung epochs (default: train.epochs / eta^k down to min_epochs, itself
            train.epochs / eta^2).
        search: sample this many hyperparameter sets per method (``search_space``, default ``SEARCH_SPACE``)
            with ``sampler`` ("random" or "qmc", seeded by ``sampler_seed``); each is an arm of its own.
        prune: false runs every trial to the end (``switokd sweep``).
    """

    config: str | Path | None
    methods: Sequence[str]
    seeds: Sequence[int]
    out: str | Path
    overrides: Sequence[str] = ()
    eta: float = 3.0
    rungs: Sequence[int] | None = None
    min_epochs: int | None = None
    search: int = 0
    search_space: Mapping[str, tuple[float, float]] | None = None
    sampler: str = "random"
    sampler_seed: int = 0
    prune: bool = True

    @property
    def kind(self) -> str:
        return "race" if self.prune else "sweep"


def race(spec: RaceSpec, *, workers: int = 1, storage: str | Path | None = None, study: str | None = None,
         lease_s: float = 120.0, command: str = "", log: Callable[[str], None] = print,
         on_trial_complete: Callable[[Any], None] | None = None) -> RaceResult:
    """Race ``spec.methods`` on ``spec.config``: every (method, seed) a trial of one Optuna study, halved at each
    rung.

    Args:
        spec: what to race (``RaceSpec``).
        workers: trials at once on this machine, each a process (one CPU thread each of the cores, or one GPU).
        storage: any Optuna storage URL (``postgresql://...``) or a journal file path (default
            ``OUT/study.journal``); workers on other machines join with the same URL.
        study: the study's name (default "race").
        lease_s: a worker whose heartbeat is this old is taken for gone, and its segment is taken up again.
        command: the command line, for the results' header.
        on_trial_complete: called in this process with each trial it completes (the sweep rewrites its tables).

    Returns:
        A ``RaceResult``: the study, the race as data, and ``OUT/race.md``.

    Example:
        >>> from switokd.race import RaceSpec, race  # doctest: +SKIP
        >>> result = race(RaceSpec("configs/fashion_mnist.yaml", ["dml", "switokd", "kd", "dist"], [0, 1],
        ...                        "runs/race", ["data.val_split=500"]), workers=2)  # doctest: +SKIP
        >>> result.winner["arm"], result.path  # doctest: +SKIP
    """
    out = Path(spec.out).resolve()
    base = C.load_config(spec.config, list(spec.overrides))
    check_arguments(out, spec.eta, lease_s, spec.prune, storage)
    rung_list = _check_spec(spec, base, workers)
    trials, arms, protected = build(spec.config, spec.methods, spec.seeds, out, spec.overrides, rung_list, spec.prune,
                                    spec.search, spec.search_space, spec.sampler, spec.sampler_seed)
    check_before_start(base, trials, out)
    definition = _definition(spec, out, base.train.epochs, rung_list, trials, arms, protected, command, study)
    from ..train.distributed import Distributed
    dist = Distributed.from_env()
    if storage is None:
        # A sweep in one process keeps its study in memory (its runs' directories resume it); a race, or several
        # workers, keep it in a journal file in OUT that every process of the race opens.
        storage = "memory" if (not spec.prune and workers == 1 and not dist.enabled) else out / "study.journal"
    opts = WorkerOptions(lease_s=lease_s, on_trial_complete=on_trial_complete)
    say = lambda m: log(m.replace("race:", f"{spec.kind}:", 1))  # noqa: E731
    early = spec.prune and rungs_before_decay(rung_list, {n.name: n.milestones for n in base.networks
                                                          if n.schedule == "multistep"})
    noisy = spec.prune and rungs_before_memorising(rung_list, base.data.label_noise)
    for warning in (early, noisy):
        if warning and dist.is_main:
            log(warning)
    if dist.enabled:  # a torchrun job: one trial at a time, trained by every rank; rank 0 talks to the storage
        if workers != 1:
            raise ConfigError("race: under torchrun the job is one worker (its ranks train each trial together); "
                              "start more jobs, or use --workers without torchrun")
        from ..train.engine import resolve_device
        dist.init(resolve_device(base.train.device, dist.local_rank))
        s = Study.create_or_join(_storage(storage), definition, lambda: trials, log) if dist.is_main else None
        work_ranks(s, str(out), opts, say, dist)
        if not dist.is_main:
            return RaceResult(None, {"done": True, "winner": None, "ranking": []}, out / "race.md")
    else:
        with _sole_sweep(out, spec.kind) if storage == "memory" else contextlib.nullcontext():
            s = Study.create_or_join(_storage(storage), definition, lambda: trials, log)
            if workers == 1:
                work(s, opts, say)
        if workers > 1:
            if storage == "memory":
                raise ConfigError("race: several workers need a shared storage (a journal file or a database URL)")
            _spawn(workers, storage, definition.name, lease_s, log, spec.kind)
            s = Study(s.storage, definition.name)
    if not spec.prune:
        return RaceResult(s, R.collect(s), out / "race.md")
    header = R.header("Race", spec.config, spec.methods, spec.seeds, command, base.train.threads)
    header.append(f"- study: {definition.name!r} in {storage}")
    data = R.write(s, out, header)
    if not data["done"]:
        log(f"{spec.kind}: not finished: run the same command again to continue")
    return RaceResult(s, data, out / "race.md")


@contextlib.contextmanager
def _sole_sweep(out: Path, kind: str) -> Iterator[None]:
    """Hold ``OUT/sweep.lock`` while a sweep whose study is in memory runs: a second such sweep on the same OUT
    would not see the first's study and would train the same runs in the same directories at the same time
    (two ``bash benchmarks/methods.sh`` on one experiment did: duplicated epochs in kdcl-seed2's logs). The lock
    goes with the process, however it ends."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): unguarded, as before
        yield
        return
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "sweep.lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise ConfigError(f"{kind}: another {kind} is running in {out} ({holder}); wait for it, or give both "
                              f"--storage {out / 'study.journal'} so that they share the work") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}")
        f.flush()
        yield


def _check_spec(spec: RaceSpec, base: C.Config, workers: int) -> list[int]:
    """The rung epochs, once the spec is known to be one a race can run."""
    if spec.prune and base.data.val_split <= 0:
        raise ConfigError("race: the race decides on a validation split only; set data.val_split (a fraction of the "
                          "training images, or a count), e.g. data.val_split=0.1")
    if workers < 1:
        raise ConfigError(f"race: --workers must be >= 1, got {workers}")
    if spec.search < 0:
        raise ConfigError(f"race: --search must be >= 0, got {spec.search}")
    try:
        return rung_epochs(base.train.epochs, spec.eta, spec.min_epochs, spec.rungs) if spec.prune else [base.train.epochs]
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _definition(spec: RaceSpec, out: Path, epochs: int, rung_list: list[int], trials: Sequence[TrialSpec],
                arms: list[str], protected: list[str], command: str, study: str | None) -> RaceDefinition:
    """What every worker (and a later run of the command) must agree on, stored in the study."""
    configs = [t.config for t in trials]
    search = ({"n": spec.search, "space": {k: list(v) for k, v in (spec.search_space or SEARCH_SPACE).items()},
               "sampler": spec.sampler, "seed": spec.sampler_seed} if spec.search else {})
    d = RaceDefinition(name="", out=str(out), epochs=epochs, rungs=rung_list, eta=spec.eta if spec.prune else 1.0,
                       protected=protected, arms=arms, seeds=list(spec.seeds), command=command, search=search)
    d.configs = hashlib.sha1(json.dumps(configs, sort_keys=True).encode()).hexdigest()
    digest = hashlib.sha1(json.dumps([arms, list(spec.seeds), rung_list, configs], sort_keys=True).encode()).hexdigest()
    d.name = study or (spec.kind if spec.prune else f"sweep-{digest[:10]}")
    return d


def check_arguments(out: Path, eta: float, lease_s: float, prune: bool, storage: str | Path | None = None) -> None:
    """Refuse, in one line, arguments a race cannot run with, before anything is written."""
    if storage is not None and "://" not in str(storage):
        if not str(storage).strip():
            raise ConfigError("race: --storage is empty; give a journal file path or a database URL")
        check_journal(Path(storage))
    if prune and not (math.isfinite(eta) and eta > 1):
        raise ConfigError(f"race: --eta must be a finite number > 1 (each rung keeps the top 1/eta of the methods), "
                          f"got {eta!r}")
    if not (math.isfinite(lease_s) and lease_s > 0):
        raise ConfigError(f"race: --lease must be a finite number of seconds > 0, got {lease_s!r}")
    make_dir(out, "--out")


def check_before_start(base: C.Config, trials: Sequence[TrialSpec], out: Path) -> None:
    """What would fail only after the study exists (and then make the corrected command "another race"): the
    validation split against the data's size, and run directories that hold runs of other configs."""
    if base.data.val_split > 0:
        from ..data.conditions import validation_count
        from ..data.datasets import load_dataset
        d = base.data
        try:
            data = load_dataset(d.name, d.dir, d.image_size, d.limit_train, d.limit_test, d.channels, d.in_memory)
        except SwitokdError:
            data = None  # the trials will say what is wrong with the data, one line each
        if data is not None:
            n = len(data.train_y)
            count = validation_count(d.val_split, n)
            if not 0 < count < n:
                raise ConfigError(f"race: data.val_split={d.val_split:g} holds out {count} of the {n} training "
                                  "images; it must leave at least one to train on and hold out at least one")
            from ..data.conditions import split_validation
            try:  # the class-balanced draw: a class it would empty is named
                split_validation(data, d.val_split, d.split_seed)
            except SwitokdError as e:
                raise ConfigError(f"race: {e}") from None
    for t in trials:
        why, _ = reuse_conflict(out / t.run, C.from_dict(t.config))
        if why:
            raise ConfigError(f"race: {why}; move it away or use another --out")


def _storage(storage: str | Path):
    if str(storage) == "memory":
        import optuna
        return optuna.storages.InMemoryStorage()
    return open_storage(storage)


def _spawn(n: int, storage: str | Path, name: str, lease_s: float, log: Callable[[str], None], kind: str) -> None:
    """Run ``n`` worker processes on this machine, each with its share of the CPU cores (or its own GPU)."""
    import torch
    from ..hardware import usable_cores
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    visible = [v for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()] or [str(i) for i in range(gpus)]
    threads = max(1, usable_cores() // n)
    procs = []
    for i in range(n):
        env = dict(os.environ)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = visible[i % len(visible)]  # this worker's own GPU, of the parent's
        cmd = [sys.executable, "-m", "switokd.race.worker", "--storage", str(storage), "--study", name,
               "--lease", str(lease_s), "--threads", str(threads), "--kind", kind]
        procs.append(subprocess.Popen(cmd, env=env))
    log(f"{kind}: {n} workers (pids {', '.join(str(p.pid) for p in procs)}), {threads} thread(s) each"
        + (f", GPUs {[visible[i % len(visible)] for i in range(n)]}" if gpus else ""))
    codes = [p.wait() for p in procs]
    bad = [(p.pid, c) for p, c in zip(procs, codes) if c]
    if bad:
        log(f"{kind}: worker(s) exited with an error: {', '.join(f'pid {p} code {c}' for p, c in bad)}")


__all__ = ["RaceSpec", "RaceResult", "race", "check_arguments", "check_before_start"]
