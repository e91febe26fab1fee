"""The race's engine on Optuna's storage: one study, a trial per (arm, seed), workers that pull segments.

**The study.** Every (arm, seed) is one trial of an Optuna study, with params ``arm`` and ``seed`` (and the
sampled hyperparameters, with ``--search``). Each trial reports the students' mean validation accuracy at every
evaluated epoch as an intermediate value, ends COMPLETE (value: the same at the last epoch) or PRUNED (stopped at
a rung), and carries its run directory, resolved config, curves and compute as user attributes: what
``optuna.load_study`` and optuna-dashboard show.

**The work.** A trial trains in *segments*, one per rung it reaches, each continuing from the trial's own
checkpoint. Every segment is a *ticket*: a trial of a second study, ``NAME::work``, created up front in state
WAITING. A worker takes a ticket by moving it to RUNNING, which every Optuna storage does atomically (the same
step ``study.ask`` uses to hand out an enqueued trial), so two workers never run the same segment; which
tickets may run is a pure function of the reports (``schedule``), so every worker agrees without a
coordinator. While a worker holds a ticket, a thread writes a heartbeat into it. A ticket whose heartbeat is
older than the lease, or whose process is gone (same host), is failed by whichever worker sees it first (again
atomic: only one succeeds) and that worker enqueues its replacement, which continues from the trial's last
checkpoint. So a killed worker loses at most the work since its run's last checkpoint, a finished trial is
never run again, and running the same command again resumes the race.

The storage is any Optuna storage: a journal file in the output directory by default (several processes on one
machine share it through its file lock), or an RDB URL (``postgresql://...``, ``mysql://...``) that workers on
several machines share. Workers on several machines need the output directory on a file system they all see:
a paused trial may continue on another machine, from its checkpoint.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .. import config as C
from ..errors import ConfigError, SwitokdError
from ..runs import files as F
from .schedule import TrialView, rung_epochs, schedule

FORMAT = 1
ATTR = "switokd_race"  # the study's user attribute holding the race's definition


def _optuna():
    try:
        import optuna
    except ImportError:  # pragma: no cover - a dependency
        raise SwitokdError("the race needs Optuna: pip install optuna") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def open_storage(storage: str | Path):
    """An Optuna storage from a URL or a path: ``postgresql://...``, ``mysql://...`` (an RDB storage), or a file
    path (a journal file, which several processes on one machine can share). A journal whose last record was torn
    (a crash or a full disk during a write) has that record cut off, under the journal's lock, before it is read."""
    optuna = _optuna()
    text = str(storage)
    if not text.strip():
        raise ConfigError("race: --storage is empty; give a journal file path or a database URL")
    if text.startswith("sqlite"):
        raise ConfigError(f"race: --storage {text!r}: SQLite does not lock rows, so two workers could take the same "
                          "trial; use a journal file (a path) on one machine, or PostgreSQL or MySQL for several")
    if "://" in text:
        try:
            return optuna.storages.RDBStorage(text)
        except Exception as e:  # a bad URL, a server that does not answer, a driver not installed
            why = " ".join(f"{type(e).__name__}: {e}".split())  # the drivers' messages span lines
            raise ConfigError(f"race: --storage {text!r} cannot be opened ({why})") from None
    from optuna.storages.journal import JournalFileBackend
    path = Path(text)
    check_journal(path)
    backend = JournalFileBackend(text)
    cut = repair_journal(path, backend)
    if cut:
        from ..log import logger
        logger.warning(f"race: {path}: cut a torn last record ({cut} bytes, a write interrupted by a crash); the "
                       "records before it are read")
    return optuna.storages.JournalStorage(backend)


