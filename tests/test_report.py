"""switokd report: figures and an HTML page from a finished run's logs."""
import pytest
from PIL import Image

from switokd.cli import main
from switokd.report import ReportError, read_run, summary_rows, write_report
from switokd.trainer import Trainer

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
