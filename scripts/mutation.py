"""Mutation testing of switokd's core with mutmut, in passes, and the summary in benchmarks/results/mutation.md.

  python scripts/mutation.py run [PASS ...]     # mutate and test (long: hours on 2 cores); resumable
  python scripts/mutation.py summary            # scores per module and every surviving mutant

Each pass mutates a group of modules and runs, for every mutant, the tests of that group that reach the
mutated function (mutmut's own selection), fastest first. A pass works in its own copy of the tracked files
under .mutation/<pass>/, so the passes' results stay apart and a run can be resumed. Surviving mutants that
cannot change behaviour are listed with the reason in scripts/mutation_equivalent.tsv; the score counts them
out: killed / (mutants - equivalent). "No tests" mutants (no selected test reaches them) count as survivors.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".mutation"
EQUIVALENT = ROOT / "scripts" / "mutation_equivalent.tsv"
OUT = ROOT / "benchmarks" / "results" / "mutation.md"

TRAINER_FUNCTIONS = ["forward", "train_step", "train_epoch", "_set_lrs", "_update_best", "state_dict",
                     "load_state_dict", "save_checkpoint", "from_checkpoint"]
PASSES: dict[str, dict] = {
    "core": {"mutate": ["src/switokd/core/switching.py", "src/switokd/core/losses.py", "src/switokd/methods/*"],
             "tests": ["tests/test_switching.py", "tests/test_methods.py", "tests/test_methods_cohorts.py"]},
    "config": {"mutate": ["src/switokd/config.py"], "tests": ["tests/test_config.py", "tests/test_fuzz.py"]},
    "data": {"mutate": ["src/switokd/data/transforms.py", "src/switokd/data/loader.py"],
             "tests": ["tests/test_data.py", "tests/e2e/test_distributed.py::test_shards_cover_every_example_once",
                       "tests/e2e/test_distributed.py::test_loader_shards_are_the_single_process_batch"]},
    "engine": {"mutate": ["src/switokd/train/engine.py"],
               "tests": ["tests/test_trainer.py", "tests/test_usability.py", "tests/test_methods.py"]},
    "trainer": {"mutate": ["src/switokd/train/trainer.py"],
                "names": [f"switokd.train.trainer.x*Trainer*{f}__mutmut_*" for f in TRAINER_FUNCTIONS],
                "tests": ["tests/test_trainer.py", "tests/test_checkpoint.py", "tests/test_methods.py",
                          "tests/test_methods_cohorts.py"]},
}
# The modules reported, with the score the issue asks of each.
TARGETS = {"switching": 95, "losses": 95, "methods": 95, "config": 85, "data.transforms": 85, "data.loader": 85,
           "engine": 85, "trainer (step, state, resume)": 85}


def module_of(mutant: str) -> str:
    """The TARGETS row of a mutant: switokd.core.switching.x_... -> switching, switokd.train.trainer... -> trainer."""
    name = mutant.split(".x", 1)[0].removeprefix("switokd.")
    if name.startswith("methods"):
        return "methods"
    name = name.removeprefix("core.").removeprefix("train.")
    if name == "trainer":
        return "trainer (step, state, resume)"
    return name


def prepare(name: str, spec: dict) -> Path:
    """A copy of the tracked files with this pass's [tool.mutmut] section."""
    d = WORK / name
    if not (d / "pyproject.toml").exists():
        d.mkdir(parents=True, exist_ok=True)
        files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
        for f in files:
            (d / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, d / f)
        os.symlink(ROOT / ".venv", d / ".venv")
    text = (ROOT / "pyproject.toml").read_text()
    section = text[text.index("[tool.mutmut]"):]
    new = re.sub(r"only_mutate = \[[^\]]*\]", "only_mutate = " + json.dumps(spec["mutate"]), section, flags=re.S)
    tests = ["-m", "not slow and not gpu", *spec["tests"]]
    new = re.sub(r"pytest_add_cli_args_test_selection = \[[^\]]*\]",
                 "pytest_add_cli_args_test_selection = " + json.dumps(tests), new, flags=re.S)
    (d / "pyproject.toml").write_text(text.replace(section, new))
    return d


def run(passes: list[str], children: int) -> None:
    for name in passes:
        spec = PASSES[name]
        d = prepare(name, spec)
        t0 = time.time()
        print(f"mutation: pass {name} in {d}", flush=True)
        subprocess.run([str(d / ".venv" / "bin" / "mutmut"), "run", "--max-children", str(children),
                        *spec.get("names", [])], cwd=d)
        print(f"mutation: pass {name} took {time.time() - t0:.0f} s", flush=True)
        (d / "elapsed_s").write_text(f"{time.time() - t0:.0f}")