def check_journal(path: Path) -> None:
    """Refuse, in one line, a journal path that cannot be one: a directory, a device, a file that is not an Optuna
    journal, or a place this process cannot write."""
    def bad(why: str) -> ConfigError:
        return ConfigError(f"race: --storage {str(path)!r} {why}; give a journal file path (default OUT/study.journal) "
                           "or a database URL")

    if path.is_dir():
        raise bad("is a directory")
    if path.exists() and not path.is_file():
        raise bad("is not a regular file")
    parent = path.parent
    if parent.exists() and not parent.is_dir():
        raise bad(f"is under {str(parent)!r}, which is a file")
    make_dir(parent, "--storage's folder")
    if path.exists():
        if not os.access(path, os.R_OK | os.W_OK):
            raise bad("is not readable and writable")
        with open(path, "rb") as f:
            first = f.readline()
        if first.strip():
            try:
                record = json.loads(first)
            except ValueError:
                record = None
            if not isinstance(record, dict) or "op_code" not in record:
                raise bad("is not an Optuna journal (its first line is not a journal record)")
    elif not os.access(parent, os.W_OK | os.X_OK):
        raise bad(f"cannot be created: {str(parent)!r} is not writable")


def make_dir(path: Path, what: str) -> None:
    """Create the directory ``path`` (and its parents), or refuse in one line naming ``what``: a file there, a
    place that cannot be created, or one this process cannot write."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"race: {what} {str(path)!r} is a file; give a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"race: {what} {str(path)!r} cannot be created ({e.strerror or e})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"race: {what} {str(path)!r} is not writable")


def repair_journal(path: Path, backend: Any) -> int:
    """Cut a torn last record off a journal file, under its lock; returns the bytes cut (0: the file was whole).

    Optuna appends whole lines under the lock, so only a crash, a full disk or a power loss during a write leaves
    a last line without its newline; the next append would glue a record to it, and every read would then fail."""
    if not path.is_file():
        return 0
    from optuna.storages.journal._file import get_lock_file
    with get_lock_file(backend._lock):
        size = path.stat().st_size
        if size == 0:
            return 0
        with open(path, "rb+") as f:
            f.seek(max(0, size - 1))
            if f.read(1) == b"\n":
                return 0
            keep, pos, chunk = 0, size, 1 << 16  # the offset just past the last newline
            while pos > 0:
                start = max(0, pos - chunk)
                f.seek(start)
                block = f.read(pos - start)
                at = block.rfind(b"\n")
                if at >= 0:
                    keep = start + at + 1
                    break
                pos = start
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
    return size - keep


@dataclass
class Segment:
    """One claimed ticket: train ``trial`` to ``stop``."""

    ticket_id: int
    ticket_number: int
    trial_id: int
    trial_number: int
    stop: int


@dataclass
class RaceDefinition:
    """What a race is, stored in its study so that every worker (and a later run of the command) agrees on it."""

    name: str
    out: str
    epochs: int
    rungs: list[int]
    eta: float
    protected: list[str]
    arms: list[str]
    seeds: list[int]
    command: str = ""
    search: dict[str, Any] = field(default_factory=dict)
    configs: str = ""  # a digest of every trial's resolved config
    format: int = FORMAT

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RaceDefinition":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass
class TrialSpec:
    """A trial to create: its arm and seed, its run directory's name, its resolved config and its segments."""

    arm: str
    seed: int
    run: str
    config: dict[str, Any]
    kind: str = "arm"  # arm | teacher
    stops: list[int] = field(default_factory=list)
    needs: str | None = None  # the run (directory name) that must finish first
    params: dict[str, Any] = field(default_factory=dict)  # sampled hyperparameters


