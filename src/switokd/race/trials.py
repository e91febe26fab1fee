"""A race's trials from its spec: one per (arm, seed), teachers first where offline arms need them, and the
arms' sampled hyperparameters (``--search``)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

from .. import config as C
from ..errors import ConfigError
from .engine import TrialSpec
from .plan import TEACHER_RUN, RunSpec, parse_method, plan

# Default search spaces, (low, high) sampled on a log scale: the temperature and the distillation weight around
# the recipes' values, and every network's learning rate. A method that refuses a key (vanilla has no
# temperature; UniOKD sets its own) searches the rest.
SEARCH_SPACE: dict[str, tuple[float, float]] = {"method.tau": (1.0, 8.0), "method.kl_weight": (0.25, 4.0),
                                                "lr": (0.02, 0.3)}


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
    given = {o.split("=", 1)[0].strip() for o in overrides}
    if extra and "train.eval_test" not in given:
        extra.append("train.eval_test=last")  # the rungs decide on validation: the test split waits for the end
    if extra and "train.bn_refresh_epochs" not in given:
        # A rung reads each network with BatchNorm statistics re-estimated on the training split: running
        # statistics lag the weights early on, and lag most where the weights move fastest (branch methods).
        extra.append(f"train.bn_refresh_epochs={json.dumps(rungs[:-1])}")
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


__all__ = ["SEARCH_SPACE", "build"]
