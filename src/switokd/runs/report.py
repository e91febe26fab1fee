"""``switokd report RUN_DIR... [--out DIR]``: figures and an HTML page drawn from the runs' own logs.

Everything is read from the files a run writes (``epochs.jsonl``, ``steps.jsonl``, ``report.json``,
``config.yaml``); nothing is recomputed. The page is self-contained (no scripts, no styles from elsewhere)
and refers to its PNG figures beside it.
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Sequence

from .analysis import curve, expert_by_epoch, explain, memorisation, run_pairs
from .files import RunLogs, read_run
from .stats import group_by, mean_std


from ..errors import ReportError  # noqa: E402  (re-exported)


def _plt():
    try:
        import matplotlib
    except ImportError:
        raise ReportError("the report needs matplotlib: pip install 'switokd[report]' (or pip install matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _labels(runs: Sequence[RunLogs]) -> list[str]:
    """Short unique labels: the run directory names (with the parent's name where names repeat)."""
    names = [r.name for r in runs]
    return [f"{r.path.parent.name}/{r.name}" if names.count(r.name) > 1 else r.name for r in runs]


METHOD_COLORS = {"vanilla": "C7", "kd": "C4", "dml": "C0", "kdcl": "C2", "switokd": "C3"}


def method_color(method: str, i: int) -> str:
    """The same colour for a method in every figure and report (others by position)."""
    return METHOD_COLORS.get(method, f"C{(i + 5) % 10}")


def method_groups(runs: Sequence[RunLogs]) -> dict[str, list[RunLogs]]:
    """The runs per method, in the order methods first appear."""
    return group_by(runs, lambda r: r.report.get("method", r.name))


def is_grid(runs: Sequence[RunLogs]) -> bool:
    """Several seeds of one method: draw means and bands per method, not one line per run."""
    return any(len(g) > 1 for g in method_groups(runs).values())


def mean_band(series: Sequence[Sequence[tuple[float, float]]]):
    """Mean and sample std at the x values every series has."""
    import statistics
    common = sorted(set.intersection(*(set(x for x, _ in s) for s in series))) if series else []
    ys = [[dict(s)[x] for s in series] for x in common]
    mean = [statistics.fmean(v) for v in ys]
    std = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in ys]
    return common, mean, std


def _roles(run: RunLogs) -> dict[str, str]:
    return {n: v.get("role", "student") for n, v in run.report.get("networks", {}).items()}


def plot_grid_panels(runs: Sequence[RunLogs], out: Path, name: str, series_of, ylabel: str, title: str,
                     styles: Sequence[tuple[str, str]] = (("", "-"),)) -> Path | None:
    """Teachers and students in separate panels, one colour per method, the mean over its runs with a ±std band.
    ``series_of(run, net)`` gives, for each of ``styles`` (suffix, line style), a list of (x, y)."""
    groups = method_groups(runs)
    present = {_roles(run).get(n, "student") for run in runs for n in run.networks}
    panels = [r for r in ("teacher", "student") if r in present]
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False)
    drawn = False
    for ax, role in zip(axes[0], panels):
        for i, (method, group) in enumerate(groups.items()):
            nets = [n for n in group[0].networks if _roles(group[0]).get(n, "student") == role]
            for j, net in enumerate(nets):
                for k, (suffix, style) in enumerate(styles):
                    series = [series_of(r, net)[k] for r in group]
                    series = [s for s in series if s]
                    if not series:
                        continue
                    x, m, sd = mean_band(series)
                    if not x:
                        continue
                    label = f"{method}" + (f" {net}" if len(nets) > 1 else "") + suffix + f" (n={len(series)})"
                    band(ax, x, m, sd, method_color(method, i), style, label, alpha=1.0 - 0.3 * min(j, 2))
                    drawn = True
        ax.set(xlabel="epoch", ylabel=ylabel, title=f"{role}s")
        _integer_ticks(ax)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if not drawn:
        plt.close(fig)
        return None
    fig.suptitle(title, fontsize=10)
    return _save(fig, out / name)


