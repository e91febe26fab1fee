"""``switokd status RUN_DIR...``: where a run stands, read from its files only (also while it runs, and on a run
copied from another machine).

A run's files: ``config.yaml`` (always, from its start), ``status.json`` (running, finished, stopped or
diverged, with the process id and host), ``steps.jsonl`` and ``epochs.jsonl`` (the logs), ``report.json`` (at
the end) and ``last.pt``/``best.pt`` (checkpoints). Nothing is loaded but JSON and YAML.
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import yaml

from ..errors import ReportError
from .stats import fmt_duration
from .files import RUN_STATE, read_jsonl
from . import files as F


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _rows(path: Path) -> list[dict[str, Any]]:
    """A JSONL log's rows; a last line cut short by a running writer is left out."""
    if not path.is_file():
        return []
    try:
        return read_jsonl(path)
    except ValueError:
        lines = path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines[:-1] if line.strip()]


def run_state(run: Path, status: dict[str, Any] | None, report: dict[str, Any] | None, epochs: int | None) -> str:
    """running, finished, stopped or diverged, with what tells so."""
    if status is None:
        if report is not None and report.get("epochs") == epochs:
            return "finished"
        newest = max((p.stat().st_mtime for p in run.iterdir() if p.is_file()), default=None)
        age = f"; files last written {fmt_duration(time.time() - newest)} ago" if newest else ""
        return f"unknown (no {RUN_STATE}: a run of an older switokd, or one that has not started{age})"
    state = status.get("state", "unknown")
    if state == "running":
        host, pid = status.get("host"), status.get("pid")
        if host == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid):
            return f"stopped (its process {pid} is gone without a word: killed, or the machine restarted)"
        where = "" if host == socket.gethostname() else f" on {host} (as this copy says; it cannot be checked here)"
        newest = max(p.stat().st_mtime for p in (run / RUN_STATE, run / F.STEPS, run / F.EPOCHS)
                     if p.is_file())
        return f"running{where}, last log written {fmt_duration(time.time() - newest)} ago"
    if state in ("stopped", "diverged") and status.get("reason"):
        return f"{state}: {status['reason']}"
    return state


