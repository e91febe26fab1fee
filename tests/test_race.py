"""switokd race with the real parts: two worker processes sharing one Optuna journal, a SIGKILLed worker taken up
again, a PostgreSQL storage (when the machine has Debian's postgresql), and optuna-dashboard's API."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from switokd import config as C
from switokd.race import RaceSpec, race
from switokd.race.engine import open_storage
from switokd.runs.files import read_jsonl
from switokd.train.trainer import Trainer

from conftest import free_port
from test_data import make_mnist_dir

optuna = pytest.importorskip("optuna")

SMALL = ["data.name=mnist", "train.epochs=4", "train.batch_size=16", "train.eval_batch_size=64", "train.progress=false",
         "train.precision=fp32", "train.threads=1", "train.log_interval=2", "networks.teacher.model=resnet20",
         "networks.student.model=wrn16_1", "data.val_split=16"]
METHODS = ["vanilla", "dml", "kd", "dist"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_mnist_dir(tmp_path_factory.mktemp("mnist"), n_train=96, n_test=32)


@pytest.fixture(scope="module")
def raced(tmp_path_factory, data_dir):
    """One race of 4 methods x 2 seeds by 2 worker processes sharing the journal file in OUT."""
    out = tmp_path_factory.mktemp("race")
    result = race(RaceSpec(None, METHODS, [0, 1], out, [*SMALL, f"data.dir={data_dir}"], eta=2, rungs=[1, 2]), workers=2, lease_s=30, log=lambda m: None)
    return out, result


def test_two_workers_race_prune_and_write_the_ranking(raced):
    out, result = raced
    study = optuna.load_study(study_name="race", storage=open_storage(out / "study.journal"))
    trials = study.get_trials()
    assert sorted((t.params["arm"], t.params["seed"]) for t in trials) == sorted((m, s) for m in METHODS for s in (0, 1))
    states = {t.user_attrs["run"]: t.state.name for t in trials}
    assert "PRUNED" in states.values() and "COMPLETE" in states.values() and set(states.values()) <= {"PRUNED", "COMPLETE"}
    assert states["vanilla-seed0"] == "COMPLETE"  # it teaches the offline arms: never stopped
    for t in trials:  # each reported the students' mean validation accuracy at its evaluated epochs
        assert 1 in t.intermediate_values
        if t.state.name == "PRUNED":
            assert max(t.intermediate_values) < 4 and t.user_attrs["summary"]["epochs"] < 4
        # The rungs read validation only; the test split is read at the last epoch, for the ranking.
        assert [p["epoch"] for p in t.user_attrs["summary"]["curve"] if "test" in p] == (
            [4] if t.state.name == "COMPLETE" else [])
    data = json.loads((out / "race.json").read_text())
    assert data["done"] and data["decisions"][0]["epoch"] == 1
    assert [r["arm"] for r in data["ranking"]] and "## Ranking" in (out / "race.md").read_text()
    winner = json.loads((out / "winner.json").read_text())
    assert winner["arm"] in {r["arm"] for r in data["ranking"]}
    ck = torch.load(out / "winner.pt", map_location="cpu", weights_only=False)
    assert ck["config"]["train"]["run_name"] == winner["run"]
    # The work study: one ticket per segment run, none doubled.
    work = optuna.load_study(study_name="race::work", storage=open_storage(out / "study.journal"))
    done = [(t.user_attrs["trial"], t.user_attrs["stop"]) for t in work.get_trials() if t.state.name == "COMPLETE"]
    assert len(done) == len(set(done))


def test_the_teachers_are_taken_first(raced):
    """The offline trials wait for their seed's teacher (the vanilla trial): the workers take those first."""
    out, _ = raced
    storage = open_storage(out / "study.journal")
    runs = {t.number: t.user_attrs["run"] for t in optuna.load_study(study_name="race", storage=storage).get_trials()}
    work = optuna.load_study(study_name="race::work", storage=storage).get_trials()
    first = sorted((tk for tk in work if tk.datetime_start is not None), key=lambda tk: tk.datetime_start)[:2]
    assert sorted(runs[tk.user_attrs["trial"]] for tk in first) == ["vanilla-seed0", "vanilla-seed1"]