class Study:
    """The race's two studies on one storage, and the few operations the workers need on them."""

    def __init__(self, storage: Any, name: str) -> None:
        self.optuna = _optuna()
        self.storage = storage
        self.name = name
        self.main = self.optuna.load_study(study_name=name, storage=storage)
        self.work = self.optuna.load_study(study_name=name + "::work", storage=storage)

    # ----------------------------------------------------------------- creation

    @classmethod
    def create_or_join(cls, storage: Any, definition: RaceDefinition, make_trials: Callable[[], list[TrialSpec]],
                       log: Callable[[str], None], wait_s: float = 120.0) -> "Study":
        """Create the race's studies and trials (the first process to get here), or join them (the others): a
        race joined with another definition is refused, naming what differs."""
        optuna = _optuna()
        name = definition.name
        try:
            main = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=False)
        except optuna.exceptions.DuplicatedStudyError:
            return cls._join(storage, definition, log, wait_s, make_trials)
        main.set_user_attr("creating", _process_identity())  # a joiner that finds this process gone starts over
        work = optuna.create_study(study_name=name + "::work", storage=storage, load_if_exists=True)
        trials = make_trials()
        numbers = {}
        for spec in trials:
            params = {"arm": spec.arm, "seed": spec.seed, **spec.params}
            main.enqueue_trial(params)
            t = main.ask()
            t.suggest_categorical("arm", list(dict.fromkeys(s.arm for s in trials)))
            t.suggest_categorical("seed", sorted({s.seed for s in trials}))
            for k, v in spec.params.items():
                t.suggest_float(k, v, v) if isinstance(v, float) else t.suggest_categorical(k, [v])
            for key, value in (("kind", spec.kind), ("run", spec.run), ("stops", spec.stops),
                               ("needs", spec.needs), ("config", spec.config)):
                t.set_user_attr(key, value)
            numbers[spec.run] = t.number
            for stop in spec.stops:
                work.enqueue_trial({}, user_attrs={"trial": t.number, "stop": stop})
        main.set_user_attr(ATTR, definition.as_dict())  # last: joiners wait for it
        log(f"race: created study {name!r} with {len(trials)} trials, rungs at epochs {definition.rungs}")
        return cls(storage, name)

    @classmethod
    def _join(cls, storage: Any, definition: RaceDefinition, log: Callable[[str], None], wait_s: float,
              make_trials: Callable[[], list[TrialSpec]] | None = None) -> "Study":
        optuna = _optuna()
        deadline = time.monotonic() + wait_s
        said = False
        while True:
            main = optuna.load_study(study_name=definition.name, storage=storage)
            stored = main.user_attrs.get(ATTR)
            if stored is not None:
                break
            creator = main.user_attrs.get("creating")
            if creator is not None and _gone(creator):
                # Its set-up died before any worker could start (they wait for the definition): start it over.
                log(f"race: the set-up of study {definition.name!r} was interrupted (process {creator.get('pid')} "
                    "is gone); creating it again")
                for n in (definition.name, definition.name + "::work"):
                    try:
                        optuna.delete_study(study_name=n, storage=storage)
                    except KeyError:
                        pass
                return cls.create_or_join(storage, definition, make_trials or (lambda: []), log, wait_s)
            if not said:
                who = f"process {creator.get('pid')} on {creator.get('host')}" if creator else "another process"
                log(f"race: waiting for {who} to finish setting up study {definition.name!r}")
                said = True
            if time.monotonic() > deadline:
                raise ConfigError(f"race: the study {definition.name!r} exists but its set-up never finished (the "
                                  "process creating it died?); remove it (the journal file in --out, or the study "
                                  "in --storage) and run again")
            time.sleep(0.5)
        mine = definition.as_dict()
        differ = [k for k in ("arms", "seeds", "epochs", "rungs", "eta", "search", "out", "configs")
                  if json.dumps(stored.get(k), sort_keys=True) != json.dumps(mine.get(k), sort_keys=True)]
        if differ:
            k = differ[0]
            what = (f"{k}: {stored.get(k)!r} there, {mine.get(k)!r} here" if k != "configs" or make_trials is None
                    else config_difference(main.get_trials(deepcopy=False), make_trials()))
            raise ConfigError(f"race: the study {definition.name!r} in this storage is another race ({what}); use "
                              "another --out, --storage or --study, or the same command")
        log(f"race: joined study {definition.name!r}")
        return cls(storage, definition.name)

    def definition(self) -> RaceDefinition:
        return RaceDefinition.from_dict(self.main.user_attrs[ATTR])

    # ----------------------------------------------------------------- reading

    def trials(self) -> list[Any]:
        return self.main.get_trials(deepcopy=False)

    def tickets(self) -> list[Any]:
        return self.work.get_trials(deepcopy=False)

    def views(self, trials: Sequence[Any], rungs: Sequence[int] = ()) -> list[TrialView]:
        TS = self.optuna.trial.TrialState
        runs = {t.user_attrs.get("run"): t.number for t in trials}
        views = []
        for t in trials:
            failed = t.state == TS.FAIL
            reported = {int(k): float(v) for k, v in t.intermediate_values.items()}
            if failed:  # a failed run (diverged, bad data) ranks last at every rung it had not reached
                for stop in [*t.user_attrs.get("stops", []), *rungs]:
                    reported.setdefault(int(stop), 0.0)
            views.append(TrialView(t.number, t.params.get("arm", "?"), t.params.get("seed", 0),
                                   t.user_attrs.get("kind", "arm"), list(t.user_attrs.get("stops", [])), reported,
                                   t.state.is_finished(), runs.get(t.user_attrs.get("needs"))))
        return views

    # ----------------------------------------------------------------- state changes (atomic in every storage)

    def finish(self, trial_id: int, state: Any, values: Sequence[float] | None = None) -> bool:
        """Move a trial (or ticket) to a finished state; False if another process finished it first."""
        try:
            return bool(self.storage.set_trial_state_values(trial_id, state, values))
        except self.optuna.exceptions.UpdateFinishedTrialError:
            return False

    def claim(self, ticket_id: int) -> bool:
        """Take a WAITING ticket; False if another worker took it first."""
        TS = self.optuna.trial.TrialState
        try:
            return bool(self.storage.set_trial_state_values(ticket_id, TS.RUNNING))
        except self.optuna.exceptions.UpdateFinishedTrialError:
            return False

    def beat(self, ticket_id: int) -> None:
        self.storage.set_trial_user_attr(ticket_id, "lease", {**_process_identity(), "beat": time.time()})

    def replace(self, ticket: Any, why: str) -> None:
        """Enqueue a new ticket for a failed one's segment (the caller failed it: only one process does)."""
        self.work.enqueue_trial({}, user_attrs={"trial": ticket.user_attrs["trial"], "stop": ticket.user_attrs["stop"],
                                                "replaces": ticket.number, "why": why})


