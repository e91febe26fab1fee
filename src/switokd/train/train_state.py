"""The trainer's whole state as one checkpointable dict, its restoration, and the run's report.

A checkpoint is the whole training state: every network and optimizer (the LR schedule is a function of the
step), the grad scaler, the switching totals, RNG states, the epoch, step and position inside the epoch, the
running metric sums, the sinks' positions, the history and the config. One written inside an epoch continues
bit-exactly.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import config as C
from .checkpoint import (CHECKPOINT_FORMAT, load_training_checkpoint, load_weights, resolve_resume_path,
                         rng_state, set_rng_state)
from ..errors import CheckpointError
from ..runs.files import pair_means, students_mean
from ..telemetry import shares

Trainer = Any  # switokd.train.trainer.Trainer (not imported: the trainer imports this module)


# Keys a resumed run may change; anything else would make it a different run.
RESUMABLE_OVERRIDES = ("train.epochs", "train.progress", "train.progress_interval_s", "train.log_interval",
                       "train.device", "train.threads", "train.eval_every", "train.eval_epochs", "train.eval_test",
                       "train.bn_refresh_epochs",
                       "train.checkpoint_every_s", "train.checkpoint_every", "train.loggers",
                       "data.dir")


def training_state(tr: "Trainer") -> dict[str, Any]:
    """The whole training state, as tensors and plain containers only (loadable with weights_only=True)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "config": C.to_dict(tr.cfg),
        "epoch": tr.epoch,
        "step": tr.step,
        # Where in the epoch: the loader's order and augmentation are a function of (seed, epoch).
        "loader": {"batch": tr.batch, "train_time_s": tr.epoch_time, "images": tr.epoch_images},
        # No scheduler state: the learning rate is a function of ``step`` and the config.
        "networks": {n: {"model": net.model.state_dict(),
                         "optimizer": net.optimizer.state_dict() if net.optimizer else None}
                     for n, net in tr.networks.items()},
        # The modules the method owns (connectors, regressors), by the network each serves; never exported.
        "method_modules": {n: m.state_dict() for n, m in tr.method.feature_modules.items()},
        # Which of them ships in its network's place (Method.shipped_module): export reads it here.
        "shipped_modules": {n: tr.method.shipped_module for n in tr.method.feature_modules
                            if getattr(tr.method, "shipped_module", None)},
        "scaler": tr.precision.scaler.state_dict(),
        "switch_totals": dict(tr.meters.totals),
        "meters": tr.meters.state_dict(),
        "logs": tr.rundir.logs.tell(),
        "world_size": tr.dist.world_size,
        "rng": rng_state(),
        "history": tr.history,
        "best": tr.best,
        "best_score": tr.best_score,
        "data": {"name": tr.data.name, "classes": list(tr.data.class_names), "mean": list(tr.data.mean),
                 "std": list(tr.data.std), "in_chans": tr.data.in_chans, "image_size": tr.data.image_size,
                 "num_classes": tr.data.num_classes},
    }


def load_networks(tr: "Trainer", ckpt: dict[str, Any], path: str | Path, optimizers: bool = True) -> None:
    """Every network's weights (and optimizer, with ``optimizers``) from the checkpoint, whose networks must be
    the config's."""
    if set(ckpt["networks"]) != set(tr.networks):
        raise CheckpointError(f"{path}: networks {sorted(ckpt['networks'])} differ from the config's {sorted(tr.networks)}")
    for n, net in tr.networks.items():
        s = ckpt["networks"][n]
        load_weights(net.model, s["model"], f"{path}, network {n!r}")
        if optimizers and net.optimizer is not None:
            net.optimizer.load_state_dict(s["optimizer"])
    # The method's own modules: to resume, and to evaluate what a network ships (PCL's temporal mean).
    saved = ckpt.get("method_modules", {})
    matches = set(saved) == set(tr.method.feature_modules)
    if optimizers and not matches:
        raise CheckpointError(f"{path}: the method's modules serve {sorted(saved) or 'no network'}, this run's "
                              f"{sorted(tr.method.feature_modules) or 'none'}: another method or feature loss")
    if matches:
        for n, m in tr.method.feature_modules.items():
            m.load_state_dict(saved[n])


def restore(tr: "Trainer", ckpt: dict[str, Any], path: str | Path = "checkpoint") -> None:
    """Restore a state from ``training_state`` (or a v1 checkpoint, which continues at its epoch's end)."""
    try:
        load_networks(tr, ckpt, path)
        tr.precision.scaler.load_state_dict(ckpt["scaler"])
        tr.epoch, tr.step = ckpt["epoch"], ckpt["step"]
        loader = ckpt.get("loader", {})
        tr.batch, tr.epoch_time, tr.epoch_images = (loader.get("batch", 0), loader.get("train_time_s", 0.0),
                                                         loader.get("images", 0))
        tr.meters.load_state_dict(ckpt.get("meters", {}), ckpt["switch_totals"], tr.device)
        tr.log_offsets = ckpt.get("logs")
        tr.history, tr.best = list(ckpt["history"]), dict(ckpt["best"])
        tr.best_score = ckpt.get("best_score", -1.0)
        set_rng_state(ckpt["rng"])
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
        raise CheckpointError(f"{path}: malformed training state ({type(e).__name__}: {e})") from None
    saved_world = ckpt.get("world_size", 1)
    if saved_world != tr.dist.world_size:
        if tr.batch:
            raise CheckpointError(
                f"{path} was written by {saved_world} process(es) in the middle of epoch {tr.epoch + 1}; "
                f"resume it with {saved_world}, or resume from a checkpoint written at an epoch's end with any number")
        # At an epoch's end the global batch may change: the step count follows the new batches per epoch.
        tr.step = tr.epoch * len(tr.train_loader)
    if not 0 <= tr.batch < max(len(tr.train_loader), 1):
        raise CheckpointError(f"{path}: its position (batch {tr.batch}) is outside this data set's "
                              f"{len(tr.train_loader)} batches per epoch; data or batch size changed")