def plot_accuracy(runs: Sequence[RunLogs], out: Path) -> Path:
    if is_grid(runs):
        path = plot_grid_panels(runs, out, "accuracy.png", lambda r, n: [curve(r, n)], "test accuracy (%)",
                                "Test accuracy per epoch: mean over seeds, band ± 1 std")
        if path is not None:
            return path
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    styles = {"teacher": "-", "student": "--"}
    for i, (run, label) in enumerate(zip(runs, _labels(runs))):
        roles = {n: v.get("role", "student") for n, v in run.report.get("networks", {}).items()}
        for j, net in enumerate(run.networks):
            pts = [(e["epoch"], e["test"][net]["acc"]) for e in run.epochs if net in e.get("test", {})]
            if pts:
                x, y = zip(*pts)
                ax.plot(x, y, styles.get(roles.get(net, "student"), ":"), marker="o", ms=3, color=f"C{i % 10}",
                        alpha=1.0 - 0.25 * min(j, 2), label=f"{label}: {net}")
    ax.set(xlabel="epoch", ylabel="test accuracy (%)", title="Test accuracy per epoch (solid: teachers, dashed: students)")
    _integer_ticks(ax)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if sum(len(r.networks) for r in runs) > 8 else 1)
    return _save(fig, out / "accuracy.png")


def plot_gap(runs: Sequence[RunLogs], out: Path, max_panels: int = 6) -> Path | None:
    """G and delta per logged interval for every pair; shaded where the interval had expert steps."""
    panels = [(label, run, p) for run, label in zip(runs, _labels(runs)) for p in run.pairs][:max_panels]
    if not panels:
        return None
    plt = _plt()
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.4 * len(panels)), sharex=False, squeeze=False)
    for ax, (label, run, pair) in zip(axes[:, 0], panels):
        rows = [r for r in run.steps if pair in r.get("pair", {})]
        steps = [r["step"] for r in rows]
        ax.plot(steps, [r["pair"][pair]["gap"] for r in rows], color="C0", lw=1, label="G (distillation gap)")
        ax.plot(steps, [r["pair"][pair]["threshold"] for r in rows], color="C3", lw=1, label="δ (threshold)")
        prev = 0
        for r, s in zip(rows, steps):
            share = r.get("expert_share", {}).get(pair, 0.0)
            if share > 0:  # the row covers steps (prev, s]; darker for a larger share of expert steps
                ax.axvspan(prev, s, color="C2", alpha=0.15 + 0.5 * share, lw=0)
            prev = s
        ax.set_title(f"{label}: {pair}  (green: expert-mode steps)", fontsize=9)
        ax.set_ylabel("G, δ")
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("training step")
    axes[0, 0].legend(fontsize=8, loc="upper right")
    return _save(fig, out / "gap.png")


def plot_expert_share(runs: Sequence[RunLogs], out: Path) -> Path | None:
    if is_grid(runs):
        return _grid_expert_share(runs, out)
    series = []
    for run, label in zip(runs, _labels(runs)):
        for p in run.pairs:
            pts = [(e["epoch"], 100 * e["switch"]["expert_share"][p]) for e in run.epochs
                   if p in e.get("switch", {}).get("expert_share", {})]
            if pts:
                series.append((f"{label}: {p}", pts))
    if not series:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4))
    for i, (label, pts) in enumerate(series):
        x, y = zip(*pts)
        ax.plot(x, y, marker="o", ms=3, color=f"C{i % 10}", label=label)
    return _finish_expert_share(fig, ax, "Expert share per epoch", out)


def _finish_expert_share(fig, ax, title: str, out: Path) -> Path:
    ax.set(xlabel="epoch", ylabel="expert-mode share of steps (%)", title=title)
    _integer_ticks(ax)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, out / "expert_share.png")