def config_difference(stored: Sequence[Any], mine: Sequence[TrialSpec]) -> str:
    """The first config key where a stored trial and this command's trial of the same run differ, in words (a
    race's definition keeps only a digest of its trials' configs)."""
    theirs = {t.user_attrs.get("run"): t.user_attrs.get("config", {}) for t in stored}
    for spec in mine:
        if spec.run not in theirs:
            return f"trial {spec.run!r} is not in the stored race"
        diff = first_difference(theirs[spec.run], spec.config)
        if diff:
            return f"{spec.run}'s {diff}"
    return "the trials' configs differ"


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def _process_identity() -> dict[str, Any]:
    """Who holds a ticket: the host, its boot, the PID namespace and the pid (a pid is only comparable with the
    same host, boot and namespace: containers can share a host name)."""
    try:
        pidns = os.readlink("/proc/self/ns/pid")
    except OSError:
        pidns = ""
    return {"host": socket.gethostname(), "boot": _read("/proc/sys/kernel/random/boot_id"), "pidns": pidns,
            "pid": os.getpid()}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _gone(identity: dict[str, Any]) -> bool:
    """Whether the process ``identity`` names is known to be gone (it ran on this host, boot and PID namespace)."""
    me = _process_identity()
    return all(identity.get(k) == me[k] for k in ("host", "boot", "pidns")) and not _pid_alive(int(identity.get("pid", -1)))


def stale(ticket: Any, lease_s: float, now: float | None = None) -> str:
    """Why a RUNNING ticket's worker is taken for gone ("" if it is not): no heartbeat for ``lease_s`` seconds, or
    its process no longer exists on this host."""
    lease = ticket.user_attrs.get("lease")
    now = time.time() if now is None else now
    if lease is None:  # claimed, but never beat: its age counts from the claim
        start = ticket.datetime_start.timestamp() if ticket.datetime_start else now
        return f"no heartbeat in {now - start:.0f}s" if now - start > lease_s else ""
    if _gone(lease):
        return f"its worker (pid {lease.get('pid')}) is gone"
    if now - float(lease.get("beat", now)) > lease_s:
        return f"no heartbeat for {now - float(lease['beat']):.0f}s (lease {lease_s:g}s)"
    return ""


