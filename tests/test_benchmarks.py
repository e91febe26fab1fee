"""The benchmark scripts run end to end on tiny settings (a smoke test, not a timing)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_paired_ratio_is_the_median_of_per_step_ratios():
    tp = load("throughput")
    r, lo, hi = tp.paired_ratio([2.0, 4.0, 3.0, 10.0], [1.0, 2.0, 3.0, 1.0])
    assert r == pytest.approx(2.0)  # per-step ratios 2, 2, 1, 10: torch's median is the lower middle value
    assert lo <= r <= hi


def test_throughput_script_writes_every_variant(tmp_path):
    tp = load("throughput")
    out = tmp_path / "t.md"
    assert tp.main(["--device", "cpu", "--precision", "fp32", "--pairs", "resnet20:wrn16_1", "--shapes", "1x16",
                    "--batch-size", "8", "--steps", "2", "--warmup", "1", "--repeats", "1",
                    "--loader-images", "64", "--out", str(out)]) == 0
    text = out.read_text()
    for variant in ("vanilla", "dml", "kdcl", "switokd-learning", "switokd-expert", "bare", "bare-expert",
                    "bare-expert-nograd", "loader"):
        assert f"| {variant} |" in text
    assert "python " in text and "machine:" in text


def test_loader_throughput_script(tmp_path):
    lt = load("loader_throughput")
    out = tmp_path / "l.md"
    assert lt.main(["--images", "16", "--batch", "4", "--workers", "1", "--train-steps", "1", "--out", str(out)]) == 0
    text = out.read_text()
    assert "ImageNet-like" in text and "img/s" in text and "python benchmarks/loader_throughput.py" in text


@pytest.mark.slow
def test_ddp_throughput_script(tmp_path):
    dt = load("ddp_throughput")
    out = tmp_path / "d.md"
    # One mode of the two: the script's plumbing is the same for both, and the test's time goes to starting
    # processes. The learning mode's teacher backward and all-reduce are tested in tests/e2e/test_distributed.py.
    assert dt.main(["--steps", "1", "--warmup", "1", "--images", "600", "--batch", "8", "--repeats", "1",
                    "--modes", "paused", "--out", str(out)]) == 0
    text = out.read_text()
    for variant in ("1 process, 1 thread", "1 process, 2 threads", "2 processes x 1 thread, teacher paused every step, "
                    "bucketed all-reduce", "2 processes x 1 thread, teacher paused every step, one DistributedDataParallel per network"):
        assert f"| {variant}" in text
    assert "every step learning" not in text


def test_methods_summary_ranks_and_pairs_by_seed(tmp_path, capsys):
    """benchmarks/methods_summary.py on a made-up grid: the best student, its paired margins, the saved compute."""
    import importlib.util
    import json
    spec = importlib.util.spec_from_file_location("methods_summary", ROOT / "benchmarks" / "methods_summary.py")
    ms = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ms)

    def rep(method, seed, s, t, paused=None):
        r = {"method": method, "seed": seed, "networks": {
            "teacher": {"role": "teacher", "last_acc": t, "best_acc": t + 1},
            "student": {"role": "student", "last_acc": s, "best_acc": s + 1}}}
        if paused is not None:
            r["expert_share"], r["paused_share"] = {"teacher->student": paused}, {"teacher": paused}
        return r
    runs = [rep("dml", 0, 80.0, 85.0), rep("dml", 1, 81.0, 85.0), rep("kd", 0, 79.0, 84.0), rep("kd", 1, 79.5, 84.0),
            rep("switokd", 0, 80.5, 84.0, 0.3), rep("switokd", 1, 81.5, 84.0, 0.3)]
    (tmp_path / "clean").mkdir()
    (tmp_path / "clean" / "results.json").write_text(json.dumps(runs))
    assert ms.main(["--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| clean | switokd | 81.00 ± 0.71 | +0.50 ± 0.00 | +1.75 ± 0.35 | 84.00 ± 0.00 | — | 20.0 ± 0.0% |  |" in out
    assert "| kd | 2 | 79.25 ± 0.35 | 80.25 ± 0.35 |  | (frozen) | (frozen) | -1.25 ± 0.35 |  |  |" in out
    # the teacher paired with DML's too: SwitOKD's teacher ends 1.00 below in both seeds
    assert "| switokd | 2 | 81.00 ± 0.71 | 82.00 ± 0.71 |  | 84.00 ± 0.00 | 85.00 ± 0.00 | +0.50 ± 0.00 | +1.75 ± 0.35 " \
        "| -1.00 ± 0.00 | 30.0 ± 0.0% | 20.0 ± 0.0% |" in out
    assert "student best (test maximum)" in out  # no validation split in these reports
    assert ms.main(["--root", str(tmp_path), "--readme"]) == 0
    out = capsys.readouterr().out
    assert "| method | clean |" in out and "| switokd | 81.00 ± 0.71 |" in out and "| clean | switokd |" in out
    assert ms.main(["--root", str(tmp_path), "--status"]) == 0
    out = capsys.readouterr().out
    assert "| clean | 6 (seed 0: dml, kd, switokd; seed 1: dml, kd, switokd) | 36 |" in out
    assert "| few50 | 0 | 21 |" in out
    old = tmp_path / "old"  # an earlier grid beside this one: each method before and now
    (old / "clean").mkdir(parents=True)
    (old / "clean" / "results.json").write_text(json.dumps([rep("dml", 0, 70.0, 75.0), rep("dml", 1, 72.0, 75.0)]))
    assert ms.main(["--root", str(tmp_path), "--against", str(old)]) == 0
    out = capsys.readouterr().out
    assert "| method | clean: before | clean: now |" in out
    assert "| dml | 71.00 ± 1.41 | 80.50 ± 0.71 |" in out and "| kd | — | 79.25 ± 0.35 |" in out


def test_branches_summary_pairs_students_and_costs(tmp_path, capsys, monkeypatch):
    """benchmarks/branches_summary.py on a made-up grid: students paired with DML's and vanilla's, and each
    method's cost against DML's."""
    import json
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    bs = load("branches_summary")

    def rep(method, seed, s, wall, ips):
        nets = {"student": {"role": "student", "last_acc": s}}
        if method != "one":
            nets["teacher"] = {"role": "teacher", "last_acc": s + 2}
        else:
            nets["student"]["last_parts"] = {"branch0": s, "ensemble": s + 1}
        return {"method": method, "seed": seed, "networks": nets, "wall_time_s": wall, "images_per_s": ips}
    runs = [rep("vanilla", 0, 78.0, 200, 100), rep("vanilla", 1, 79.0, 220, 100), rep("dml", 0, 79.0, 400, 50),
            rep("dml", 1, 80.0, 400, 50), rep("one", 0, 80.5, 100, 200), rep("one", 1, 80.5, 140, 180)]
    (tmp_path / "branches-clean").mkdir()
    (tmp_path / "branches-clean" / "results.json").write_text(json.dumps(runs))
    assert bs.main(["--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| one | 2 | 80.50 ± 0.00 | 81.50 ± 0.00 | +1.00 ± 0.71 | +2.00 ± 0.71 | 190 ± 14 | 120 ± 28 | 0.30 |" in out
    assert bs.main(["--root", str(tmp_path), "--readme"]) == 0
    out = capsys.readouterr().out
    assert "| method | clean | run time / DML's |" in out and "| one | 80.50 ± 0.00 | 0.30-0.30 |" in out
    assert bs.main(["--root", str(tmp_path / "none")]) == 2


def test_race_summary_sets_the_race_beside_the_grid(tmp_path, capsys):
    """benchmarks/race_summary.py on a made-up grid and race: compute, winners, the pick's paired shortfall."""
    import json
    rs = load("race_summary")

    def rep(method, seed, s):
        return {"method": method, "seed": seed, "best_chosen_on": "val", "networks": {
            "student": {"role": "student", "last_acc": s, "last_val_acc": s - 1}}}
    grid = tmp_path / "grid" / "clean"
    (grid / "runs" / "dml-seed0").mkdir(parents=True)
    (grid / "runs" / "dml-seed0" / "epochs.jsonl").write_text(json.dumps({"epoch": 1, "images": 1000, "epoch_time_s": 3600}) + "\n")
    (grid / "results.json").write_text(json.dumps([rep("dml", 0, 80.0), rep("dml", 1, 81.0), rep("kd", 0, 79.0),
                                                   rep("kd", 1, 82.0)]))
    def trial(arm, seed, test):
        return {"arm": arm, "seed": seed, "kind": "arm", "state": "complete" if test else "pruned", "test": test}
    for folder, tests in (("clean", (80.5, 80.7)), ("clean-x2", (82.0, 81.0))):
        race = tmp_path / "race" / folder
        race.mkdir(parents=True)
        trials = [trial("dml", 0, tests[0]), trial("dml", 1, tests[1]), trial("kd", 0, None), trial("kd", 1, None)]
        (race / "race.json").write_text(json.dumps({"trials": trials, "totals": {"images": 500, "wall_time_s": 1800},
                                                    "winner": {"arm": "dml"}, "done": True, "decisions": []}))
        (race / "elapsed-1.json").write_text(json.dumps({"seconds": 900}))
        # The same trial's epochs: the base race's CPU took 1.5 times as long on epoch 1 and 2.5 times on epoch 2
        # (the longer race's third epoch has no match): the median, 2.0, scales its run time to the base machine.
        (race / "runs" / "dml-seed0").mkdir(parents=True)
        times = (3.0, 5.0) if folder == "clean" else (2.0, 2.0, 9.0)
        (race / "runs" / "dml-seed0" / "epochs.jsonl").write_text(
            "".join(json.dumps({"epoch": i + 1, "train_time_s": t}) + "\n" for i, t in enumerate(times)))
    assert rs.main(["--grid", str(tmp_path / "grid"), "--race", str(tmp_path / "race")]) == 0
    out = capsys.readouterr().out
    # dml and kd tie at 80.50 (the first wins), and the race picked dml: the same.
    assert "| clean | 1, 0.00 M, 1.00 h | 4, 0.00 M, 0.50 h, 0.25 h elapsed | 0.50 | dml | dml | dml | 0 (the same) |" in out
    # The longer race (LONG=2) against the base grid: its winner's students paired by seed with the grid's best.
    assert rs.main(["--grid", str(tmp_path / "grid"), "--race", str(tmp_path / "race"), "--suffix=-x2"]) == 0
    out = capsys.readouterr().out
    assert ("| clean | 4, 0.00 M, 0.50 h, 0.25 h elapsed | 1.00 (×2.00) | dml: 81.50 ± 0.71 | dml: 80.50 ± 0.71 | "
            "+1.00 ± 1.41 |") in out
    # The branch methods' grid and race (issue 41) sit under a prefix: the same table from branches-<condition>.
    import shutil
    shutil.copytree(grid, tmp_path / "grid" / "branches-clean")
    shutil.copytree(tmp_path / "race" / "clean", tmp_path / "race" / "branches-clean")
    shutil.rmtree(grid)
    assert rs.main(["--grid", str(tmp_path / "grid"), "--race", str(tmp_path / "race"), "--prefix=branches-"]) == 0
    assert "| clean | 1, 0.00 M, 1.00 h | 4, 0.00 M, 0.50 h, 0.25 h elapsed | 0.50 | dml |" in capsys.readouterr().out