def test_a_surviving_trial_is_bit_exact_against_the_same_trial_run_alone(raced, tmp_path):
    out, result = raced
    study = optuna.load_study(study_name="race", storage=open_storage(out / "study.journal"))
    survivor = next(t for t in study.get_trials() if t.state.name == "COMPLETE" and t.params["arm"] != "vanilla")
    cfg = C.from_dict(survivor.user_attrs["config"])
    assert cfg.train.bn_refresh_epochs == cfg.train.eval_epochs != []  # rungs read re-estimated BN statistics
    cfg.train.out_dir, cfg.train.run_name = str(tmp_path), "alone"
    for n in cfg.networks:  # an offline arm's teacher: the race's own file
        assert n.checkpoint is None or Path(n.checkpoint).is_file()
    Trainer(cfg).fit()  # trained in one go, never paused
    raced_run = out / survivor.user_attrs["run"]
    drop = ("train_time_s", "images_per_s", "epoch_time_s")
    strip = lambda rows: [{k: v for k, v in r.items() if k not in drop} for r in rows]  # noqa: E731
    assert strip(read_jsonl(raced_run / "epochs.jsonl")) == strip(read_jsonl(tmp_path / "alone" / "epochs.jsonl"))
    a = torch.load(raced_run / "last.pt", map_location="cpu", weights_only=False)["networks"]
    b = torch.load(tmp_path / "alone" / "last.pt", map_location="cpu", weights_only=False)["networks"]
    for n in a:
        assert all(torch.equal(v, b[n]["model"][k]) for k, v in a[n]["model"].items()), n


def test_the_dashboard_serves_the_study(raced):
    pytest.importorskip("optuna_dashboard")
    out, _ = raced
    exe = shutil.which("optuna-dashboard") or str(Path(sys.executable).parent / "optuna-dashboard")
    port = free_port()
    proc = subprocess.Popen([exe, str(out / "study.journal"), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, body = time.monotonic() + 60, None
        while time.monotonic() < deadline and body is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as r:
                    body = json.loads(r.read())
            except OSError:
                time.sleep(0.3)
        assert body is not None, "optuna-dashboard did not answer"
        names = {s["study_name"] for s in body["study_summaries"]}
        assert {"race", "race::work"} <= names
        sid = next(s["study_id"] for s in body["study_summaries"] if s["study_name"] == "race")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{sid}?after=0", timeout=5) as r:
            detail = json.loads(r.read())
        assert len(detail["trials"]) == 8 and {p["name"] for p in detail["trials"][0]["params"]} >= {"arm", "seed"}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _race_cmd(config, out, data_dir):
    return [sys.executable, "-m", "switokd", "race", "--config", str(config), "--methods", "vanilla", "dml",
            "switokd", "--seeds", "0", "1", "--out", str(out), "--eta", "2", "--rungs", "2,4", "--lease", "30",
            *SMALL, "train.epochs=6", "train.checkpoint_every=1", f"data.dir={data_dir}"]


def test_a_killed_worker_loses_no_trial_and_runs_none_twice(tmp_path, data_dir):
    config = tmp_path / "c.yaml"
    config.write_text("{}\n")
    out = tmp_path / "race"
    first = subprocess.Popen(_race_cmd(config, out, data_dir), stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and time.monotonic() < deadline and first.poll() is None:
        for run in out.glob("*-seed*"):
            status = run / "status.json"
            try:
                state = json.loads(status.read_text())
            except (OSError, ValueError):
                continue
            if state.get("state") == "running" and (run / "last.pt").is_file() and state.get("step", 0) >= 2:
                first.send_signal(signal.SIGKILL)  # mid-trial: no chance to tidy up
                killed = run.name
                break
        time.sleep(0.02)
    log1 = first.communicate(timeout=60)[1]
    assert killed is not None, log1
    second = subprocess.run(_race_cmd(config, out, data_dir), capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    log2 = second.stderr
    assert f"{killed}: continuing from its checkpoint" in log2 and "taken up again (its worker" in log2
    study = optuna.load_study(study_name="race", storage=open_storage(out / "study.journal"))
    trials = study.get_trials()
    assert len(trials) == 6 and len({t.user_attrs["run"] for t in trials}) == 6  # none lost, none doubled
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    for run in {t.user_attrs["run"] for t in trials}:
        assert (log1 + log2).count(f"race: {run}: starting") <= 1  # no trial started from scratch twice
        epochs = [e["epoch"] for e in read_jsonl(out / run / "epochs.jsonl")]
        assert epochs == list(range(1, len(epochs) + 1))  # the killed run continued, its logs cut back to its checkpoint
    assert json.loads((out / "race.json").read_text())["done"]


def _postgres_bin() -> Path | None:
    for v in ("17", "16", "15", "14", "13"):
        p = Path(f"/usr/lib/postgresql/{v}/bin")
        if (p / "initdb").is_file():
            return p
    return None


@pytest.fixture
def postgres(tmp_path):
    """A PostgreSQL server on a local socket for this test (Debian's postgresql package), or a skip saying why."""
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install 'switokd[race]')")
    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server here: apt-get install postgresql")
    import tempfile
    root = Path(tempfile.mkdtemp(prefix="switokd-pg-"))  # under /tmp: the postgres user must reach it
    as_user = []
    if os.geteuid() == 0:  # the server refuses to run as root: run it as Debian's postgres user
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start PostgreSQL as another user")
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(root / "data"), "-U", "postgres", "--auth=trust"],
                   check=True, capture_output=True)
    subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(root / "data"), "-w", "-l", str(root / "log"), "-o",
                    f"-k {root} -p {port} -c listen_addresses=''", "start"], check=True, capture_output=True)
    try:
        subprocess.run([*as_user, str(bin_dir / "createdb"), "-h", str(root), "-p", str(port), "-U", "postgres", "race"],
                       check=True, capture_output=True)
        yield f"postgresql+psycopg://postgres@/race?host={root}&port={port}"
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(root / "data"), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def test_a_postgresql_storage_shared_by_two_workers(tmp_path, data_dir, postgres):
    out = tmp_path / "race"
    result = race(RaceSpec(None, ["dml", "switokd", "vanilla"], [0], out, [*SMALL, f"data.dir={data_dir}"], eta=3, rungs=[1]), workers=2, storage=postgres, lease_s=30, log=lambda m: None)
    assert result.data["done"] and result.data["decisions"][0]["kept"]
    study = optuna.load_study(study_name="race", storage=postgres)
    assert {t.params["arm"] for t in study.get_trials()} == {"dml", "switokd", "vanilla"}
    assert not (out / "study.journal").exists()