class Heartbeat:
    """A thread that beats a claimed ticket every ``every`` seconds, and notices when the ticket was taken from
    this worker (failed by another for a missed lease). ``guard`` is called before every write into the run
    directory: it raises ``SegmentLost`` once the ticket is gone, and asks the storage itself when the last
    confirmation is older than two beats (the process was stopped, or the machine slept), so that a worker
    that wakes after its lease wrote nothing into the directory its replacement owns."""

    def __init__(self, study: Study, ticket_id: int, every: float) -> None:
        self.study, self.ticket_id, self.every = study, ticket_id, every
        self.lost = threading.Event()
        self.confirmed = time.time()  # wall clock: it runs on while the process is stopped or the machine sleeps
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="switokd-race-heartbeat")

    def __enter__(self) -> "Heartbeat":
        self.study.beat(self.ticket_id)
        self.confirmed = time.time()
        self._thread.start()
        return self

    def holds(self) -> bool:
        """Ask the storage whether this worker still holds its ticket (and beat it if so)."""
        TS = self.study.optuna.trial.TrialState
        seen = time.time()
        if self.study.storage.get_trial(self.ticket_id).state != TS.RUNNING:
            self.lost.set()
            return False
        self.study.beat(self.ticket_id)
        self.confirmed = seen
        return True

    def guard(self) -> None:
        if not self.lost.is_set() and time.time() - self.confirmed > 2 * self.every:
            self.holds()
        if self.lost.is_set():
            raise SegmentLost("the race gave this segment to another worker (missed heartbeats); this worker "
                              "writes nothing more into the run directory")

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                if not self.holds():
                    return
            except Exception:  # a storage hiccup: the next beat tries again
                pass

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def run_summary(run_dir: Path, roles: dict[str, str]) -> dict[str, Any]:
    """What a trial's run directory says so far: its curves, the compute it spent, its last report."""
    epochs = F.read_jsonl(run_dir / F.EPOCHS) if (run_dir / F.EPOCHS).is_file() else []
    mean = lambda split: F.students_mean({n: r["acc"] for n, r in split.items()}, roles)  # noqa: E731
    curve = [{"epoch": e["epoch"], **({"val": mean(e["val"])} if "val" in e else {}),
              **({"test": mean(e["test"])} if "test" in e else {})}
             for e in epochs if "val" in e or "test" in e]
    images = sum(e.get("images", e.get("images_per_s", 0.0) * e.get("train_time_s", 0.0)) for e in epochs)
    paused = {}
    for e in epochs:
        for net, share in e.get("switch", {}).get("paused_share", {}).items():
            paused[net] = paused.get(net, 0.0) + share * e.get("steps", 0)
    return {"epochs": len(epochs), "curve": curve, "images": round(images),
            "train_time_s": sum(e.get("train_time_s", 0.0) for e in epochs),
            "wall_time_s": sum(e.get("epoch_time_s", e.get("train_time_s", 0.0)) for e in epochs),
            "teacher_steps_saved": {n: round(v) for n, v in paused.items()},
            "steps": sum(e.get("steps", 0) for e in epochs)}


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys, as overrides spell them: a list of named entries (the networks) by name."""
    if isinstance(tree, list) and tree and all(isinstance(v, dict) and "name" in v for v in tree):
        tree = {v["name"]: v for v in tree}
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in _flat(sub, f"{prefix}{key}.").items()}
    return {prefix[:-1]: tree}


def first_difference(theirs: dict[str, Any], mine: dict[str, Any]) -> str:
    """The first key (dotted) whose value differs between two config dicts, in words ("" if none does)."""
    a, b = _flat(theirs), _flat(mine)
    for key in sorted(a.keys() | b.keys()):
        if json.dumps(a.get(key), sort_keys=True) != json.dumps(b.get(key), sort_keys=True):
            return f"{key}: {a.get(key)!r} there, {b.get(key)!r} here"
    return ""


def reuse_conflict(run_dir: Path, cfg: C.Config) -> tuple[str, dict[str, Any] | None]:
    """Whether ``run_dir`` may be used for a run of ``cfg``: ("", checkpoint or None) when it is new or holds a
    run of the same resolved config; otherwise why not, naming the first differing key."""
    from ..train.checkpoint import load_training_checkpoint

    if not (run_dir / F.LAST).is_file():
        if (run_dir / F.REPORT).is_file():
            return f"{run_dir} holds a finished run's report.json but no last.pt to check its config against", None
        return "", None
    saved = load_training_checkpoint(run_dir / F.LAST)
    diff = first_difference(C.to_dict(C.from_dict(saved["config"])), C.to_dict(cfg))
    return (f"{run_dir} holds a run with another config ({diff})" if diff else ""), saved


def run_segment(cfg: C.Config, run_dir: Path, stop: int, log: Callable[[str], None],
                guard: Callable[[], None] | None = None) -> None:
    """Train one run to epoch ``stop``: start it, continue it from its checkpoint, or nothing if it is there.

    A directory holding a run of another config is refused, finished or not. ``guard`` is called before every
    write into the run directory (``Heartbeat.guard``)."""
    from ..train.trainer import Trainer

    if guard is not None:
        guard()
    conflict, saved = reuse_conflict(run_dir, cfg)
    if conflict:
        raise ConfigError(f"race: {conflict}; move it away or use another --out")
    report = run_dir / F.REPORT
    if report.is_file():
        try:
            if json.loads(report.read_text()).get("epochs") == cfg.train.epochs:
                log(f"race: {run_dir.name}: finished earlier, skipped")
                return
        except (OSError, ValueError):
            pass
    if saved is not None:
        if saved["epoch"] >= stop and not saved.get("loader", {}).get("batch"):
            return
        log(f"race: {run_dir.name}: continuing from its checkpoint (epoch {saved['epoch']}) to epoch {stop}")
        trainer = Trainer.from_checkpoint(run_dir / F.LAST)
    else:
        log(f"race: {run_dir.name}: starting" + (f", to epoch {stop}" if stop < cfg.train.epochs else ""))
        trainer = Trainer(cfg)
    trainer.rundir.guard = guard
    trainer.stop.resume_hint = "run the same race or sweep command again"
    trainer.fit(stop_after=stop)


class SegmentLost(SwitokdError):
    """This worker's ticket was failed by another (missed heartbeats): it stops without writing again."""


