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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from . import config as C
from .runs import analysis
from .runs.files import read_run
from .runs.report import write_report
from .runs.stats import fmt, group_by, mean_std, verdict  # noqa: F401  (mean_std, verdict: re-exported)
from .errors import ReportError
from .runs import files as F

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
    ``+dist``) or ``+ls`` (logit standardization); ``@key=value`` pairs set ``method.*`` keys (``@tau=2,
    kl_weight=9``). The label, the part before ``@``, names the runs (``dml+dkd-seed0``) and the column.

    Example:
        >>> parse_method("kd+ls@tau=2,ce_weight=0.1")
        ('kd+ls', 'kd', ('method.name=kd', 'method.logit_std=true', 'method.tau=2', 'method.ce_weight=0.1', 'method.label=kd+ls'))
    """
    from .methods import LOSSES

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
        else:
            raise C.ConfigError(f"sweep: method entry {entry!r}: {mod!r} is neither a distillation loss "
                                f"({', '.join(LOSSES.names())}) nor 'ls'")
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
    (``kd``, ``dkd``, ``dist`` and their variants: frozen teachers trained alone)."""
    from .methods import resolve_method

    base = C.load_config(cfg_path, list(overrides))
    teachers = [n.name for n in base.networks if n.role == "teacher"]
    parsed = [parse_method(m) for m in methods]
    offline = {}
    for label, name, over in parsed:
        try:
            factory = resolve_method(name)
        except KeyError as e:
            raise C.ConfigError(f"sweep: {e.args[0]}") from None
        offline[label] = bool(getattr(factory, "offline", False))
        C.load_config(cfg_path, [*overrides, *over])  # a bad variant fails before any run starts
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
                        only = "[" + ", ".join(_net_yaml(base, t) for t in teachers) + "]"
                        specs.append(RunSpec(f"{TEACHER_RUN}-seed{seed}", "vanilla", seed,
                                             (*common, f"networks={only}", "method.name=vanilla",
                                              f"train.run_name={TEACHER_RUN}-seed{seed}")))
                        trained = True
                extra = tuple(f"networks.{t}.checkpoint={source}" for t in teachers)
            run = f"{label}-seed{seed}"
            specs.append(RunSpec(run, label, seed, (*common, *over, f"train.run_name={run}", *extra)))
    return specs


def _net_yaml(cfg: C.Config, name: str) -> str:
    return json.dumps(C.to_dict(cfg)["networks"][[n.name for n in cfg.networks].index(name)])


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