def test_a_race_without_a_validation_split_is_refused(tmp_path):
    with pytest.raises(C.ConfigError, match="set data.val_split"):
        race(RaceSpec(None, ["dml"], [0], tmp_path, ["train.epochs=2"]), log=lambda m: None)


def test_a_different_race_in_the_same_storage_is_refused(raced, data_dir):
    out, _ = raced
    with pytest.raises(C.ConfigError, match=r"is another race \(arms"):
        race(RaceSpec(None, ["dml"], [0, 1], out, [*SMALL, f"data.dir={data_dir}"], eta=2, rungs=[1, 2]), log=lambda m: None)
    # The same race with one key changed: the error names the run and the key, not two digests (its run
    # directories are checked first, before the study is touched).
    with pytest.raises(C.ConfigError, match=r"vanilla-seed0 holds a run with another config \(train.eval_test: 'last' "
                                            r"there, 'every' here\)"):
        race(RaceSpec(None, METHODS, [0, 1], out, [*SMALL, f"data.dir={data_dir}", "train.eval_test=every"], eta=2, rungs=[1, 2]), log=lambda m: None)


def test_a_paused_run_continues_bit_exactly(tmp_path, data_dir):
    """fit(stop_after=k) then a resume is the uninterrupted run, epoch by epoch and weight by weight."""
    over = [*SMALL, f"data.dir={data_dir}", "method.name=dml", "train.eval_epochs=[1,3]"]
    whole = Trainer(C.load_config(None, [*over, f"train.out_dir={tmp_path}", "train.run_name=whole"]))
    whole.fit()
    paused = Trainer(C.load_config(None, [*over, f"train.out_dir={tmp_path}", "train.run_name=paused"]))
    report = paused.fit(stop_after=1)
    assert report["epochs"] == 1 and not (tmp_path / "paused" / "report.json").exists()
    assert json.loads((tmp_path / "paused" / "status.json").read_text())["state"] == "paused"
    Trainer.from_checkpoint(tmp_path / "paused").fit(stop_after=3)
    Trainer.from_checkpoint(tmp_path / "paused").fit()
    drop = ("train_time_s", "images_per_s", "epoch_time_s")
    rows = lambda run: [{k: v for k, v in r.items() if k not in drop} for r in read_jsonl(tmp_path / run / "epochs.jsonl")]  # noqa: E731
    assert rows("paused") == rows("whole") and [r["epoch"] for r in rows("whole") if "val" in r] == [1, 2, 3, 4]