@dataclass
class WorkerOptions:
    lease_s: float = 120.0
    poll_s: float = 2.0
    on_trial_complete: Callable[[Any], None] | None = None  # called with the finished Optuna trial


def next_segment(study: Study, d: RaceDefinition, options: WorkerOptions,
                 log: Callable[[str], None]) -> tuple[str, Segment | None, Any]:
    """Decide what the reports allow, stop what a rung stopped, take up the segments of workers that are gone,
    and claim a segment: ("run", segment, trial), ("wait", None, None) or ("done", None, None)."""
    TS = study.optuna.trial.TrialState
    trials, tickets = study.trials(), study.tickets()
    by_number = {t.number: t for t in trials}
    # Tickets of workers that are gone: fail (one process wins) and enqueue the replacement.
    gone = False
    for tk in tickets:
        if tk.state == TS.RUNNING:
            why = stale(tk, options.lease_s)
            if why:
                gone = True
                if study.finish(tk._trial_id, TS.FAIL):
                    log(f"race: segment of trial {tk.user_attrs['trial']} to epoch {tk.user_attrs['stop']} taken "
                        f"up again ({why})")
                    study.replace(tk, why)
    if gone:
        return "wait", None, None
    # A trial whose teacher run failed cannot start: it fails too, saying why.
    for t in trials:
        need = t.user_attrs.get("needs")
        source = next((u for u in trials if u.user_attrs.get("run") == need), None) if need else None
        if source is not None and source.state == TS.FAIL and not t.state.is_finished():
            study.storage.set_trial_user_attr(t._trial_id, "error", f"its teacher run {need} failed")
            if study.finish(t._trial_id, TS.FAIL):
                log(f"race: {t.user_attrs['run']} cannot run: its teacher run {need} failed")
            return "wait", None, None
    sch = schedule(study.views(trials, d.rungs), d.rungs, d.eta, d.protected)
    for number, epoch in sch.pruned.items():
        if study.finish(by_number[number]._trial_id, TS.PRUNED):
            log(f"race: {by_number[number].user_attrs['run']} stopped at epoch {epoch}")
    for tk in tickets:  # the segments of stopped trials
        if tk.state == TS.WAITING and tk.user_attrs["trial"] in sch.pruned:
            study.finish(tk._trial_id, TS.PRUNED)
    if sch.done:
        return "done", None, None
    # Per segment, only its lowest-numbered unfinished ticket may run (a segment can have two: a replacement
    # enqueued twice), and a segment the schedule wants with no unfinished ticket gets one (a replacement lost
    # between its predecessor's failure and its own enqueueing).
    open_tickets: dict[tuple[int, int], Any] = {}
    for tk in sorted(tickets, key=lambda tk: tk.number):
        key = (tk.user_attrs["trial"], tk.user_attrs["stop"])
        if not tk.state.is_finished() and key not in open_tickets:
            open_tickets[key] = tk
    for number, stop in sch.next_stop.items():
        if (number, stop) not in open_tickets and not by_number[number].state.is_finished():
            study.work.enqueue_trial({}, user_attrs={"trial": number, "stop": stop, "why": "no ticket left"})
            return "wait", None, None
    # Teachers first: a seed's offline trials cannot start before its teacher has trained to the end, and the rung
    # waits for them, so a teacher taken last would leave the other workers idle. Then the lowest rung first.
    needed = {t.user_attrs.get("needs") for t in trials if not t.state.is_finished()} - {None}
    candidates = sorted(((by_number[number].user_attrs.get("run") not in needed, stop, number, tk.number, tk)
                         for (number, stop), tk in open_tickets.items()
                         if tk.state == TS.WAITING and sch.next_stop.get(number) == stop), key=lambda c: c[:4])
    for _, stop, number, _, tk in candidates:
        if study.claim(tk._trial_id):
            return "run", Segment(tk._trial_id, tk.number, by_number[number]._trial_id, number, stop), by_number[number]
    return "wait", None, None  # the others' segments decide the next rung


