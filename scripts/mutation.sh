#!/usr/bin/env bash
# Mutation testing of the core with mutmut: a long run (hours on 2 cores), not part of CI.
#   bash scripts/mutation.sh                 # every pass, then the summary (scores and survivors)
#   bash scripts/mutation.sh run core data   # some passes
#   bash scripts/mutation.sh summary         # the summary of what has run
# The passes, their modules and tests are in scripts/mutation.py; results stay in .mutation/ (resumable).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -c "import mutmut" 2>/dev/null || .venv/bin/python -m pip install -q -e ".[mutation]"
if [ $# -eq 0 ]; then set -- run; fi
exec .venv/bin/python scripts/mutation.py "$@"
