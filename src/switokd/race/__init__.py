"""The race: which method gives the best student on your data, for less than the full grid (``switokd race``).

Every (method, seed) is a trial of one Optuna study. The trials train to the first rung, the methods are ranked
there by their seeds' mean validation accuracy, the top 1/eta go on from their checkpoints, and so on to the
last epoch (synchronous successive halving: ``race.schedule``). Decisions read the validation split only; the
test split is read for the final ranking. With ``search``, each method is several arms, each with
hyperparameters drawn by an Optuna sampler. ``switokd sweep`` is the same engine with one rung, the last epoch.

The package's modules: ``launch`` (``race``: check, create or join, work, write), ``trials`` (the trials of a
spec), ``plan`` (the runs of a grid and their teachers), ``schedule`` (the rungs' decisions, pure), ``engine``
(the study on Optuna's storage and the workers' loop), ``results`` (``race.md``, ``race.json``, ``winner.pt``),
``worker`` (a worker process).

Example:
    >>> from switokd.race import RaceSpec, race  # doctest: +SKIP
    >>> result = race(RaceSpec("configs/fashion_mnist.yaml", ["dml", "switokd", "kd", "dist"], [0, 1], "runs/race",
    ...                        ["data.val_split=500"]), workers=2)  # doctest: +SKIP
    >>> result.winner["arm"], result.path  # doctest: +SKIP
"""
from __future__ import annotations

from .engine import open_storage
from .launch import RaceResult, RaceSpec, race
from .plan import parse_method, plan
from .schedule import rung_epochs, schedule
from .trials import SEARCH_SPACE

__all__ = ["race", "RaceSpec", "RaceResult", "SEARCH_SPACE", "rung_epochs", "schedule", "plan", "parse_method",
           "open_storage"]
