#!/usr/bin/env bash
# Sets everything up, then runs the main job: SwitOKD on Fashion-MNIST (about 10 minutes on 2 CPU cores).
# Extra arguments are config overrides, e.g. `bash scripts/demo.sh train.epochs=1`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/switokd train --config configs/fashion_mnist.yaml "$@"