def run_status(path: str | Path) -> dict[str, Any]:
    """What ``switokd status`` shows of one run, as plain data; ``ReportError`` if ``path`` is not a run."""
    run = Path(path)
    if not run.is_dir():
        raise ReportError(f"{run} is not a run directory")
    if not (run / F.CONFIG).is_file():
        raise ReportError(f"{run} is not a switokd run directory (no config.yaml)")
    try:
        cfg = yaml.safe_load((run / F.CONFIG).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ReportError(f"{run}/config.yaml cannot be read ({e})") from None
    epochs_total = (cfg.get("train") or {}).get("epochs")
    steps, epochs = _rows(run / F.STEPS), _rows(run / F.EPOCHS)
    status, report = _read_json(run / RUN_STATE), _read_json(run / F.REPORT)
    out: dict[str, Any] = {"run": str(run), "method": (cfg.get("method") or {}).get("name"),
                           "state": run_state(run, status, report, epochs_total), "epochs": epochs_total}
    last_step = steps[-1] if steps else None
    done = epochs[-1]["epoch"] if epochs else 0  # epochs completed
    out["step"] = max([r["step"] for r in steps[-1:]] + [sum(e.get("steps", 0) for e in epochs)]
                      + [status.get("step", 0) if status else 0])
    finished_epoch = sum(e.get("steps", 0) for e in epochs)
    out["epoch"], out["epoch_done"] = (done, True) if done and out["step"] <= finished_epoch else (done + 1, False)
    out["images_per_s"] = (last_step or (epochs[-1] if epochs else {})).get("images_per_s")
    out["eta_s"] = _eta(epochs, out["step"], epochs_total, status or {}, out["images_per_s"])
    for split in ("val", "test"):
        tested = next((e for e in reversed(epochs) if split in e), None)
        if tested:
            out[split] = {"epoch": tested["epoch"], **{n: r["acc"] for n, r in tested[split].items()}}
            parts = {n: r["parts"] for n, r in tested[split].items() if r.get("parts")}  # a branch network's
            if parts:
                out[split + "_parts"] = parts
    out["pairs"] = _pairs(_pair_rows(steps, epochs))
    for name in (F.LAST, F.BEST):
        p = run / name
        if p.is_file():
            out[name] = {"path": str(p), "age_s": time.time() - p.stat().st_mtime}
    return out


def _eta(epochs: list[dict[str, Any]], step: int, total_epochs: int | None, status: dict[str, Any],
         images_per_s: float | None) -> float | None:
    """Seconds left: the remaining steps at the last epoch's pace and its evaluation time per epoch left; in the
    first epoch, the remaining steps at the last logged images/s (status.json gives the steps and batch)."""
    per_epoch = (epochs[-1].get("steps") if epochs else None) or status.get("steps_per_epoch")
    if not per_epoch or not total_epochs:
        return None
    left_steps = max(total_epochs * per_epoch - step, 0)
    if epochs:
        last = epochs[-1]
        per_step = last["train_time_s"] / max(last.get("steps") or per_epoch, 1)
        extra = max(last.get("epoch_time_s", last["train_time_s"]) - last["train_time_s"], 0.0)
        return left_steps * per_step + extra * max(total_epochs - last["epoch"], 0)
    if images_per_s and status.get("global_batch"):
        return left_steps * status["global_batch"] / images_per_s
    return None


def _pair_rows(steps: list[dict[str, Any]], epochs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The log that reaches furthest, as rows of (step, pair statistics, expert share): the steps log, or the
    epochs log where it ends later (a run shorter than ``train.log_interval`` writes no step row)."""
    rows, step = [], 0
    for e in epochs:
        step += e.get("steps", 0)
        rows.append({"step": step, "pair": e.get("train", {}).get("pair", {}),
                     "expert_share": e.get("switch", {}).get("expert_share", {})})
    return rows if rows and (not steps or rows[-1]["step"] > steps[-1]["step"]) else steps


def _pairs(steps: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Each pair's last G, δ, ε and ρ, and its expert share over the logged steps so far."""
    out: dict[str, dict[str, float]] = {}
    prev = 0
    weighted: dict[str, float] = {}
    for r in steps:
        n = r["step"] - prev
        prev = r["step"]
        for p, share in r.get("expert_share", {}).items():
            weighted[p] = weighted.get(p, 0.0) + n * share
    for p, stats in (steps[-1].get("pair", {}) if steps else {}).items():
        out[p] = {k: stats[k] for k in ("gap", "threshold", "epsilon", "shared_ratio") if k in stats}
        out[p]["expert_share"] = weighted.get(p, 0.0) / max(prev, 1)
    return out


def status_lines(s: dict[str, Any]) -> list[str]:
    """One block of text for a run."""
    lines = [f"{s['run']}  ({s['method']})", f"  state      {s['state']}"]
    where = (f"epoch {s['epoch']}/{s['epochs']} done" if s["epoch_done"] else f"in epoch {s['epoch']}/{s['epochs']}")
    where += f", step {s['step']}"
    if s.get("images_per_s"):
        where += f", {s['images_per_s']:.0f} img/s (all processes, training time)"
    if s.get("eta_s") is not None and s["state"].startswith("running"):
        where += f", ETA {fmt_duration(s['eta_s'])}"
    elif s.get("eta_s") is not None and s["state"].startswith("stopped"):
        where += f", about {fmt_duration(s['eta_s'])} left if resumed"
    lines.append(f"  progress   {where}")
    for split, label in (("val", "val acc "), ("test", "test acc")):
        if split in s:
            t = dict(s[split])
            parts = s.get(split + "_parts", {})
            lines.append(f"  {label}   epoch {t.pop('epoch')}: " + "  ".join(
                f"{n} {a:.2f}%" + (" (" + ", ".join(f"{k} {v:.2f}" for k, v in parts[n].items()) + ")"
                                   if n in parts else "") for n, a in t.items()))
    for p, v in s["pairs"].items():
        lines.append(f"  switch     {p}: G {v['gap']:.3f}  delta {v['threshold']:.3f}  eps {v['epsilon']:.2f}  "
                     f"rho {v['shared_ratio']:.2f}  expert {v['expert_share']:.1%} of the steps so far")
    ck = [f"{n} ({fmt_duration(s[n]['age_s'])} ago)" for n in (F.LAST, F.BEST) if n in s]
    lines.append("  checkpoint " + (", ".join(ck) + f" in {s['run']}" if ck else "none yet"))
    return lines
