#!/usr/bin/env bash
# Mutation testing of the core with mutmut (a long run, hours on 2 cores: not part of CI).
#   bash scripts/mutation.sh            # run (resumable: mutmut keeps results in mutants/), then summarise
#   bash scripts/mutation.sh summary    # only the per-module scores and the surviving mutants
# Scope and test selection: [tool.mutmut] in pyproject.toml. The summary is what
# benchmarks/results/mutation.md records.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -c "import mutmut" 2>/dev/null || .venv/bin/python -m pip install -q -e ".[mutation]"
if [ "${1:-run}" != summary ]; then
  .venv/bin/mutmut run --max-children "${MUTMUT_CHILDREN:-2}" || true
fi
.venv/bin/python scripts/mutation_summary.py