def run_one(cfg_path: str | Path | None, spec: RunSpec, out: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """Run, continue or skip one run of the grid; returns its report."""
    from .train.checkpoint import load_training_checkpoint
    from .train.trainer import Trainer

    cfg = C.load_config(cfg_path, list(spec.overrides))
    run_dir = out / spec.name
    state = run_state(run_dir, cfg.train.epochs)
    if state == "done":
        log(f"sweep: {spec.name}: finished earlier, skipped")
        return json.loads((run_dir / F.REPORT).read_text())
    if state == "partial":
        saved = load_training_checkpoint(run_dir / F.LAST)["config"]
        if C.from_dict(saved) != cfg:
            raise C.ConfigError(f"sweep: {run_dir} holds a run with another config; move it away or use another --out")
        log(f"sweep: {spec.name}: continuing from its checkpoint")
        trainer = Trainer.from_checkpoint(run_dir / F.LAST)
    else:
        log(f"sweep: {spec.name}: starting")
        trainer = Trainer(cfg)
    return trainer.fit()


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
    for method, runs in by_method.items():
        for net, info in runs[0]["networks"].items():
            last = [r["networks"][net]["last_acc"] for r in runs]
            best = [r["networks"][net]["best_acc"] for r in runs]
            expert = network_share(runs, "expert_share", lambda p: p.split("->")[info["role"] == "student"] == net)
            paused = network_share(runs, "paused_share", lambda t: t == net)
            wall = [r.get("wall_time_s", r["train_time_s"]) for r in runs]
            last_val = ([r["networks"][net].get("last_val_acc") for r in runs] if val else [])
            rows.append(f"| {method} | {net} | {info['model']} | {len(runs)} | {fmt(last)} | {fmt(best)} | "
                        + (f"{fmt(last_val) if None not in last_val else '–'} | " if val else "")
                        + f"{expert} | {paused} | {fmt(wall, 0)} |")
    return "\n".join(rows)


def comparison_table(reports: Sequence[dict[str, Any]]) -> str:
    """SwitOKD's students against each other method's: difference of the mean last-epoch accuracy, and a verdict.

    A difference within one standard deviation (the larger of the two methods') is a tie."""
    by_method = group_by_method(reports)
    if "switokd" not in by_method:
        return ""
    ours = by_method["switokd"]
    students = [n for n, i in ours[0]["networks"].items() if i["role"] == "student"]
    rows = ["| student | SwitOKD (%) | against | theirs (%) | difference | verdict |", "|---|---:|---|---:|---:|---|"]
    for net in students:
        m1, s1 = mean_std([r["networks"][net]["last_acc"] for r in ours])
        for method, runs in by_method.items():
            if method == "switokd" or net not in runs[0]["networks"]:
                continue
            m2, s2 = mean_std([r["networks"][net]["last_acc"] for r in runs])
            v = verdict((m1, s1), (m2, s2))
            rows.append(f"| {net} | {m1:.2f} ± {s1:.2f} | {method} | {m2:.2f} ± {s2:.2f} | {m1 - m2:+.2f} | "
                        f"{v if v == 'tie' else 'SwitOKD ' + v} |")
    return "\n".join(rows)


def network_share(runs: Sequence[dict[str, Any]], key: str, mine: Callable[[str], bool]) -> str:
    """Mean ± std over seeds of the run-level share, averaged over this network's pairs; '-' if it has none."""
    vals = []
    for r in runs:
        own = [v for k, v in r.get(key, {}).items() if mine(k)]
        if own:
            vals.append(statistics.fmean(own))
    return fmt(vals, 1, 100.0) if vals else "-"


def write_results(out: Path, reports: Sequence[dict[str, Any]], header: Sequence[str]) -> Path:
    """``results.md`` (the table) and ``results.json`` (every run's report) in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(list(reports), indent=2))
    precisions = sorted({r.get("precision", "?") for r in reports})
    parts = [*header, f"- precision: {', '.join(precisions)}", "", results_table(reports), ""]
    cmp = comparison_table(reports)
    if cmp:
        parts += ["SwitOKD's students against the other methods' (last epoch; within one standard deviation = tie):", "",
                  cmp, ""]
    parts += log_tables(out, reports)
    text = "\n".join(parts)
    path = out / "results.md"
    path.write_text(text)
    return path


def log_tables(out: Path, reports: Sequence[dict[str, Any]]) -> list[str]:
    """The tables drawn from the runs' own logs (``OUT/<run>/epochs.jsonl``): SwitOKD against each method paired
    by seed, the training curves (peak, last, plateau, memorisation, drift) and when each switch fired."""
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
    paired = analysis.paired_table(by_method, lambda run: seeds[run.name])
    if paired:
        parts += ["SwitOKD's students minus each other method's, paired by seed (last epoch, points):", "", paired, ""]
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
          log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run (or continue) the grid and write its results; returns the reports of the grid's runs."""
    out = Path(out)
    specs = plan(cfg_path, methods, seeds, overrides, out)
    header = [f"# Sweep: {Path(cfg_path).name if cfg_path else 'defaults'}, methods {', '.join(methods)}, "
              f"seeds {', '.join(map(str, seeds))}", ""]
    if command:
        header.append(f"- command: `{command}`")
    from .train.runinfo import machine_summary
    threads = C.load_config(cfg_path, list(overrides)).train.threads or None  # the runs', not this process's
    val = C.load_config(cfg_path, list(overrides)).data.val_split > 0
    header += [f"- machine: {machine_summary(threads=threads)}", f"- date: {time.strftime('%Y-%m-%d')}",
               "- accuracy: top-1 % on the test split; mean ± sample std over seeds. "
               + ("The best epoch is chosen on the validation split (data.val_split), and its test accuracy is "
                  "reported." if val else "The best epoch is chosen on the test split (no data.val_split), so it is "
                  "optimistic; the last epoch is the honest figure."),
               "- expert share: steps with the pair in expert mode; paused share: steps a teacher took no step"]
    reports: list[dict[str, Any]] = []
    for spec in specs:
        r = run_one(cfg_path, spec, out, log)
        if spec.name.startswith(TEACHER_RUN):
            continue
        r = {**r, "seed": spec.seed, "run": spec.name}
        reports.append(r)
        write_results(out, reports, header)
    if report and reports:
        try:
            write_report([out / r["run"] for r in reports], out / F.REPORT_DIR)
        except ReportError as e:  # matplotlib missing: the tables are written all the same
            log(f"sweep: no report: {e}")
    return reports