@pytest.mark.slow
def test_a_trial_that_is_itself_a_torchrun_job(tmp_path, data_dir):
    """torchrun --nproc_per_node=2 -m switokd race ...: rank 0 claims each segment, both ranks train it."""
    config = tmp_path / "c.yaml"
    config.write_text("{}\n")
    out = tmp_path / "race"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port",
                        str(free_port()), "-m", "switokd", "race", "--config", str(config), "--methods", "dml",
                        "switokd", "vanilla", "--seeds", "0", "--out", str(out), "--rungs", "1", *SMALL,
                        "train.epochs=2", "train.batch_size=8", f"data.dir={data_dir}"],
                       capture_output=True, text=True, timeout=600, env=dict(os.environ, PYTHONFAULTHANDLER="1"))
    assert r.returncode == 0, r.stderr[-4000:]
    data = json.loads((out / "race.json").read_text())
    assert data["done"] and len(data["trials"]) == 3
    finisher = next(t for t in data["trials"] if t["state"] == "complete")
    ck = torch.load(out / finisher["run"] / "last.pt", map_location="cpu", weights_only=False)
    assert ck["world_size"] == 2  # trained by both ranks
    assert r.stderr.count("race: created study") == 1  # rank 0 alone talks to the storage


def test_sqlite_is_refused_and_a_zero_validation_split_named(tmp_path):
    with pytest.raises(C.ConfigError, match="SQLite does not lock rows"):
        open_storage(f"sqlite:///{tmp_path / 'x.db'}")
    from switokd.data.conditions import split_validation
    from switokd.data.readers import DatasetError
    from conftest import synthetic_splits
    with pytest.raises(DatasetError, match=r"data.val_split=0.001 of 64 training images is no image"):
        split_validation(synthetic_splits(), 0.001)


def test_a_failed_protected_trial_ranks_last_at_every_rung(tmp_path):
    """A trial that failed (diverged) counts 0 at every rung, its own stops or not, so no rung waits for it."""
    from switokd.race.engine import Study
    storage = optuna.storages.InMemoryStorage()
    optuna.create_study(study_name="r", storage=storage)
    optuna.create_study(study_name="r::work", storage=storage)
    s = Study(storage, "r")
    t = s.main.ask()
    t.suggest_categorical("arm", ["vanilla"])
    t.set_user_attr("stops", [8])
    s.main.tell(t, state=optuna.trial.TrialState.FAIL)
    (view,) = s.views(s.trials(), [2, 4, 8])
    assert view.finished and view.reported == {2: 0.0, 4: 0.0, 8: 0.0}


def test_a_segment_left_without_a_ticket_gets_one(tmp_path, data_dir):
    """A worker that died between failing a ticket and enqueueing its replacement: the next worker re-enqueues."""
    from switokd.race.engine import Study
    TS = optuna.trial.TrialState
    real_claim = Study.claim
    state = {"lost": False}

    def claim_then_lose(self, ticket_id):  # the first claim: the ticket fails and no replacement follows
        if not state["lost"]:
            state["lost"] = True
            self.finish(ticket_id, TS.FAIL)
            return False
        return real_claim(self, ticket_id)

    Study.claim = claim_then_lose
    try:
        r = race(RaceSpec(None, ["dml"], [0], tmp_path / "race", [*SMALL, f"data.dir={data_dir}", "train.epochs=2"], rungs=[1]), log=lambda m: None)
    finally:
        Study.claim = real_claim
    assert state["lost"] and r.data["done"] and r.data["trials"][0]["state"] == "complete"
    work = optuna.load_study(study_name="race::work", storage=open_storage(tmp_path / "race" / "study.journal"))
    assert [t.user_attrs.get("why") for t in work.get_trials()].count("no ticket left") == 1