def test_branch_cost_times_every_arm_against_dml(tmp_path, splits):
    """benchmarks/branch_cost.py builds each arm as the branch grid does (a branch method splits the student, no
    teacher; dml-x3 trains three separate students) and times interleaved epochs against DML's."""
    bc = load("branch_cost")
    out = tmp_path / "cost.md"
    over = ["data.name=synthetic", "data.val_split=0", "train.batch_size=16", "train.precision=fp32",
            "networks.teacher.model=resnet20", "networks.student.model=resnet20"]
    assert bc.main(["--config", "", "--arms", "dml", "one", "dml-x3", "--rounds", "2", "--out", str(out),
                    "--overrides", *over], data=splits) == 0
    text = out.read_text()
    assert "| dml | teacher: resnet20, student: resnet20 |" in text and "| 1.00 (1.00-1.00) |" in text
    assert "| one | student: resnet20 x3 branches |" in text
    assert "| dml-x3 | student0: resnet20, student1: resnet20, student2: resnet20 |" in text
    with pytest.raises(SystemExit):
        bc.main(["--arms", "one"])  # every time is read against DML's


def test_feature_throughput_script(tmp_path):
    bench = load("feature_throughput")
    out = tmp_path / "f.md"
    assert bench.main(["--methods", "fitnet", "crd", "--steps", "2", "--warmup", "1", "--batch", "8", "--threads", "1",
                       "--images", "64", "--crd-images", "1000", "--pairs", "resnet20:wrn16_1", "--out", str(out)]) == 0
    text = out.read_text()
    assert "| resnet20 -> wrn16_1 | fitnet |" in text and "| resnet20 -> wrn16_1 | crd |" in text
    assert "CRD's memory for 1,000 training images" in text