def band(ax, x, mean, std, color: str, style: str, label: str, alpha: float = 1.0) -> None:
    """A mean line with a ±std band."""
    ax.plot(x, mean, style, color=color, marker="o" if len(x) < 30 else None, ms=3, alpha=alpha, label=label)
    ax.fill_between(x, [a - b for a, b in zip(mean, std)], [a + b for a, b in zip(mean, std)], color=color,
                    alpha=0.15, lw=0)


def _grid_expert_share(runs: Sequence[RunLogs], out: Path) -> Path | None:
    groups = {m: g for m, g in method_groups(runs).items() if any(run_pairs(r) for r in g)}
    if not groups:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4))
    for i, (method, group) in enumerate(groups.items()):
        for j, pair in enumerate(run_pairs(group[0])):
            series = [[(e, 100 * v) for e, v in expert_by_epoch(r, pair)] for r in group]
            band(ax, *mean_band([s for s in series if s]), method_color(method, i), ["-", "--", ":"][j % 3],
                  f"{method}: {pair} (n={len(group)})")
    return _finish_expert_share(fig, ax, "Expert share per epoch: mean over seeds ± std", out)


def plot_memorisation(runs: Sequence[RunLogs], out: Path) -> Path | None:
    """Under label noise: the share of noisy-labelled training images each network predicts as their noisy
    label (solid) and as their true label (dashed), per epoch."""
    if not any("memorisation" in e for r in runs for e in r.epochs):
        return None

    def series(run: RunLogs, net: str):
        m = memorisation(run, net)
        return [[(e, 100 * a) for e, a, _ in m], [(e, 100 * b) for e, _, b in m]]

    return plot_grid_panels(runs, out, "memorisation.png", series, "share of noisy-labelled images (%)",
                            "Memorisation: predicted as the noisy label (solid) and as the true label (dashed)",
                            styles=((", noisy label", "-"), (", true label", "--")))


def plot_drift(runs: Sequence[RunLogs], out: Path) -> Path | None:
    """Under drift: test accuracy on the current phase's classes (solid) and on the other classes (dashed)."""
    if not any("test_acc_group" in e.get("drift", {}) for r in runs for e in r.epochs):
        return None

    def series(run: RunLogs, net: str):
        rows = [(e["epoch"], e["drift"]) for e in run.epochs if "test_acc_group" in e.get("drift", {})]
        return [[(ep, d["test_acc_group"][net]) for ep, d in rows if d["test_acc_group"].get(net) is not None],
                [(ep, d["test_acc_rest"][net]) for ep, d in rows if d["test_acc_rest"].get(net) is not None]]

    return plot_grid_panels(runs, out, "drift.png", series, "test accuracy (%)",
                            "Drift: test accuracy on the current phase's classes (solid) and on the others (dashed)",
                            styles=((", phase's classes", "-"), (", other classes", "--")))


def plot_rho_eps(runs: Sequence[RunLogs], out: Path) -> Path | None:
    """rho (shared off-label mass / teacher's off-label mass) against eps, one point per logged interval."""
    pts = [(r["pair"][p]["epsilon"], r["pair"][p]["shared_ratio"], r.get("expert_share", {}).get(p, 0.0))
           for run in runs for p in run.pairs for r in run.steps
           if "shared_ratio" in r.get("pair", {}).get(p, {})]
    if not pts:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 5))
    eps, rho, share = zip(*pts)
    sc = ax.scatter(eps, rho, c=[100 * s for s in share], cmap="viridis", s=10, vmin=0, vmax=100)
    fig.colorbar(sc, ax=ax, label="expert share in the interval (%)")
    lo, hi = min(min(eps), min(rho)), max(max(eps), max(rho))
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="ρ = ε")
    ax.set(xlabel="ε (switch weight)", ylabel="ρ = shared / teacher off-label mass",
           title="ρ against ε, coloured by the share of paused steps.\nThe rule is G > δ (gap.png): at τ = 1, ρ < ε "
                 "shifted up by the student's lead,\nso paused intervals can sit above the line ρ = ε")
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out / "rho_eps.png")


