"""The race and the sweep lose nothing and report nothing wrong: sweeps without validation, reused run
directories, torn journals, workers that lost their lease, and bad arguments (one line, exit 2)."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from switokd import config as C
from switokd.cli import main
from switokd.race import RaceSpec, race
from switokd.race.engine import Study, open_storage, repair_journal
from switokd.runs.files import read_jsonl
from switokd.sweep import sweep

from test_data import make_mnist_dir

optuna = pytest.importorskip("optuna")

SMALL = ["data.name=mnist", "train.epochs=2", "train.batch_size=16", "train.eval_batch_size=64", "train.progress=false",
         "train.precision=fp32", "train.threads=1", "train.log_interval=2", "networks.teacher.model=resnet20",
         "networks.student.model=wrn16_1"]
quiet = lambda m: None  # noqa: E731


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_mnist_dir(tmp_path_factory.mktemp("mnist"), n_train=96, n_test=32)


def _cli(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


# ------------------------------------------------------------------ the sweep


def test_a_sweep_without_validation_runs_its_offline_methods_on_the_test_split(tmp_path, data_dir):
    """As docs/cli.md shows it (no data.val_split): kd's teacher run finishes, kd runs, nothing is dropped."""
    out = tmp_path / "s"
    reports = sweep(None, ["vanilla", "kd"], [0], out, [*SMALL, f"data.dir={data_dir}", "train.epochs=1"],
                    report=False, log=quiet)
    assert sorted(r["run"] for r in reports) == ["kd-seed0", "vanilla-seed0"] and reports.missing == []
    assert all(r["best_chosen_on"] == "test" for r in reports)
    assert "chosen on the test split" in (out / "results.md").read_text()


def test_a_finished_run_is_not_reused_under_another_config(tmp_path, data_dir, capsys):
    out = tmp_path / "s"
    over = [*SMALL, f"data.dir={data_dir}", "train.epochs=1", "data.val_split=16"]
    sweep(None, ["vanilla"], [0], out, over, report=False, log=quiet)
    before = (out / "results.md").read_text()
    with pytest.raises(C.ConfigError, match=r"vanilla-seed0 holds a run with another config \(networks.student.lr: "
                                            r"0.1 there, 0.01 here\)"):
        sweep(None, ["vanilla"], [0], out, [*over, "networks.student.lr=0.01"], report=False, log=quiet)
    assert (out / "results.md").read_text() == before  # nothing rewritten
    # The race under another study name, as its own refusal suggests: the same refusal, before any study is made.
    code, err = _cli(capsys, "race", "--config", str(_empty_config(tmp_path)), "--methods", "vanilla", "--seeds", "0",
                     "--out", str(out), "--study", "other", *over, "networks.student.lr=0.01")
    assert code == 2 and len(err.splitlines()) == 1 and "networks.student.lr: 0.1 there, 0.01 here" in err, err
    # The same config is reused: the finished run is skipped.
    logs = []
    sweep(None, ["vanilla"], [0], out, over, report=False, log=logs.append)
    assert any("vanilla-seed0: finished earlier, skipped" in m for m in logs)


