"""switokd report: figures and an HTML page from a finished run's logs."""
import pytest
from PIL import Image

from switokd.cli import main
from switokd.errors import ReportError
from switokd.runs.files import read_run
from switokd.runs.report import summary_rows, write_report
from switokd.train.trainer import Trainer

from conftest import tiny_config


@pytest.fixture(scope="module")
def finished_runs(tmp_path_factory, ):
    from conftest import synthetic_splits
    root = tmp_path_factory.mktemp("runs")
    dirs = []
    for method in ("switokd", "dml"):
        tr = Trainer(tiny_config(root / method, method=method, overrides=["train.epochs=2"]), data=synthetic_splits())
        tr.fit()
        dirs.append(tr.run_dir)
    return dirs


def test_report_files_decode_and_are_referenced(finished_runs, tmp_path):
    page = write_report(finished_runs, tmp_path / "rep")
    pngs = sorted(p.name for p in (tmp_path / "rep").glob("*.png"))
    assert pngs == ["accuracy.png", "expert_share.png", "gap.png", "rho_eps.png"]
    text = page.read_text()
    for name in pngs:
        with Image.open(tmp_path / "rep" / name) as im:
            im.load()
            assert im.size[0] > 300 and im.size[1] > 200
        assert f'src="{name}"' in text
    assert "<script" not in text and "http" not in text.split("<h2>Sources")[0]  # self-contained
    # The table has both runs' networks with their last-epoch accuracies from the logs.
    rows = summary_rows([read_run(d) for d in finished_runs])
    assert [(r["method"], r["network"]) for r in rows] == [("switokd", "teacher"), ("switokd", "student"),
                                                          ("dml", "teacher"), ("dml", "student")]
    assert rows[0]["last_acc"] == read_run(finished_runs[0]).epochs[-1]["test"]["teacher"]["acc"]
    assert f"{rows[1]['last_acc']:.2f}" in text
    assert rows[2]["expert_share"] is None and rows[0]["expert_share"] is not None


def test_report_cli_and_errors(finished_runs, tmp_path, capsys):
    assert main(["report", str(finished_runs[0]), "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "index.html").is_file() and "accuracy.png" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "not a run directory" in err and "Traceback" not in err
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match="no epochs.jsonl"):
        read_run(tmp_path / "empty")


def _logs(name, method, expert_by_epoch, stats, paused=None):
    """A hand-made run: epochs with expert shares, the run's switch statistics and shares."""
    from pathlib import Path
    from switokd.runs.files import RunLogs
    epochs = [{"epoch": e, "steps": 10, "switch": {"expert_share": {"teacher->student": s}},
               "train": {"pair": {"teacher->student": stats}},
               "test": {"teacher": {"acc": 80.0 + e}, "student": {"acc": 70.0 + e}}} for e, s in expert_by_epoch]
    total = sum(s for _, s in expert_by_epoch) / len(expert_by_epoch)
    report = {"method": method, "networks": {"teacher": {"role": "teacher", "model": "a"},
                                             "student": {"role": "student", "model": "b"}},
              "expert_share": {"teacher->student": total}, "paused_share": {"teacher": paused if paused is not None else total},
              "switch_stats": {"teacher->student": stats}}
    return RunLogs(name, Path(name), epochs, [], report)


STATS = {"teacher_label_distance": 0.5, "student_label_distance": 0.8, "shared_ratio": 0.9, "epsilon": 0.6}


def test_explain_in_words():
    from switokd.runs.analysis import explain, fired_when
    never = _logs("a", "switokd", [(1, 0.0), (2, 0.0)], STATS)
    (text,) = explain(never)
    assert text.startswith("The teacher was never paused for the student: the switch did not act on any step.")
    assert "teacher was closer to the correct labels (distance to the labels: teacher 0.50, student 0.80" in text
    assert "it shared 90% of the probability the teacher put on wrong classes, more than the 60%" in text
    assert text.endswith("So this run trained exactly as mutual learning (DML) would.")
    fired = _logs("b", "switokd", [(1, 0.0), (2, 0.3), (3, 0.5), (4, 0.0), (5, 0.1)],
                  {**STATS, "shared_ratio": 0.4})
    assert fired_when(fired, "teacher->student") == "epochs 2-3, 5 (most in epoch 3: 50.0% of its steps)"
    (text,) = explain(fired)
    assert "paused for the student on 18.0% of the training steps, in epochs 2-3, 5" in text
    assert "saved about 12.0% of the teacher's training compute" in text  # two thirds of the paused share
    assert "shared only 40% of the probability" in text and "learned from a fixed teacher" in text
    for e, fit in zip(fired.epochs, (0.1, 0.45, 0.7, 0.9, 0.95)):  # the same run under label noise
        e["memorisation"] = {"teacher": {"noisy_label": fit, "true_label": 1 - fit, "images": 100}}
    (text,) = explain(fired)
    assert "closer to the training labels, some of them deliberately wrong here, (distance" in text
    assert ("The first pause came in epoch 2; by the end of it the teacher predicted the wrong label for 45% of "
            "the training images whose label had been changed") in text
    (text,) = explain(type(never)("c", never.path, [], [], {"method": "dml"}))
    assert text == "This run used dml, which has no switch: every network learned on every step."


def test_grid_report_groups_by_method(tmp_path):
    from switokd.runs.report import grouped_rows, is_grid
    runs = [_logs(f"{m}-seed{k}", m, [(1, 0.0), (2, 0.1 * k)], STATS) for m in ("dml", "switokd") for k in (0, 1)]
    assert is_grid(runs) and not is_grid(runs[:1])
    for r in runs:
        r.path = tmp_path / r.name
    rows = {(g["method"], g["network"]): g for g in grouped_rows(runs)}
    assert rows[("switokd", "student")]["runs"] == 2 and rows[("dml", "teacher")]["last_acc"] == "82.00 ± 0.00"
    assert rows[("switokd", "teacher")]["expert_share"] == "2.5 ± 3.5%"
    from switokd.runs.report import plot_accuracy, write_html
    fig = plot_accuracy(runs, tmp_path)
    page = write_html(runs, [fig], tmp_path).read_text()
    assert page.index("By method (mean ± std over runs)") < page.index("Every run")
    assert page.count("<h3>") == 4 and "What the switch did, in words" in page
    with Image.open(fig) as im:
        assert im.size[0] > 1000  # teachers and students side by side


def test_memorisation_and_drift_figures(tmp_path):
    from switokd.runs.report import write_report
    from switokd.train.trainer import Trainer
    from conftest import synthetic_splits
    runs = []
    for seed in (0, 1):
        tr = Trainer(tiny_config(tmp_path / f"s{seed}", overrides=["train.epochs=2", "data.label_noise=0.3",
                                                                    "data.drift_phases=2", f"train.seed={seed}"]),
                     data=synthetic_splits())
        tr.fit()
        runs.append(tr.run_dir)
    write_report(runs, tmp_path / "rep")
    for name in ("memorisation.png", "drift.png"):
        with Image.open(tmp_path / "rep" / name) as im:
            im.load()
