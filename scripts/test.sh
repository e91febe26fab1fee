#!/usr/bin/env bash
# Sets everything up, then runs the test suite (about 3 minutes on 2 CPU cores, plus setup). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
exec .venv/bin/python -m pytest "$@"