def work(study: Study, options: WorkerOptions, log: Callable[[str], None]) -> None:
    """One worker's loop: claim and train one segment at a time until every trial is finished or stopped."""
    d = study.definition()
    while True:
        what, seg, trial = next_segment(study, d, options, log)
        if what == "done":
            return
        if what == "wait":
            time.sleep(options.poll_s)
            continue
        _run_claimed(study, seg, trial, d, options, log)


def work_ranks(study: Study | None, out: str, options: WorkerOptions, log: Callable[[str], None], dist: Any) -> None:
    """A worker that is a torchrun job: rank 0 talks to the storage and hands each claimed segment to every rank;
    all ranks train it together (each its shard of every batch, as ``switokd train`` under torchrun)."""
    import torch.distributed as tdist
    d = study.definition() if dist.is_main else None
    while True:
        msg: list[Any] = [None]
        if dist.is_main:
            what, seg, trial = next_segment(study, d, options, log)
            if what == "wait":
                time.sleep(options.poll_s)
            msg = [(what, seg, trial.user_attrs["config"] if trial is not None else None,
                    trial.user_attrs["run"] if trial is not None else None)]
        tdist.broadcast_object_list(msg, src=0)
        what, seg, config, run = msg[0]
        if what == "done":
            return
        if what == "wait":
            continue
        if dist.is_main:
            _run_claimed(study, seg, study.storage.get_trial(seg.trial_id), d, options, log)
        else:
            from ..errors import TrainingDiverged
            try:
                run_segment(C.from_dict(config), Path(out) / run, seg.stop, lambda m: None)
            except TrainingDiverged:  # every rank saw it (the check is global); rank 0 records it
                pass