def _integer_ticks(ax) -> None:
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt
    plt.close(fig)
    return path


def best_test_acc(epochs: Sequence[dict[str, Any]], net: str) -> float | None:
    """A network's "best" test accuracy from its epochs: the test accuracy at the epoch of its highest validation
    accuracy when the run has a validation split (the first such epoch; None if that epoch did not read the test
    split), else the test-set maximum."""
    validated = [e for e in epochs if net in e.get("val", {})]
    if validated:  # None when the chosen epoch did not read the test split (train.eval_test=last)
        chosen = max(validated, key=lambda e: (e["val"][net]["acc"], -e["epoch"]))
        return chosen.get("test", {}).get(net, {}).get("acc")
    tested = [e["test"][net]["acc"] for e in epochs if net in e.get("test", {})]
    return max(tested) if tested else None


def summary_rows(runs: Sequence[RunLogs]) -> list[dict[str, Any]]:
    """Per run and network: last and best accuracy, expert/paused shares, wall time."""
    rows = []
    for run, label in zip(runs, _labels(runs)):
        rep = run.report
        last = next((e["test"] for e in reversed(run.epochs) if "test" in e), {})
        wall = rep.get("wall_time_s", sum(e.get("epoch_time_s", 0.0) for e in run.epochs))
        for net in run.networks:
            info = rep.get("networks", {}).get(net, {})
            best = best_test_acc(run.epochs, net)
            expert = [v for p, v in rep.get("expert_share", {}).items() if net in p.split("->")]
            rows.append({"run": label, "method": rep.get("method", "?"), "network": net,
                         "model": info.get("model", "?"), "role": info.get("role", "?"),
                         "last_acc": last.get(net, {}).get("acc"), "best_acc": best,
                         "expert_share": sum(expert) / len(expert) if expert else None,
                         "paused_share": rep.get("paused_share", {}).get(net), "wall_time_s": wall,
                         "epochs": len(run.epochs)})
    return rows


