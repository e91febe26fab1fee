"""A seeded grid of methods on one config: ``switokd sweep``.

Every run is an ordinary training run in ``OUT/<method>-seed<k>/``. The grid is resumable:
a run whose ``report.json`` says it finished is skipped, a run with a checkpoint continues
from it, and the tables are rewritten after every run, so a stopped sweep keeps what finished.
Offline KD needs a teacher trained alone: the sweep trains it once per seed, or reuses the
seed's ``vanilla`` run (whose teacher learns from the labels alone).
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Callable, Sequence

from . import config as C
from .runs import analysis
from .runs.files import read_run
from .runs.report import write_report
from .runs.stats import fmt, group_by, mean_std, verdict
from .errors import ReportError
from .runs import files as F

from .race.plan import TEACHER_RUN, plan


class SweepReports(list):
    """The reports of a sweep's finished runs (a list), and ``missing``: the planned runs that did not finish."""

    def __init__(self, reports: Sequence[dict[str, Any]], missing: Sequence[str] = ()) -> None:
        super().__init__(reports)
        self.missing = list(missing)


def run_state(run_dir: Path, epochs: int) -> str:
    """``done`` (report.json with all epochs), ``partial`` (a checkpoint to continue) or ``new``."""
    report = run_dir / F.REPORT
    if report.is_file():
        try:
            if json.loads(report.read_text()).get("epochs") == epochs:
                return "done"
        except (OSError, ValueError):
            pass
    return "partial" if (run_dir / F.LAST).is_file() else "new"


