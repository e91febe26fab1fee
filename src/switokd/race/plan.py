"""A grid's runs: each (method, seed) of a sweep or a race, and the teachers its offline methods need.

Every run is an ordinary training run in ``OUT/<method>-seed<k>/``. Offline KD needs a teacher trained alone:
the grid trains it once per seed (``teacher-alone-seed<k>``), or reuses the seed's ``vanilla`` run (whose teacher
learns from the labels alone).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .. import config as C
from ..runs import files as F

TEACHER_RUN = "teacher-alone"


@dataclass(frozen=True)
class RunSpec:
    """One run of the grid: its directory name, method and seed, and the overrides that make it."""

    name: str
    method: str
    seed: int
    overrides: tuple[str, ...]


def parse_method(entry: str) -> tuple[str, str, tuple[str, ...]]:
    """One ``--methods`` entry: ``BASE[+MOD...][@key=value,...]`` to (label, base, overrides).

    BASE is a method (``dml``, or ``package.module:factory``); each MOD is a distillation loss (``+dkd``,
    ``+dist``), a feature loss (``kd+at``, ``dml+fitnet``) or ``+ls`` (logit standardization); ``@key=value`` pairs set ``method.*`` keys (``@tau=2,
    kl_weight=9``). The label, the part before ``@``, names the runs (``dml+dkd-seed0``) and the column.

    Example:
        >>> parse_method("kd+ls@tau=2,ce_weight=0.1")
        ('kd+ls', 'kd', ('method.name=kd', 'method.logit_std=true', 'method.tau=2', 'method.ce_weight=0.1', 'method.label=kd+ls'))
    """
    from ..methods import LOSSES
    from ..methods.features import FEATURE_LOSSES

    label, _, extra = entry.partition("@")
    base, *mods = label.split("+")
    if not base:
        raise C.ConfigError(f"sweep: method entry {entry!r} has no method name before '+'")
    over = [f"method.name={base}"]
    for mod in mods:
        if mod == "ls":
            over.append("method.logit_std=true")
        elif mod in LOSSES:
            over.append(f"method.loss={mod}")
        elif mod in FEATURE_LOSSES:
            over.append(f"method.feature_loss={mod}")
        else:
            raise C.ConfigError(f"sweep: method entry {entry!r}: {mod!r} is neither a distillation loss "
                                f"({', '.join(LOSSES.names())}), a feature loss ({', '.join(FEATURE_LOSSES.names())}) "
                                "nor 'ls'")
    for kv in filter(None, extra.split(",")):
        if "=" not in kv:
            raise C.ConfigError(f"sweep: method entry {entry!r}: {kv!r} is not of the form key=value")
        over.append(f"method.{kv.strip()}")
    if label != base:
        over.append(f"method.label={label}")
    return label, base, tuple(over)


def plan(cfg_path: str | Path | None, methods: Sequence[str], seeds: Sequence[int], overrides: Sequence[str],
         out: Path) -> list[RunSpec]:
    """The runs of the grid in the order they can run: each seed's teacher before its offline runs
    (``kd``, ``dkd``, ``dist`` and their variants: frozen teachers trained alone).

    A teacher cache set in the config (``networks.T.cache=ROOT``) becomes one cache per seed's teacher,
    ``ROOT/<teacher run>``, shared by that seed's offline runs; the runs whose teacher learns get none.
    """
    from ..methods import resolve_method

    base = C.load_config(cfg_path, list(overrides))
    teachers = [n.name for n in base.networks if n.role == "teacher"]
    caches = {n.name: n.cache for n in base.networks if n.cache}
    no_cache = tuple(f"networks.{t}.cache=null" for t in caches)
    parsed = [parse_method(m) for m in methods]
    offline = {}
    extended = []
    for label, name, over in parsed:
        try:
            factory = resolve_method(name)
        except KeyError as e:
            raise C.ConfigError(f"sweep: {e.args[0]}") from None
        offline[label] = bool(getattr(factory, "offline", False))
        over = (*over, *_branch_networks(base, int(getattr(factory, "branch_networks", 0) or 0)))
        C.load_config(cfg_path, [*overrides, *over])  # a bad variant fails before any run starts
        extended.append((label, name, over))  # with the branch networks a branch method trains
    parsed = extended
    if any(offline.values()) and not teachers:
        raise C.ConfigError(f"sweep: offline method(s) {[m for m in offline if offline[m]]} need a network with "
                            "role teacher in the config")
    labels = [p[0] for p in parsed]
    if len(set(labels)) != len(labels) or len(set(seeds)) != len(seeds):
        raise C.ConfigError("sweep: --methods and --seeds must not repeat")
    specs: list[RunSpec] = []
    for seed in seeds:
        common = (*overrides, f"train.seed={seed}", f"train.out_dir={out}")
        trained = False
        for label, name, over in sorted(parsed, key=lambda p: offline[p[0]]):  # offline last: they need the teacher
            extra: tuple[str, ...] = ()
            if offline[label]:
                if "vanilla" in labels:
                    source = out / f"vanilla-seed{seed}" / F.LAST
                else:
                    source = out / f"{TEACHER_RUN}-seed{seed}" / F.LAST
                    if not trained:
                        only = "[" + ", ".join(_net_yaml(base, t, no_cache=True) for t in teachers) + "]"
                        specs.append(RunSpec(f"{TEACHER_RUN}-seed{seed}", "vanilla", seed,
                                             (*common, f"networks={only}", "method.name=vanilla",
                                              f"train.run_name={TEACHER_RUN}-seed{seed}")))
                        trained = True
                extra = tuple(f"networks.{t}.checkpoint={source}" for t in teachers)
                extra += tuple(f"networks.{t}.cache={Path(c) / source.parent.name}" for t, c in caches.items())
            elif not any(o.startswith("networks=") for o in over):
                extra = no_cache
            run = f"{label}-seed{seed}"
            specs.append(RunSpec(run, label, seed, (*common, *over, f"train.run_name={run}", *extra)))
    return specs


def _branch_networks(cfg: C.Config, m: int) -> tuple[str, ...]:
    """A branch method beside two-network methods in one grid trains the grid's students, each split into ``m``
    branches at its family's default split where the config sets none, and no teacher: the deployed branch is
    then the same network as the other methods' student (``()`` when the method is not a branch method or the
    config already splits a network)."""
    if m <= 0 or any(n.branches for n in cfg.networks):
        return ()
    students = [n.name for n in cfg.networks if n.role == "student"]
    if not students:
        return ()
    return ("networks=" + json.dumps([{**_net_dict(cfg, s), "branches": m} for s in students]),)


def _net_dict(cfg: C.Config, name: str) -> dict:
    return C.to_dict(cfg)["networks"][[n.name for n in cfg.networks].index(name)]


def _net_yaml(cfg: C.Config, name: str, no_cache: bool = False) -> str:
    net = _net_dict(cfg, name)
    if no_cache:
        net["cache"] = None
    return json.dumps(net)


__all__ = ["RunSpec", "TEACHER_RUN", "parse_method", "plan"]