def _cell(v: Any, pct: bool = False, digits: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{100 * v:.1f}%" if pct else f"{v:.{digits}f}"
    return html.escape(str(v))


def grouped_rows(runs: Sequence[RunLogs]) -> list[dict[str, Any]]:
    """Per method and network: the number of runs and mean ± std of last/best accuracy and expert share."""
    rows = summary_rows(runs)
    out = group_by(rows, lambda r: (r["method"], r["network"]))

    def ms(vals, pct=False):
        vals = [v for v in vals if v is not None]
        if not vals:
            return "–"
        m, sd = mean_std([100 * v if pct else v for v in vals])
        return f"{m:.{1 if pct else 2}f} ± {sd:.{1 if pct else 2}f}" + ("%" if pct else "")

    return [{"method": m, "network": n, "model": g[0]["model"], "role": g[0]["role"], "runs": len(g),
             "last_acc": ms([r["last_acc"] for r in g]), "best_acc": ms([r["best_acc"] for r in g]),
             "expert_share": ms([r["expert_share"] for r in g], True),
             "paused_share": ms([r["paused_share"] for r in g], True)} for (m, n), g in out.items()]


def write_html(runs: Sequence[RunLogs], figures: Sequence[Path], out: Path) -> Path:
    rows = summary_rows(runs)
    head = ("<tr><th>run</th><th>method</th><th>network</th><th>model</th><th>role</th><th>epochs</th>"
            "<th>last-epoch acc (%)</th><th>best-epoch acc (%)</th><th>expert share</th><th>paused share</th>"
            "<th>wall time (s)</th></tr>")
    body = "\n".join(
        f"<tr><td>{_cell(r['run'])}</td><td>{_cell(r['method'])}</td><td>{_cell(r['network'])}</td>"
        f"<td>{_cell(r['model'])}</td><td>{_cell(r['role'])}</td><td>{r['epochs']}</td>"
        f"<td>{_cell(r['last_acc'])}</td><td>{_cell(r['best_acc'])}</td><td>{_cell(r['expert_share'], True)}</td>"
        f"<td>{_cell(r['paused_share'], True)}</td><td>{_cell(r['wall_time_s'], digits=0)}</td></tr>" for r in rows)
    captions = {
        "accuracy.png": "Test accuracy of every network after each epoch.",
        "gap.png": "Distillation gap G and threshold δ per logged interval; shaded where the teacher was paused "
                   "(expert mode), darker for a larger share of the interval's steps.",
        "expert_share.png": "Share of each epoch's steps in expert mode, per teacher→student pair.",
        "memorisation.png": "Label noise: over a fixed sample of the training images whose label was changed, the "
                            "share each network predicts as the noisy label (memorisation) and as the true label.",
        "drift.png": "Drift: test accuracy on the classes that dominate the current phase of the stream, and on "
                     "the other classes.",
        "rho_eps.png": "ρ, the teacher's off-label mass that the student shares, against ε. At τ = 1, "
                       "G − δ = 2·(lead + ε·mean(1 − a) − mean(o)): with d_T < d_S the switch fires below the "
                       "line ρ = ε, shifted up by the student's lead.",
    }
    grouped = ""
    if is_grid(runs):
        g_head = ("<tr><th>method</th><th>network</th><th>model</th><th>role</th><th>runs</th>"
                  "<th>last-epoch acc (%)</th><th>best-epoch acc (%)</th><th>expert share</th><th>paused share</th></tr>")
        g_body = "\n".join(
            "<tr>" + "".join(f"<td>{html.escape(str(g[k]))}</td>" for k in
                             ("method", "network", "model", "role", "runs", "last_acc", "best_acc", "expert_share",
                              "paused_share")) + "</tr>" for g in grouped_rows(runs))
        grouped = (f"<h2>By method (mean ± std over runs)</h2>\n<table>{g_head}\n{g_body}\n</table>\n"
                   "<h2>Every run</h2>\n")
    words = "\n".join(f"<h3>{html.escape(label)}</h3>" + "".join(f"<p>{html.escape(p)}</p>" for p in explain(run))
                      for run, label in zip(runs, _labels(runs)))
    figs = "\n".join(f'<figure><img src="{f.name}" alt="{f.stem}"><figcaption>{html.escape(captions.get(f.name, ""))}'
                     f"</figcaption></figure>" for f in figures)
    sources = "".join(f"<li><code>{html.escape(str(r.path))}</code></li>" for r in runs)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>switokd report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1000px; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.85em; }} th, td {{ border: 1px solid #ccc; padding: 3px 8px; }}
td {{ text-align: right; }} td:nth-child(-n+5) {{ text-align: left; }} th {{ background: #f0f0f0; }}
figure {{ margin: 1.5em 0; }} img {{ max-width: 100%; border: 1px solid #eee; }} figcaption {{ font-size: 0.9em; color: #555; }}
</style></head><body>
<h1>switokd report</h1>
<p>{len(runs)} run(s). Accuracy is top-1 on the test split; the best epoch is chosen on the test split (optimistic),
the last epoch is the honest figure.</p>
<h2>Summary</h2>
{grouped}<table>{head}
{body}
</table>
<h2>Figures</h2>
{figs}
<h2>What the switch did, in words</h2>
{words}
<h2>Sources</h2><ul>{sources}</ul>
</body></html>
"""
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


def write_report(run_dirs: Sequence[str | Path], out: str | Path) -> Path:
    """Figures (PNG) and ``index.html`` for the given run directories; returns the page's path."""
    runs = [read_run(d) for d in run_dirs]
    if not runs:
        raise ReportError("no run directories given")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures = [f for f in (plot_accuracy(runs, out), plot_gap(runs, out), plot_expert_share(runs, out),
                           plot_rho_eps(runs, out), plot_memorisation(runs, out), plot_drift(runs, out))
               if f is not None]
    return write_html(runs, figures, out)