def _run_claimed(study: Study, seg: Segment, trial: Any, d: RaceDefinition, options: WorkerOptions,
                 log: Callable[[str], None]) -> None:
    from ..errors import TrainingDiverged

    TS = study.optuna.trial.TrialState
    cfg = C.from_dict(trial.user_attrs["config"])
    run_dir = Path(d.out) / trial.user_attrs["run"]
    roles = {n.name: n.role for n in cfg.networks}
    with Heartbeat(study, seg.ticket_id, max(options.lease_s / 4, 0.5)) as hb:
        try:
            # Under torchrun every rank must stop together: no early stop on a lost ticket there.
            several = int(os.environ.get("WORLD_SIZE", "1")) > 1
            run_segment(cfg, run_dir, seg.stop, log, None if several else hb.guard)
        except SegmentLost:
            log(f"race: {run_dir.name}: this worker lost its segment (missed heartbeats); its replacement continues")
            return
        except TrainingDiverged as e:  # a method that diverges has lost; the race goes on
            log(f"race: {run_dir.name} diverged: {e}")
            study.storage.set_trial_user_attr(seg.trial_id, "error", str(e))
            study.finish(seg.trial_id, TS.FAIL)
            study.finish(seg.ticket_id, TS.FAIL)
            return
        except BaseException as e:  # stopped (a signal, Ctrl-C) or an error to fix: the segment waits for the next worker
            if study.finish(seg.ticket_id, TS.FAIL):
                study.replace(study.storage.get_trial(seg.ticket_id), f"{type(e).__name__}: {e}"[:200])
            raise
    if hb.lost.is_set() or study.storage.get_trial(seg.ticket_id).state != TS.RUNNING:
        log(f"race: {run_dir.name}: this worker lost its segment (missed heartbeats); its replacement continues")
        return
    summary = run_summary(run_dir, roles)
    # A sweep without a validation split picks on the test split, as a single run does (its tables say so); the
    # race refuses to start without one.
    split = "val" if cfg.data.val_split > 0 else "test"
    if not any(p["epoch"] == seg.stop and split in p for p in summary["curve"]):
        why = f"no {'validation' if split == 'val' else 'test'} accuracy at epoch {seg.stop} (is it evaluated there?)"
        log(f"race: {run_dir.name} failed: {why}")
        study.storage.set_trial_user_attr(seg.trial_id, "error", why)
        study.finish(seg.trial_id, TS.FAIL)
        study.finish(seg.ticket_id, TS.FAIL)
        return
    try:  # another worker may decide the rung, and stop this trial, as soon as the value is in
        study.storage.set_trial_user_attr(seg.trial_id, "summary", summary)
        for point in summary["curve"]:
            if split in point and point["epoch"] <= seg.stop:
                study.storage.set_trial_intermediate_value(seg.trial_id, point["epoch"], point[split])
    except study.optuna.exceptions.UpdateFinishedTrialError:
        pass
    if seg.stop == trial.user_attrs["stops"][-1]:
        report_path = run_dir / F.REPORT
        report = json.loads(report_path.read_text()) if report_path.is_file() else {}
        study.storage.set_trial_user_attr(seg.trial_id, "report", report)
        value = next(p[split] for p in summary["curve"] if split in p and p["epoch"] == seg.stop)
        if study.finish(seg.trial_id, TS.COMPLETE, [value]) and options.on_trial_complete is not None:
            options.on_trial_complete(study.storage.get_trial(seg.trial_id))
    # A COMPLETE trial has its value in Optuna's invariants (its readers sort by it): a ticket's is its stop.
    study.finish(seg.ticket_id, TS.COMPLETE, [float(seg.stop)])


__all__ = ["open_storage", "check_journal", "repair_journal", "reuse_conflict", "first_difference", "Study", "RaceDefinition", "TrialSpec", "WorkerOptions", "work", "work_ranks", "run_segment",
           "run_summary", "stale", "rung_epochs", "config_difference"]
