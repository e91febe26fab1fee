"""The layers: one import direction and no cycle, counting imports inside functions; the tools over run
directories import neither torch nor the training runtime; the old import paths still work."""
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


def _shims(graph):
    """Old import paths that alias a moved module (``sys.modules[__name__] = ...``): not part of the layers."""
    files = {m: SRC.parent / (m.replace(".", "/") + ".py") for m in graph}
    return {m for m, f in files.items() if f.is_file() and "sys.modules[__name__]" in f.read_text()}


def test_no_import_cycle():
    graph = import_graph()
    shims = _shims(graph)
    graph = {m: {e for e in es if e not in shims and e != "switokd"} for m, es in graph.items()
             if m not in shims and m != "switokd"}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m):
        state[m] = 1
        path.append(m)
        for e in sorted(graph.get(m, ())):
            if state.get(e) == 1:
                # A package's __init__ importing its own submodules, and those importing siblings, is no cycle
                # unless a submodule imports the package back.
                cycle = path[path.index(e):] + [e]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if e not in state:
                visit(e)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_nothing_imports_the_top_package_or_a_shim():
    graph = import_graph()
    shims = _shims(graph)
    bad = {m: sorted(e for e in es if e == "switokd" or e in shims) for m, es in graph.items() if m != "switokd"}
    assert not {m: es for m, es in bad.items() if es}, bad


def test_run_directory_tools_need_no_torch():
    runtime = ("switokd.trainer", "switokd.engine", "switokd.telemetry", "switokd.checkpoint", "switokd.distributed",
               "switokd.data", "switokd.models", "switokd.methods")
    for path in (SRC / "runs").glob("*.py"):
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level}
        assert not any(n == "torch" or n.startswith("torch.") for n in names), path.name
    graph = import_graph()
    for m, es in graph.items():
        if m.startswith("switokd.runs"):
            assert not [e for e in es if e.startswith(runtime)], (m, es)


@pytest.mark.parametrize("old,new", [("switokd.report", "switokd.runs.report"), ("switokd.analysis", "switokd.runs.analysis"),
                                     ("switokd.status", "switokd.runs.status")])
def test_old_import_paths_still_work(old, new):
    assert importlib.import_module(old) is importlib.import_module(new)
    from switokd.report import ReportError, RunLogs, read_run  # noqa: F401
    from switokd.sweep import mean_std, fmt, verdict, group_by_method  # noqa: F401
    from switokd.telemetry import read_jsonl, run_switch_stats, RUN_STATE  # noqa: F401
