"""The layers: one import direction and no cycle, counting imports inside functions; the tools over run
directories import neither torch nor the training runtime; each module has one import path (no
``sys.modules[__name__] = ...`` aliases at the old ones)."""
import ast
import importlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "switokd"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    rel = Path(*name.split(".")[1:]) if "." in name else Path()
    return (SRC / rel).with_suffix(".py").is_file() or (SRC / rel / "__init__.py").is_file()


def import_graph() -> dict[str, set[str]]:
    """module -> the switokd modules it imports, anywhere in its body."""
    graph = {}
    for path in SRC.rglob("*.py"):
        name = _module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if not target.startswith("switokd"):
                    continue
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    edges.add(sub if _is_module(sub) else target)
            elif isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name.startswith("switokd")}
        graph[name] = {e for e in edges if e != name}
    return graph


def test_no_import_cycle():
    # A package's __init__ importing its own submodules, and those importing siblings, is no cycle unless a
    # submodule imports the package back.
    graph = {m: {e for e in es if e != "switokd"} for m, es in import_graph().items() if m != "switokd"}
    cycles = find_cycles(graph)
    assert not cycles, "import cycle: " + " -> ".join(cycles[0])


def test_nothing_imports_the_top_package():
    bad = {m: sorted(e for e in es if e == "switokd") for m, es in import_graph().items() if m != "switokd"}
    assert not {m: es for m, es in bad.items() if es}, bad


# The packages' layers, lowest first: a package imports only from its own layer or the ones below (and no
# cycle within a layer). The face (switokd/__init__.py, imported lazily), the CLI and __main__ sit on top.
LAYERS = [
    {"version", "errors", "log", "registry", "hardware", "core"},
    {"config"},
    {"models", "data"},
    {"methods"},
    {"runs", "telemetry"},
    {"train"},
    {"deploy", "race", "sweep"},
    {"cli", "__main__", "switokd"},
]


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "switokd"


def package_graph(graph=None) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for m, es in (graph or import_graph()).items():
        for e in es:
            a, b = package_of(m), package_of(e)
            if a != b:
                out.setdefault(a, set()).add(b)
    return out


def layer_violations(pgraph) -> list[str]:
    rank = {p: i for i, layer in enumerate(LAYERS) for p in layer}
    bad = [f"{p} is in no layer" for p in sorted(set(pgraph) | {e for es in pgraph.values() for e in es}) if p not in rank]
    bad += [f"{a} (layer {rank[a]}) imports {b} (layer {rank[b]})" for a, es in sorted(pgraph.items()) for b in sorted(es)
            if a in rank and b in rank and rank[b] > rank[a]]
    return bad


def find_cycles(graph) -> list[list[str]]:
    """Every cycle a depth-first walk of ``graph`` (node -> the nodes it imports) meets, each as a path."""
    cycles, state, path = [], {}, []

    def visit(p):
        state[p] = 1
        path.append(p)
        for e in sorted(graph.get(p, ())):
            if state.get(e) == 1:
                cycles.append(path[path.index(e):] + [e])
            elif e not in state:
                visit(e)
        path.pop()
        state[p] = 2

    for p in sorted(graph):
        if p not in state:
            visit(p)
    return cycles


def test_packages_look_only_down_and_form_no_cycle():
    pgraph = package_graph()
    assert not layer_violations(pgraph), layer_violations(pgraph)
    assert not find_cycles(pgraph), find_cycles(pgraph)


def test_the_layer_checks_catch_what_they_claim():
    """The former layering (data importing train.distributed, runs importing train.progress) fails both."""
    old = {"switokd.data.loader": {"switokd.train.distributed"}, "switokd.train.trainer": {"switokd.data.loader"},
           "switokd.runs.status": {"switokd.train.progress"}}
    pgraph = package_graph(old)
    assert "data (layer 2) imports train (layer 5)" in layer_violations(pgraph)
    assert "runs (layer 4) imports train (layer 5)" in layer_violations(pgraph)
    assert ["data", "train", "data"] in find_cycles(pgraph)


def test_run_directory_tools_need_no_torch():
    """switokd.runs (reports, status, tables) imports no torch, directly or through another package."""
    import subprocess
    import sys
    code = ("import sys, switokd.runs.status, switokd.runs.files, switokd.runs.stats, switokd.runs.analysis; "
            "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')); "
            "sys.exit(bad[0] if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr or r.stdout
    runtime = {"train", "data", "models", "methods", "telemetry", "core"}
    graph = import_graph()
    for m, es in graph.items():
        if m.startswith("switokd.runs"):
            assert not [e for e in es if package_of(e) in runtime], (m, es)


# Modules that moved into core/, train/ and runs/; their old top-level paths were aliases and are gone.
OLD_PATHS = ["trainer", "switching", "losses", "engine", "checkpoint", "distributed", "progress", "runinfo", "signals",
             "analysis", "report", "status"]


def test_old_import_paths_are_gone():
    """Each module has one import path: no old top-level alias, and no file that is one."""
    for old in OLD_PATHS:
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(f"switokd.{old}")
    shims = [str(f.relative_to(SRC.parent)) for f in SRC.rglob("*.py") if "sys.modules[__name__] =" in f.read_text()]
    assert not shims, shims
