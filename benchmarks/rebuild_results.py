"""Rebuild a collected grid's tables and report with this version of switokd, from the files it holds.

  python benchmarks/rebuild_results.py benchmarks/results/conditions/clean [...]

A grid folder (what benchmarks/collect.sh copies) holds results.md, results.json and runs/<run>/ (each run's
config and logs). This rewrites results.md (the header lines it had, command, machine and date, are kept; the
tables are drawn again, those from the runs' logs included) and report/ (switokd report of the runs), so that a
grid run by an older version gets the current tables and figures. Nothing is retrained or recomputed from
weights: everything comes from the logs.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from switokd.runs.report import write_report
from switokd.sweep import write_results


def rebuild(folder: Path) -> Path:
    reports = json.loads((folder / "results.json").read_text())
    header = []
    for line in (folder / "results.md").read_text().splitlines():
        if line.startswith("| ") or line.startswith("- precision:"):
            break
        header.append(line)
    while header and not header[-1].strip():
        header.pop()
    note = f"- tables and report drawn again from the runs' logs: `python benchmarks/rebuild_results.py {folder}`"
    if note not in header:
        header.append(note)
    runs = folder / "runs"
    # write_results reads the logs at OUT/<run>/: point it at runs/ and keep the tables in the grid folder.
    path = write_results(runs, reports, header)
    (folder / "results.md").write_text(path.read_text())
    (folder / "results.json").write_text((runs / "results.json").read_text())
    path.unlink()
    (runs / "results.json").unlink()
    write_report([runs / r["run"] for r in reports], folder / "report")
    return folder / "results.md"


def main(argv: list[str] | None = None) -> int:
    for d in argv if argv is not None else sys.argv[1:]:
        print(rebuild(Path(d)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
