"""What a race writes: its decisions, the ranking of the arms that finished (on test, paired by seed against
DML and KD where they ran), each stopped trial's curve up to its stop, the compute each trial spent, and the
winner (chosen on validation) with its checkpoint.

Everything is read back from the study (``optuna.load_study`` sees the same), so any process can write it, and
writing it again gives the same files.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from ..errors import ReportError
from ..runs import files as F
from ..runs.stats import fmt, mean_std
from .schedule import schedule


def _state(t: Any) -> str:
    return t.state.name.lower()


def _students_last(report: dict[str, Any]) -> float | None:
    nets = report.get("networks", {})
    return F.students_mean({n: v.get("last_acc") for n, v in nets.items()},
                           {n: v.get("role", "") for n, v in nets.items()})


REFERENCES = ("dml", "kd")  # the arms every other is paired against by default: the online and offline baselines


def collect(study: Any, references: Sequence[str] = REFERENCES) -> dict[str, Any]:
    """The race as plain data (``race.json``): its definition, decisions, trials, ranking (each arm paired by
    seed against the ``references`` that finished) and winner."""
    d = study.definition()
    trials = study.trials()
    sch = schedule(study.views(trials, d.rungs), d.rungs, d.eta, d.protected)
    rows = []
    for t in trials:
        summary = t.user_attrs.get("summary", {})
        report = t.user_attrs.get("report", {})
        rows.append({"number": t.number, "arm": t.params.get("arm"), "seed": t.params.get("seed"),
                     "kind": t.user_attrs.get("kind", "arm"), "run": t.user_attrs.get("run"), "state": _state(t),
                     "params": {k: v for k, v in t.params.items() if k not in ("arm", "seed")},
                     "stopped_at": sch.pruned.get(t.number) or (max(t.intermediate_values, default=None)
                                                                if t.state.name == "PRUNED" else None),
                     "val": t.value, "test": _students_last(report) if report else None,
                     "best_chosen_on": report.get("best_chosen_on"),
                     "curve": summary.get("curve", []), "epochs_trained": summary.get("epochs", 0),
                     "images": summary.get("images", 0), "wall_time_s": summary.get("wall_time_s", 0.0),
                     "train_time_s": summary.get("train_time_s", 0.0),
                     "teacher_steps_saved": summary.get("teacher_steps_saved", {}),
                     "error": t.user_attrs.get("error")})
    arms = [a for a in d.arms]
    finished = {a: [r for r in rows if r["arm"] == a and r["kind"] == "arm"] for a in arms}
    finished = {a: rs for a, rs in finished.items() if rs and all(r["state"] == "complete" for r in rs)}
    ranking = []
    for a, rs in finished.items():
        test = [r["test"] for r in rs if r["test"] is not None]
        val = [r["val"] for r in rs if r["val"] is not None]
        ranking.append({"arm": a, "seeds": len(rs), "test": test, "val": val,
                        "test_mean": mean_std(test)[0] if test else None,
                        "vs": {ref: _paired(rs, finished[ref]) for ref in references if ref in finished and ref != a}})
    ranking.sort(key=lambda r: -(r["test_mean"] if r["test_mean"] is not None else -1.0))
    winner = None
    if finished:
        best_arm = max(finished, key=lambda a: (sum(r["val"] or 0.0 for r in finished[a]) / len(finished[a]),
                                                -arms.index(a)))
        best_run = max(finished[best_arm], key=lambda r: (r["val"] or 0.0, -r["seed"]))
        winner = {"arm": best_arm, "seed": best_run["seed"], "run": best_run["run"], "val": best_run["val"],
                  "test": best_run["test"], "chosen_on": "validation (the arm's mean over its seeds, then its seed's)"}
    decisions = [{"epoch": x.rung, "scores": x.scores, "kept": x.kept, "stopped": x.stopped} for x in sch.decisions]
    totals = {"images": sum(r["images"] for r in rows), "wall_time_s": sum(r["wall_time_s"] for r in rows),
              "train_time_s": sum(r["train_time_s"] for r in rows),
              "epochs_trained": sum(r["epochs_trained"] for r in rows)}
    return {"definition": d.as_dict(), "done": sch.done, "decisions": decisions, "trials": rows,
            "ranking": ranking, "references": list(references), "winner": winner, "totals": totals}


def _paired(ours: Sequence[dict[str, Any]], theirs: Sequence[dict[str, Any]]) -> list[float]:
    """Per shared seed, ours − theirs on test."""
    by_seed = {r["seed"]: r["test"] for r in theirs if r["test"] is not None}
    return [r["test"] - by_seed[r["seed"]] for r in ours if r["test"] is not None and r["seed"] in by_seed]


def _cell(values: Sequence[float], sign: bool = False) -> str:
    return fmt(list(values), sign=sign) if values else "—"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def markdown(data: dict[str, Any], header: Sequence[str] = ()) -> str:
    """``race.md``: decisions, ranking, winner, stopped trials' curves and the compute each trial spent."""
    d = data["definition"]
    refs = data.get("references", list(REFERENCES))
    out = [*header, f"- rungs at epochs {d['rungs']}, eta {d['eta']:g}: each rung keeps the top 1/eta of the arms by "
           "the mean over their seeds of the students' validation accuracy; the test split is read for reporting only",
           f"- {'finished' if data['done'] else 'in progress'}; compute: {data['totals']['images']:,} training images "
           f"seen, {data['totals']['epochs_trained']} epochs, {data['totals']['wall_time_s'] / 3600:.2f} h of run time "
           "(training and evaluation, summed over trials)", ""]
    if data["decisions"]:
        out += ["## Decisions", "", "| rung (epoch) | arm | mean val acc (%) | |", "|---:|---|---:|---|"]
        for x in data["decisions"]:
            for arm, score in sorted(x["scores"].items(), key=lambda kv: -kv[1]):
                out.append(f"| {x['epoch']} | {arm} | {score:.2f} | {'kept' if arm in x['kept'] else 'stopped'} |")
        out.append("")
    out += ["## Ranking of the arms that finished (students' last-epoch test accuracy, mean ± std over seeds)", "",
            f"| arm | seeds | test acc (%) | val acc (%) | {' | '.join(f'− {r} (paired)' for r in refs)} |",
            "|---|---:|---:|---:|" + "---:|" * len(refs)]
    for r in data["ranking"]:
        vs = {k: _cell(v, sign=True) for k, v in r["vs"].items()}
        out.append(f"| {r['arm']} | {r['seeds']} | {_cell(r['test'])} | {_cell(r['val'])} | "
                   + "".join(f"{vs.get(ref, '—')} | " for ref in refs).rstrip())
    w = data["winner"]
    if w:
        out += ["", f"**Winner (chosen on validation): {w['arm']}**, seed {w['seed']}: val {w['val']:.2f}%, test "
                    f"{w['test']:.2f}%; its checkpoint is `{Path(d['out']) / 'winner.pt'}` (for `switokd export "
                    "--checkpoint`)."]
    stopped = [r for r in data["trials"] if r["state"] == "pruned"]
    if stopped:
        out += ["", "## Stopped trials: their curves up to the stop (students' mean accuracy, %)", "",
                "| trial | stopped at epoch | curve (epoch: val / test; — where the rung read validation only) |",
                "|---|---:|---|"]
        for r in stopped:
            curve = ", ".join(f"{p['epoch']}: {_pct(p.get('val'))} / {_pct(p.get('test'))}" for p in r["curve"])
            out.append(f"| {r['run']} | {r['stopped_at']} | {curve} |")
    out += ["", "## Compute per trial", "", "| trial | state | epochs | images | run time (s) | teacher steps saved |",
            "|---|---|---:|---:|---:|---:|"]
    for r in data["trials"]:
        saved = ", ".join(f"{k} {v}" for k, v in r["teacher_steps_saved"].items() if v) or "—"
        out.append(f"| {r['run']} | {r['state']}{' (' + r['error'] + ')' if r['error'] else ''} | {r['epochs_trained']} | "
                   f"{r['images']:,} | {r['wall_time_s']:.0f} | {saved} |")
    return "\n".join(out) + "\n"