def group_by_method(reports: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The runs' reports per method, in the order the methods first appear."""
    return group_by(reports, lambda r: r["method"])


def chosen_on(reports: Sequence[dict[str, Any]]) -> str:
    """``"val"`` when every report chose its best epoch on a validation split, else ``"test"``."""
    return "val" if reports and all(r.get("best_chosen_on") == "val" for r in reports) else "test"


def results_table(reports: Sequence[dict[str, Any]]) -> str:
    """Markdown: per method and network, mean ± std over seeds of last/best test accuracy (and validation
    accuracy where the runs have a validation split), shares and time."""
    by_method = group_by_method(reports)
    val = chosen_on(reports) == "val"
    best_head = "best-epoch acc, chosen on val (%)" if val else "best-epoch acc, test maximum (%)"
    rows = [f"| method | network | model | seeds | last-epoch acc (%) | {best_head} | "
            + ("last-epoch val acc (%) | " if val else "")
            + "expert share (%) | paused share (%) | wall time (s) |",
            "|---|---|---|---:|---:|---:|" + ("---:|" if val else "") + "---:|---:|---:|"]
    known = lambda xs: fmt(xs) if None not in xs else "–"  # noqa: E731  (None: not measured at that epoch)
    for method, runs in by_method.items():
        for net, info in runs[0]["networks"].items():
            last = [r["networks"][net]["last_acc"] for r in runs]
            best = [r["networks"][net]["best_acc"] for r in runs]
            expert = network_share(runs, "expert_share", lambda p: p.split("->")[info["role"] == "student"] == net)
            paused = network_share(runs, "paused_share", lambda t: t == net)
            wall = [r.get("wall_time_s", r["train_time_s"]) for r in runs]
            last_val = ([r["networks"][net].get("last_val_acc") for r in runs] if val else [])
            rows.append(f"| {method} | {net} | {info['model']} | {len(runs)} | {fmt(last)} | {known(best)} | "
                        + (f"{known(last_val)} | " if val else "")
                        + f"{expert} | {paused} | {fmt(wall, 0)} |")
    return "\n".join(rows)


def comparison_table(reports: Sequence[dict[str, Any]], reference: str = "switokd") -> str:
    """``reference``'s students against each other method's: difference of the mean last-epoch accuracy, and a
    verdict ("" without that method). A difference within one standard deviation (the larger of the two
    methods') is a tie."""
    by_method = group_by_method(reports)
    if reference not in by_method:
        return ""
    ours = by_method[reference]
    students = [n for n, i in ours[0]["networks"].items() if i["role"] == "student"]
    rows = [f"| student | {reference} (%) | against | theirs (%) | difference | verdict |", "|---|---:|---|---:|---:|---|"]
    for net in students:
        m1, s1 = mean_std([r["networks"][net]["last_acc"] for r in ours])
        for method, runs in by_method.items():
            if method == reference or net not in runs[0]["networks"]:
                continue
            m2, s2 = mean_std([r["networks"][net]["last_acc"] for r in runs])
            v = verdict((m1, s1), (m2, s2))
            rows.append(f"| {net} | {m1:.2f} ± {s1:.2f} | {method} | {m2:.2f} ± {s2:.2f} | {m1 - m2:+.2f} | "
                        f"{v if v == 'tie' else reference + ' ' + v} |")
    return "\n".join(rows)


def network_share(runs: Sequence[dict[str, Any]], key: str, mine: Callable[[str], bool]) -> str:
    """Mean ± std over seeds of the run-level share, averaged over this network's pairs; '-' if it has none."""
    vals = []
    for r in runs:
        own = [v for k, v in r.get(key, {}).items() if mine(k)]
        if own:
            vals.append(statistics.fmean(own))
    return fmt(vals, 1, 100.0) if vals else "-"


def write_results(out: Path, reports: Sequence[dict[str, Any]], header: Sequence[str], reference: str = "switokd") -> Path:
    """``results.md`` (the table, and ``reference`` against the others) and ``results.json`` (every run's report)
    in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(list(reports), indent=2))
    precisions = sorted({r.get("precision", "?") for r in reports})
    parts = [*header, f"- precision: {', '.join(precisions)}", "", results_table(reports), ""]
    cmp = comparison_table(reports, reference)
    if cmp:
        parts += [f"{reference}'s students against the other methods' (last epoch; within one standard deviation = "
                  "tie):", "", cmp, ""]
    parts += log_tables(out, reports, reference)
    text = "\n".join(parts)
    path = out / "results.md"
    path.write_text(text)
    return path


def log_tables(out: Path, reports: Sequence[dict[str, Any]], reference: str = "switokd") -> list[str]:
    """The tables drawn from the runs' own logs (``OUT/<run>/epochs.jsonl``): ``reference`` against each method
    paired by seed, the training curves (peak, last, plateau, memorisation, drift) and when each switch fired."""
    by_method: dict[str, list[Any]] = {}
    seeds: dict[str, int] = {}
    for r in reports:
        try:
            logs = read_run(out / r["run"])
        except ReportError:
            return []  # a results folder without the runs' logs: the tables above are all it can give
        by_method.setdefault(r["method"], []).append(logs)
        seeds[logs.name] = r["seed"]
    parts = []
    paired = analysis.paired_table(by_method, lambda run: seeds[run.name], reference)
    if paired:
        parts += [f"{reference}'s students minus each other method's, paired by seed (last epoch, points):", "",
                  paired, ""]
    parts += ["Training curves (test accuracy at the evaluated epochs; the last-quarter change is max − min over the "
              "evaluations in the last quarter of the epochs; mean ± std over seeds):", "",
              analysis.curve_table(by_method), ""]
    switch = analysis.switch_table([run for runs in by_method.values() for run in runs])
    if switch:
        parts += ["The switch, run by run (ρ: the share of the teacher's off-label probability that the student "
                  "shares; with d_T < d_S the teacher pauses when G > δ, which at τ = 1 is ρ < ε plus the "
                  "student's lead):", "", switch, ""]
    return parts


def sweep(cfg_path: str | Path | None, methods: Sequence[str], seeds: Sequence[int], out: str | Path,
          overrides: Sequence[str] = (), *, command: str = "", report: bool = True,
          log: Callable[[str], None] = print, workers: int = 1, storage: str | None = None) -> SweepReports:
    """Run (or continue) the grid and write its results; returns the reports of the grid's finished runs, with
    ``missing`` naming the runs that did not finish (diverged or failed).

    The race's engine with one rung, the last epoch: every run trains to the end (``switokd.race``). With
    ``workers`` > 1 the runs share a study in ``storage`` (default: a journal file in ``out``) and run that many
    at a time; the tables are then written when they all have finished (with one worker, after every run).
    """
    from .race import RaceSpec, race

    out = Path(out)
    specs = [s for s in plan(cfg_path, methods, seeds, overrides, out) if not s.name.startswith(TEACHER_RUN)]
    from .race import results as R
    base = C.load_config(cfg_path, list(overrides))
    val = base.data.val_split > 0
    header = [*R.header("Sweep", cfg_path, methods, seeds, command, base.train.threads),  # the runs' threads
               "- accuracy: top-1 % on the test split; mean ± sample std over seeds. "
               + ("The best epoch is chosen on the validation split (data.val_split), and its test accuracy is "
                  "reported." if val else "The best epoch is chosen on the test split (no data.val_split), so it is "
                  "optimistic; the last epoch is the honest figure."),
               "- expert share: steps with the pair in expert mode; paused share: steps a teacher took no step"]

    def finished_reports() -> list[dict[str, Any]]:
        reports = []
        for spec in specs:  # in the plan's order
            path = out / spec.name / F.REPORT
            if run_state(out / spec.name, C.load_config(cfg_path, list(spec.overrides)).train.epochs) == "done":
                reports.append({**json.loads(path.read_text()), "seed": spec.seed, "run": spec.name})
        return reports

    result = race(RaceSpec(cfg_path, methods, seeds, out, overrides, prune=False), workers=workers, storage=storage,
                  command=command, log=log, on_trial_complete=lambda trial: write_results(out, finished_reports(), header))
    reports = finished_reports()
    missing = [s.name for s in specs if s.name not in {r["run"] for r in reports}]
    if missing:
        errors = {t["run"]: t.get("error") for t in result.data.get("trials", [])}
        log(f"sweep: {len(missing)} run(s) did not finish: "
            + "; ".join(f"{m} ({errors.get(m) or 'not run'})" for m in missing))
    if reports:
        write_results(out, reports, header)
    if report and reports:
        try:
            write_report([out / r["run"] for r in reports], out / F.REPORT_DIR)
        except ReportError as e:  # matplotlib missing: the tables are written all the same
            log(f"sweep: no report: {e}")
    return SweepReports(reports, missing)
