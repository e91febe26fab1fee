#!/usr/bin/env bash
# Sets everything up, then runs the test suite in one pytest-xdist worker per core, each test file in one worker
# (its module fixtures are built once). Extra arguments go to pytest; `-n 0` runs it in one process.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
exec .venv/bin/python -m pytest -n auto --dist loadfile "$@"
