"""The race: which method gives the best student on your data, for less than the full grid (``switokd race``).

Every (method, seed) is a trial of one Optuna study. The trials train to the first rung, the methods are ranked
there by their seeds' mean validation accuracy, the top 1/eta go on from their checkpoints, and so on to the
last epoch (synchronous successive halving: ``race.schedule``). Decisions read the validation split only; the
test split is read for the final ranking. With ``search``, each method is several arms, each with
hyperparameters drawn by an Optuna sampler. ``switokd sweep`` is the same engine with one rung, the last epoch.

Example:
    >>> from switokd.race import race  # doctest: +SKIP
    >>> result = race("configs/fashion_mnist.yaml", ["dml", "switokd", "kd", "dist"], [0, 1], "runs/race",
    ...               ["data.val_split=500"], workers=2)  # doctest: +SKIP
    >>> result.winner["arm"], result.path  # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .. import config as C
from ..errors import ConfigError, SwitokdError
from . import results as R
from .engine import (RaceDefinition, Study, TrialSpec, WorkerOptions, check_journal, open_storage, reuse_conflict,
                     work, work_ranks)
from .plan import TEACHER_RUN, RunSpec, parse_method, plan
from .schedule import rung_epochs, rungs_before_decay, schedule

# Default search spaces, (low, high) sampled on a log scale: the temperature and the distillation weight around
# the recipes' values, and every network's learning rate. A method that refuses a key (vanilla has no
# temperature; UniOKD sets its own) searches the rest.
SEARCH_SPACE: dict[str, tuple[float, float]] = {"method.tau": (1.0, 8.0), "method.kl_weight": (0.25, 4.0),
                                                "lr": (0.02, 0.3)}


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


def _search_overrides(cfg_path, overrides: Sequence[str], spec_over: Sequence[str], values: Mapping[str, float]) -> list[str]:
    out = []
    base = C.load_config(cfg_path, [*overrides, *spec_over])
    for key, v in values.items():
        if key == "lr":  # every network's (a frozen teacher's is not used)
            out += [f"networks.{n.name}.lr={v:.6g}" for n in base.networks]
        else:
            out.append(f"{key}={v:.6g}")
    return out


def _searchable(cfg_path, overrides, spec_over, space: Mapping[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    """The keys of ``space`` this method accepts (vanilla has no temperature; UniOKD refuses method.tau)."""
    from ..methods import method_from_config
    ok = {}
    for key, (lo, hi) in space.items():
        trial = _search_overrides(cfg_path, overrides, spec_over, {key: lo})
        try:
            method_from_config(C.load_config(cfg_path, [*overrides, *spec_over, *trial]))
        except (ConfigError, ValueError, TypeError):
            continue
        name = C.load_config(cfg_path, [*overrides, *spec_over]).method.name
        if key != "lr" and name == "vanilla":
            continue
        ok[key] = (lo, hi)
    return ok


def _sample(space: Mapping[str, tuple[float, float]], n: int, seed: int, sampler: str) -> list[dict[str, float]]:
    """``n`` points of ``space`` (log scale) drawn by an Optuna sampler ("random" or "qmc", seeded)."""
    import optuna
    samp = (optuna.samplers.QMCSampler(seed=seed, scramble=True) if sampler == "qmc"
            else optuna.samplers.RandomSampler(seed=seed))
    study = optuna.create_study(sampler=samp)
    points = []
    for _ in range(n):
        t = study.ask()
        points.append({k: t.suggest_float(k, lo, hi, log=True) for k, (lo, hi) in space.items()})
        study.tell(t, 0.0)
    return points


def build(cfg_path: str | Path | None, methods: Sequence[str], seeds: Sequence[int], out: Path,
          overrides: Sequence[str], rungs: list[int], prune: bool, search: int, search_space: Mapping | None,
          sampler: str, sampler_seed: int) -> tuple[list[TrialSpec], list[str], list[str]]:
    """The trials of a race (teachers first where offline arms need them), its arms and its protected arms."""
    from ..methods import resolve_method
    specs: list[RunSpec] = plan(cfg_path, methods, seeds, overrides, out)
    epochs = C.load_config(cfg_path, list(overrides)).train.epochs
    offline = {parse_method(m)[0] for m in methods if getattr(resolve_method(parse_method(m)[1]), "offline", False)}
    labels = [parse_method(m)[0] for m in methods]
    protected = ["vanilla"] if offline and "vanilla" in labels else []
    extra = [f"train.eval_epochs={json.dumps(rungs[:-1])}"] if prune and len(rungs) > 1 else []
    if extra and not any(o.split("=", 1)[0].strip() == "train.eval_test" for o in overrides):
        extra.append("train.eval_test=last")  # the rungs decide on validation: the test split waits for the end
    draws: dict[str, list[dict[str, float]]] = {}
    if search:
        space = dict(search_space or SEARCH_SPACE)
        for i, (label, _, over) in enumerate(parse_method(m) for m in methods):
            if label in protected:
                continue
            keys = _searchable(cfg_path, overrides, over, space)
            draws[label] = _sample(keys, search, sampler_seed + i, sampler) if keys else [{}]
    trials: list[TrialSpec] = []
    arms: list[str] = []
    for spec in specs:
        teacher = spec.name.startswith(TEACHER_RUN)
        source = next((o.split("=", 1)[1] for o in spec.overrides if o.startswith("networks.") and ".checkpoint=" in o), None)
        needs = Path(source).parent.name if source else None
        searched = not teacher and spec.method not in protected  # a teacher source is not searched: it must finish
        for j, point in enumerate(draws.get(spec.method, [{}]) if searched else [{}]):
            arm = spec.method if not point else f"{spec.method}#{j}"
            run = spec.name if not point else f"{arm}-seed{spec.seed}"
            over = [*spec.overrides, *extra]
            if point:
                over = [o for o in over if not o.startswith("train.run_name=")]
                over += [*_search_overrides(cfg_path, overrides, spec.overrides, point), f"train.run_name={run}",
                         f"method.label={arm}"]
            cfg = C.load_config(cfg_path, over)
            stops = [epochs] if teacher or spec.method in protected or not prune else list(rungs)
            trials.append(TrialSpec(arm if not teacher else TEACHER_RUN, spec.seed, run, C.to_dict(cfg),
                                    "teacher" if teacher else "arm", stops, needs,
                                    {k.replace("method.", ""): float(v) for k, v in point.items()}))
            if not teacher and arm not in arms:
                arms.append(arm)
    runs = {t.run for t in trials}
    for t in trials:
        if t.needs is not None and t.needs not in runs:
            raise ConfigError(f"race: {t.run} learns from {t.needs}, which is not a trial of this race")
    return trials, arms, protected


def race(config: str | Path | None, methods: Sequence[str], seeds: Sequence[int], out: str | Path,
         overrides: Sequence[str] = (), *, eta: float = 3.0, rungs: Sequence[int] | None = None,
         min_epochs: int | None = None, workers: int = 1, storage: str | Path | None = None,
         study: str | None = None, search: int = 0, search_space: Mapping[str, tuple[float, float]] | None = None,
         sampler: str = "random", sampler_seed: int = 0, lease_s: float = 120.0, prune: bool = True,
         command: str = "", log: Callable[[str], None] = print,
         on_trial_complete: Callable[[Any], None] | None = None) -> RaceResult:
    """Race ``methods`` on ``config``: every (method, seed) a trial of one Optuna study, halved at each rung.

    Args:
        config, overrides: the runs' config (a YAML file, then ``key=value`` overrides); it needs a validation
            split (``data.val_split``) when pruning, since every decision reads it.
        methods: as ``switokd sweep --methods`` (``dml``, ``kd+ls``, ``dml+dkd@warmup_epochs=3``).
        seeds: every method runs each; a rung ranks a method by its seeds' mean.
        out: the runs' directories, the study's journal file (unless ``storage``) and the results.
        eta: the reduction factor: each rung keeps the top 1/eta of the methods, and rungs are eta apart.
        rungs, min_epochs: the rung epochs (default: train.epochs / eta^k down to min_epochs, itself
            train.epochs / eta^2).
        workers: trials at once on this machine, each a process (one CPU thread each of the cores, or one GPU).
        storage: any Optuna storage URL (``postgresql://...``) or a journal file path (default
            ``OUT/study.journal``); workers on other machines join with the same URL.
        study: the study's name (default "race").
        search: sample this many hyperparameter sets per method (``search_space``, default ``SEARCH_SPACE``)
            with ``sampler`` ("random" or "qmc"); each is an arm of its own.
        lease_s: a worker whose heartbeat is this old is taken for gone, and its segment is taken up again.
        prune: false runs every trial to the end (``switokd sweep``).
        on_trial_complete: called in this process with each trial it completes (the sweep rewrites its tables).

    Returns:
        A ``RaceResult``: the study, the race as data, and ``OUT/race.md``.
    """
    out = Path(out).resolve()
    base = C.load_config(config, list(overrides))
    epochs = base.train.epochs
    check_arguments(out, eta, lease_s, prune, storage)
    if prune and base.data.val_split <= 0:
        raise ConfigError("race: the race decides on a validation split only; set data.val_split (a fraction of the "
                          "training images, or a count), e.g. data.val_split=0.1")
    if workers < 1:
        raise ConfigError(f"race: --workers must be >= 1, got {workers}")
    try:
        rung_list = rung_epochs(epochs, eta, min_epochs, rungs) if prune else [epochs]
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if search < 0:
        raise ConfigError(f"race: --search must be >= 0, got {search}")
    kind = "race" if prune else "sweep"
    trials_box: dict[str, Any] = {}

    def make_trials() -> list[TrialSpec]:
        return trials_box["trials"]

    trials_box["trials"], arms, protected = build(config, methods, seeds, out, overrides, rung_list, prune, search,
                                                  search_space, sampler, sampler_seed)
    check_before_start(base, trials_box["trials"], out)
    definition = RaceDefinition(name="", out=str(out), epochs=epochs, rungs=rung_list, eta=eta if prune else 1.0,
                                protected=protected, arms=arms, seeds=list(seeds), command=command,
                                search={"n": search, "space": {k: list(v) for k, v in (search_space or SEARCH_SPACE).items()},
                                        "sampler": sampler, "seed": sampler_seed} if search else {})
    digest = hashlib.sha1(json.dumps([arms, list(seeds), rung_list, [t.config for t in trials_box["trials"]]],
                                     sort_keys=True).encode()).hexdigest()[:10]
    definition.configs = hashlib.sha1(json.dumps([t.config for t in trials_box["trials"]], sort_keys=True).encode()).hexdigest()
    definition.name = study or (kind if prune else f"sweep-{digest}")
    from ..train.distributed import Distributed
    dist = Distributed.from_env()
    if storage is None:
        # A sweep in one process keeps its study in memory (its runs' directories resume it); a race, or several
        # workers, keep it in a journal file in OUT that every process of the race opens.
        storage = "memory" if (not prune and workers == 1 and not dist.enabled) else out / "study.journal"
    opts = WorkerOptions(lease_s=lease_s, on_trial_complete=on_trial_complete)
    say = lambda m: log(m.replace("race:", f"{kind}:", 1))  # noqa: E731
    early = prune and rungs_before_decay(rung_list, {n.name: n.milestones for n in base.networks
                                                     if n.schedule == "multistep"})
    if early and dist.is_main:
        log(early)
    if dist.enabled:  # a torchrun job: one trial at a time, trained by every rank; rank 0 talks to the storage
        if workers != 1:
            raise ConfigError("race: under torchrun the job is one worker (its ranks train each trial together); "
                              "start more jobs, or use --workers without torchrun")
        from ..train.engine import resolve_device
        dist.init(resolve_device(base.train.device, dist.local_rank))
        s = Study.create_or_join(_storage(storage), definition, make_trials, log) if dist.is_main else None
        work_ranks(s, str(out), opts, say, dist)
        if not dist.is_main:
            return RaceResult(None, {"done": True, "winner": None, "ranking": []}, out / "race.md")
        store = s.storage
    else:
        store = _storage(storage)
        s = Study.create_or_join(store, definition, make_trials, log)
    if not dist.enabled and workers == 1:
        work(s, opts, say)
    elif not dist.enabled:
        if storage == "memory":
            raise ConfigError("race: several workers need a shared storage (a journal file or a database URL)")
        _spawn(workers, storage, definition.name, lease_s, log, kind)
        s = Study(store, definition.name)
    header = [f"# {'Race' if prune else 'Sweep'}: {Path(config).name if config else 'defaults'}, methods "
              f"{', '.join(methods)}, seeds {', '.join(map(str, seeds))}", ""]
    if command:
        header.append(f"- command: `{command}`")
    from ..train.runinfo import machine_summary
    header += [f"- machine: {machine_summary(threads=base.train.threads or None)}", f"- date: {time.strftime('%Y-%m-%d')}",
               f"- study: {definition.name!r} in {storage if storage != 'memory' else 'memory'}"]
    data = R.write(s, out, header) if prune else R.collect(s)
    if prune and not data["done"]:
        log(f"{kind}: not finished: run the same command again to continue")
    return RaceResult(s, data, out / "race.md")


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
    if out.exists() and not out.is_dir():
        raise ConfigError(f"race: --out {str(out)!r} is a file; give a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"race: --out {str(out)!r} cannot be created ({e.strerror or e})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ConfigError(f"race: --out {str(out)!r} is not writable")


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
    from ..data.pipeline import usable_cores
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


__all__ = ["race", "RaceResult", "SEARCH_SPACE", "rung_epochs", "schedule", "plan", "parse_method", "open_storage"]