def results(name: str) -> dict[str, str]:
    d = WORK / name
    if not (d / "mutants").is_dir():
        return {}
    out = subprocess.run([str(d / ".venv" / "bin" / "mutmut"), "results", "--all", "true"], cwd=d,
                         capture_output=True, text=True).stdout
    res = {}
    for line in out.splitlines():
        if ": " in line:
            mutant, status = line.strip().rsplit(": ", 1)
            res[mutant] = status
    spec = PASSES[name]
    if "names" in spec:
        import fnmatch
        res = {m: s for m, s in res.items() if any(fnmatch.fnmatch(m, p) for p in spec["names"])}
    return res


def diff_line(name: str, mutant: str) -> str:
    """The mutated line(s) of a mutant, as 'old -> new'."""
    d = WORK / name
    out = subprocess.run([str(d / ".venv" / "bin" / "mutmut"), "show", mutant], cwd=d, capture_output=True,
                         text=True).stdout
    minus = [ln[1:].strip() for ln in out.splitlines() if ln.startswith("-") and not ln.startswith("---")]
    plus = [ln[1:].strip() for ln in out.splitlines() if ln.startswith("+") and not ln.startswith("+++")]
    return f"`{' '.join(minus)[:110]}` → `{' '.join(plus)[:110]}`"


def equivalent() -> dict[str, str]:
    if not EQUIVALENT.is_file():
        return {}
    rows = [ln.split("\t", 1) for ln in EQUIVALENT.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    return {m.strip(): why.strip() for m, why in rows}


def summary(title: str = "after") -> str:
    eq = equivalent()
    by_module: dict[str, Counter] = defaultdict(Counter)
    survivors: list[tuple[str, str, str]] = []
    elapsed = {}
    for name in PASSES:
        res = results(name)
        if (WORK / name / "elapsed_s").is_file():
            elapsed[name] = (WORK / name / "elapsed_s").read_text().strip()
        for mutant, status in res.items():
            mod = module_of(mutant)
            if status in ("survived", "no tests") and mutant in eq:
                status = "equivalent"
            by_module[mod][status] += 1
            if status in ("survived", "no tests"):
                survivors.append((name, mod, mutant))
    lines = [f"| module | mutants | killed | equivalent | survived | no tests | timeout/other | score | target |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for mod in TARGETS:
        c = by_module.get(mod, Counter())
        total = sum(c.values())
        other = total - sum(c[k] for k in ("killed", "equivalent", "survived", "no tests"))
        denom = total - c["equivalent"]
        score = 100.0 * (c["killed"] + c["timeout"]) / denom if denom else float("nan")
        lines.append(f"| {mod} | {total} | {c['killed']} | {c['equivalent']} | {c['survived']} | {c['no tests']} | "
                     f"{other} | {score:.1f}% | {TARGETS[mod]}% |")
    text = "\n".join(lines)
    surv = ["| module | mutant | change |", "|---|---|---|"]
    surv += [f"| {mod} | `{m}` | {diff_line(p, m)} |" for p, mod, m in survivors]
    eq_rows = ["| mutant | why it cannot change behaviour |", "|---|---|"] + [f"| `{m}` | {w} |" for m, w in eq.items()]
    return (f"### Scores ({title})\n\n{text}\n\nA killed mutant failed at least one test; a timeout counts as killed. "
            f"Score = killed / (mutants − equivalent).\n\n### Surviving mutants ({len(survivors)})\n\n"
            + ("\n".join(surv) if survivors else "None.") + f"\n\n### Equivalent mutants ({len(eq)})\n\n" + "\n".join(eq_rows)
            + "\n\nPass times (s): " + ", ".join(f"{k} {v}" for k, v in elapsed.items()) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["run", "summary", "clean"])
    p.add_argument("passes", nargs="*", default=list(PASSES))
    p.add_argument("--children", type=int, default=int(os.environ.get("MUTMUT_CHILDREN", "2")))
    p.add_argument("--title", default="after")
    p.add_argument("--out", help="write the summary here too")
    args = p.parse_args(argv)
    if args.what == "clean":
        shutil.rmtree(WORK, ignore_errors=True)
        return 0
    if args.what == "run":
        run(args.passes, args.children)
    text = summary(args.title)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