def best_split(tr: "Trainer") -> str:
    """The split "best" is chosen on: ``"val"`` with a validation split, else ``"test"`` (a test-set maximum)."""
    return "val" if getattr(tr, "val_loader", None) is not None else "test"


def update_best(tr: "Trainer", chosen_on: dict[str, dict[str, float]],
                test: dict[str, dict[str, float]] | None = None) -> bool:
    """Record each network's best epoch, judged on ``chosen_on`` (the validation results, or the test results
    without a validation split); true when the students' mean accuracy there is a new best (best.pt).

    Each network's entry keeps the test accuracy of that epoch (``acc``; None when that epoch did not read the
    test split) and, with validation, its validation accuracy (``val_acc``), which is what is compared.
    """
    on_val = best_split(tr) == "val"
    test = chosen_on if test is None and not on_val else test
    key = "val_acc" if on_val else "acc"
    for n, r in chosen_on.items():
        if r["acc"] > tr.best.get(n, {key: -1.0}).get(key, -1.0):
            # acc None: the chosen epoch did not read the test split (train.eval_test=last)
            tr.best[n] = {"acc": test[n]["acc"] if test else None, "epoch": tr.epoch,
                          **({"val_acc": r["acc"]} if on_val else {})}
    roles = {n: "student" for n in tr.method.students}
    score = students_mean({n: r["acc"] for n, r in chosen_on.items()}, roles)
    if score > tr.best_score:
        tr.best_score = score
        return True
    return False


def build_report(tr: "Trainer") -> dict[str, Any]:
    """Last-epoch and best-epoch accuracy of each network, and the switching shares of the run (report.json)."""
    last = next((h["test"] for h in reversed(tr.history) if "test" in h), {})
    last_val = next((h["val"] for h in reversed(tr.history) if "val" in h), {})
    on = best_split(tr)
    nets = {n: {"model": net.cfg.model, "role": net.cfg.role,
                "last_acc": last.get(n, {}).get("acc"),
                "best_acc": tr.best.get(n, {}).get("acc"), "best_epoch": tr.best.get(n, {}).get("epoch"),
                **({"last_val_acc": last_val.get(n, {}).get("acc"), "best_val_acc": tr.best.get(n, {}).get("val_acc")}
                   if on == "val" else {}),
                # a branched network: each branch's and the branches' ensemble's accuracy; "last_acc" is the deployed
                **({"last_parts": last[n]["parts"]} if "parts" in last.get(n, {}) else {})}
            for n, net in tr.networks.items()}
    train_time = sum(h["train_time_s"] for h in tr.history)
    wall_time = sum(h.get("epoch_time_s", h["train_time_s"]) for h in tr.history)
    images = sum(h.get("images_per_s", 0.0) * h["train_time_s"] for h in tr.history)
    return {"method": tr.cfg.method.label or tr.method.label(tr.cfg.method.name), "dataset": tr.data.name, "epochs": tr.epoch,
            "precision": tr.precision.name, "networks": nets,
            # "val": best_acc is the test accuracy at the epoch chosen on validation; "test": a test-set maximum.
            "best_chosen_on": on, "recipe": tr.method.recipe.as_dict() if hasattr(tr.method, "recipe") else None, **shares(dict(tr.meters.totals)),
            "switch_stats": pair_means(tr.history), "train_time_s": train_time, "wall_time_s": wall_time,
            "images_per_s": images / max(train_time, 1e-9), "processes": tr.dist.world_size,
            **({"conditions": tr.conditions.describe()} if tr.conditions.lines else {}),
            **({"memorisation": tr.history[-1]["memorisation"]}
               if tr.history and "memorisation" in tr.history[-1] else {}),
            **({"teacher_cache": {n: {"path": str(c.path), "batches_read": c.hits, "batches_computed": c.misses}
                                  for n, c in tr.caches.items()}} if getattr(tr, "caches", None) else {}),
            "run_dir": str(tr.rundir.path) if tr.rundir.path else None}


def from_checkpoint(cls: type, path: str | Path, overrides, data, *, evaluate_only: bool,
                    resumable: tuple[str, ...] = RESUMABLE_OVERRIDES) -> "Trainer":
    """``Trainer.from_checkpoint``: the config from the checkpoint with ``overrides``, then the whole state
    (to continue) or the networks' weights alone (``evaluate_only``)."""
    path = resolve_resume_path(path)
    ckpt = load_training_checkpoint(path)
    tree = ckpt["config"]
    for o in overrides:
        key = o.split("=", 1)[0].strip()
        if not evaluate_only and key not in resumable:
            raise C.ConfigError(f"override {key!r} cannot change on --resume (allowed: {', '.join(resumable)})")
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
    load_networks(trainer, ckpt, path, optimizers=False)
    trainer.epoch = ckpt["epoch"]
    return trainer