def header(kind: str, config: str | Path | None, methods: Sequence[str], seeds: Sequence[int], command: str,
           threads: int = 0) -> list[str]:
    """The first lines of ``race.md`` and of a sweep's ``results.md``: what ran, the command, machine and date."""
    import time
    from ..train.runinfo import machine_summary
    lines = [f"# {kind}: {Path(config).name if config else 'defaults'}, methods {', '.join(methods)}, seeds "
             f"{', '.join(map(str, seeds))}", ""]
    if command:
        lines.append(f"- command: `{command}`")
    return [*lines, f"- machine: {machine_summary(threads=threads or None)}", f"- date: {time.strftime('%Y-%m-%d')}"]


def write(study: Any, out: Path, header: Sequence[str] = ()) -> dict[str, Any]:
    """Write ``race.json``, ``race.md`` and (once there is one) ``winner.pt`` with ``winner.json`` into ``out``.

    A finished race whose winner's checkpoint is gone (and not already copied to ``winner.pt``) is a
    ``ReportError``, and nothing is written: ``race.md`` names ``winner.pt``."""
    data = collect(study)
    w = data["winner"]
    src = None
    if w and data["done"]:
        run = Path(data["definition"]["out"]) / w["run"]
        src = run / F.BEST if (run / F.BEST).is_file() else run / F.LAST
        if not src.is_file():
            kept = out / "winner.json"
            same = (kept.is_file() and (out / "winner.pt").is_file()
                    and json.loads(kept.read_text()).get("run") == w["run"])
            if not same:
                raise ReportError(f"race: the winner {w['run']} has no checkpoint in {run} (moved or deleted?); put "
                                  "the run directory back, or race again into another --out")
            src = None  # winner.pt holds it already
    out.mkdir(parents=True, exist_ok=True)
    F.write_atomic(out / "race.json", json.dumps(data, indent=1))
    F.write_atomic(out / "race.md", markdown(data, header))
    if src is not None:
        F.write_atomic(out / "winner.pt", src.read_bytes())
        F.write_atomic(out / "winner.json", json.dumps({**w, "checkpoint": str(out / "winner.pt"), "from": str(src)}, indent=1))
    return data


__all__ = ["collect", "markdown", "write", "header"]