def _empty_config(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("{}\n")
    return p


# ------------------------------------------------------------------ the journal


def _race_cmd(config, out, data_dir, *extra):
    return [sys.executable, "-m", "switokd", "race", "--config", str(config), "--methods", "vanilla", "dml",
            "--seeds", "0", "--out", str(out), "--rungs", "2", "--lease", "10", *SMALL, "train.epochs=3", "data.val_split=16",
            "train.checkpoint_every=1", f"data.dir={data_dir}", *extra]


def _wait_for(pred, timeout, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (proc is None or proc.poll() is None):
        if pred():
            return True
        time.sleep(0.02)
    return False


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except OSError:
        return 0


def _running_step(run: Path) -> int:
    try:
        state = json.loads((run / "status.json").read_text())
    except (OSError, ValueError):
        return -1
    return state.get("step", 0) if state.get("state") == "running" else -1


def test_a_journal_torn_mid_line_is_repaired_and_the_race_finishes(tmp_path, data_dir):
    config, out = _empty_config(tmp_path), tmp_path / "race"
    first = subprocess.Popen(_race_cmd(config, out, data_dir), stderr=subprocess.PIPE, text=True)
    ok = _wait_for(lambda: any(_running_step(r) >= 2 and (r / "last.pt").is_file() for r in out.glob("*-seed*")),
                   120, first)
    first.send_signal(signal.SIGKILL)
    log1 = first.communicate(timeout=60)[1]
    assert ok, log1
    journal = out / "study.journal"
    size = journal.stat().st_size
    os.truncate(journal, size - 20)  # what a crash during a write leaves: a last line without its end
    second = subprocess.run(_race_cmd(config, out, data_dir), capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "cut a torn last record" in second.stderr
    storage = open_storage(journal)
    trials = optuna.load_study(study_name="race", storage=storage).get_trials()
    assert sorted((t.params["arm"], t.params["seed"]) for t in trials) == [("dml", 0), ("vanilla", 0)]
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    work = optuna.load_study(study_name="race::work", storage=storage).get_trials()
    done = [(t.user_attrs["trial"], t.user_attrs["stop"]) for t in work if t.state.name == "COMPLETE"]
    assert len(done) == len(set(done))
    # Optuna's own readers read every study of the race's storage (a COMPLETE ticket has its value).
    names = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    assert names == {"race", "race::work"}
    assert json.loads((out / "race.json").read_text())["done"]


def test_repair_cuts_only_a_torn_tail(tmp_path):
    from optuna.storages.journal import JournalFileBackend
    p = tmp_path / "j.journal"
    p.write_bytes(b'{"op_code": 0}\n{"op_code": 1}\n{"op_co')
    assert repair_journal(p, JournalFileBackend(str(p))) == len(b'{"op_co')
    assert p.read_bytes() == b'{"op_code": 0}\n{"op_code": 1}\n'
    assert repair_journal(p, JournalFileBackend(str(p))) == 0  # a whole file is left alone


# ------------------------------------------------------------------ a worker that lost its lease


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""


def test_a_worker_paused_past_its_lease_writes_nothing_after_its_replacement(tmp_path):
    """kill -STOP one worker mid-segment until another took its segment over and finished; kill -CONT it: the
    finished run's last.pt, steps.jsonl and status.json stay as the replacement wrote them."""
    (tmp_path / "mnist").mkdir()
    data = make_mnist_dir(tmp_path / "mnist", n_train=1200, n_test=32)  # epochs of a few seconds: a mid-segment
    config, out = _empty_config(tmp_path), tmp_path / "race"
    cmd = [sys.executable, "-m", "switokd", "race", "--config", str(config), "--methods", "vanilla", "--seeds", "0",
           "--out", str(out), "--rungs", "1", "--lease", "3", *SMALL, "train.epochs=1", "data.val_split=32",
           "networks.teacher.model=wrn16_1", f"data.dir={data}"]
    a = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    run = out / "vanilla-seed0"
    try:
        ok = _wait_for(lambda: _lines(run / "steps.jsonl") >= 4, 120, a)
        assert ok, a.communicate(timeout=30)[1] if a.poll() is not None else "no step"
        a.send_signal(signal.SIGSTOP)
        b = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert b.returncode == 0, b.stderr[-3000:]
        assert "taken up again (no heartbeat" in b.stderr
        files = {name: _digest(run / name) for name in ("last.pt", "steps.jsonl", "status.json", "epochs.jsonl",
                                                        "report.json")}
        assert json.loads((run / "status.json").read_text())["state"] == "finished"
    finally:
        a.send_signal(signal.SIGCONT)
    log_a = a.communicate(timeout=120)[1]
    assert "lost its segment" in log_a, log_a[-3000:]
    assert {name: _digest(run / name) for name in files} == files  # untouched by the woken worker
    assert [r["epoch"] for r in read_jsonl(run / "epochs.jsonl")] == [1]


# ------------------------------------------------------------------ bad input: one line, exit 2


def test_bad_race_arguments_are_one_line_and_exit_2(tmp_path, capsys):
    config = _empty_config(tmp_path)
    not_journal = tmp_path / "notes.txt"
    not_journal.write_text("hello\n")
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    base = ["race", "--config", str(config), "--methods", "vanilla", "--seeds", "0", "data.val_split=0.1"]
    cases = {
        ("--storage", str(tmp_path)): "is a directory",
        ("--storage", ""): "--storage is empty",
        ("--storage", "/dev/null"): "is not a regular file",
        ("--storage", str(not_journal)): "is not an Optuna journal",
        ("--storage", str(a_file / "j.journal")): "which is a file",
        ("--out", str(a_file)): "--out",
        ("--eta", "0"): "--eta must be a finite number > 1",
        ("--eta", "-2"): "--eta must be a finite number > 1",
        ("--eta", "nan"): "--eta must be a finite number > 1",
        ("--eta", "1"): "--eta must be a finite number > 1",
        ("--lease", "0"): "--lease must be",
        ("--lease", "-5"): "--lease must be",
        ("--lease", "inf"): "--lease must be",
    }
    for (flag, value), words in cases.items():
        extra = [flag, value] if flag == "--out" else ["--out", str(tmp_path / "out"), flag, value]
        code, err = _cli(capsys, *base[:-1], *extra, base[-1])
        assert code == 2 and len(err.splitlines()) == 1 and words in err, (flag, value, err)
    assert not not_journal.read_text() != "hello\n"  # left as it was


def test_a_validation_split_larger_than_the_data_is_refused_before_the_study(tmp_path, data_dir, capsys):
    out = tmp_path / "race"
    code, err = _cli(capsys, "race", "--config", str(_empty_config(tmp_path)), "--methods", "vanilla", "dml",
                     "--seeds", "0", "--out", str(out), *SMALL, f"data.dir={data_dir}", "data.val_split=500")
    assert code == 2 and "data.val_split=500 holds out 500 of the 96 training images" in err
    assert not (out / "study.journal").exists()  # the corrected command is not "another race"


def test_a_postgresql_error_is_one_line():
    pytest.importorskip("psycopg")
    with pytest.raises(C.ConfigError) as e:
        open_storage("postgresql+psycopg://nobody@/nodb?host=/nonexistent-socket-dir&port=1")
    assert "\n" not in str(e.value) and "cannot be opened" in str(e.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_a_read_only_cache_or_output_is_one_line(tmp_path, capsys):
    from switokd.train.teacher_cache import TeacherCache
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(C.ConfigError, match="cannot be used as a cache directory"):
            TeacherCache.open(ro / "cache", "networks.teacher.cache", {}, 1, 10, 4)
        code, err = _cli(capsys, "race", "--config", str(_empty_config(tmp_path)), "--methods", "vanilla", "--seeds",
                         "0", "--out", str(ro / "out"), "data.val_split=0.1")
        assert code == 2 and "--out" in err
    finally:
        ro.chmod(0o700)


def test_bad_cache_paths_and_headers_are_one_line(tmp_path):
    from switokd.train.teacher_cache import TeacherCache
    a_file = tmp_path / "f"
    a_file.write_text("x")
    for path in (a_file, a_file / "under"):
        with pytest.raises(C.ConfigError, match=r"networks.teacher.cache: .* cannot be used as a cache directory"):
            TeacherCache.open(path, "networks.teacher.cache", {}, 1, 10, 4)
    for meta in ("[1, 2]", '{"format": 1}', '{"views": "3"}', '{"views": 2.5}'):
        d = tmp_path / f"c{abs(hash(meta))}"
        d.mkdir()
        (d / "meta.json").write_text(meta)
        with pytest.raises(C.ConfigError, match=r"is not a cache's header"):
            TeacherCache.open(d, "networks.teacher.cache", {}, 1, 10, 4)


# ------------------------------------------------------------------ smaller things


def test_a_study_whose_creator_died_is_created_again_at_once(tmp_path, data_dir):
    storage = open_storage(tmp_path / "race" / "study.journal")
    main_study = optuna.create_study(study_name="race", storage=storage, direction="maximize")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    from switokd.race.engine import _process_identity
    main_study.set_user_attr("creating", {**_process_identity(), "pid": dead.pid})
    logs = []
    t0 = time.monotonic()
    r = race(RaceSpec(None, ["vanilla"], [0], tmp_path / "race", [*SMALL, f"data.dir={data_dir}", "train.epochs=1",
                                                          "data.val_split=16"], rungs=[1]), log=logs.append)
    assert r.data["done"] and time.monotonic() - t0 < 110  # no 120 s wait
    assert any("was interrupted" in m and "creating it again" in m for m in logs), logs


def test_a_deleted_winner_is_an_error_not_a_dangling_link(tmp_path, data_dir):
    import shutil
    out = tmp_path / "race"
    over = [*SMALL, f"data.dir={data_dir}", "train.epochs=1", "data.val_split=16"]
    r = race(RaceSpec(None, ["vanilla"], [0], out, over, rungs=[1]), log=quiet)
    assert (out / "winner.pt").is_file()
    shutil.rmtree(out / r.winner["run"])
    (out / "winner.pt").unlink()
    from switokd.errors import ReportError
    with pytest.raises(ReportError, match="has no checkpoint"):
        race(RaceSpec(None, ["vanilla"], [0], out, over, rungs=[1]), log=quiet)


def test_a_stopped_race_trial_says_to_rerun_the_race():
    from switokd.train.signals import Interrupted, StopControl

    class Sig:
        signum, name = signal.SIGTERM, "SIGTERM"

    class Single:
        enabled = False

    stop = StopControl(Single())
    stop.signals = Sig()
    stop.resume_hint = "run the same race or sweep command again"
    with pytest.raises(Interrupted, match="Continue with: run the same race or sweep command again"):
        stop.raise_if_stopped(0, 3, "runs/x")


def test_study_summaries_read_a_race_storage(tmp_path, data_dir):
    out = tmp_path / "race"
    race(RaceSpec(None, ["vanilla", "dml"], [0], out, [*SMALL, f"data.dir={data_dir}", "data.val_split=16"], rungs=[1, 2], eta=2), log=quiet)
    storage = open_storage(out / "study.journal")
    summaries = {s.study_name: s for s in optuna.get_all_study_summaries(storage)}
    assert set(summaries) == {"race", "race::work"}
    for name in summaries:
        for t in optuna.load_study(study_name=name, storage=storage).get_trials():
            assert t.state.name != "COMPLETE" or t.value is not None
    s = Study(storage, "race")
    assert s.definition().arms == ["vanilla", "dml"]
