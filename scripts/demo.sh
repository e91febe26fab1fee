#!/usr/bin/env bash
# Sets everything up, then runs the main job: SwitOKD on Fashion-MNIST with 40% noisy labels, where its switch
# pauses the teacher (configs/fashion_mnist_noisy.yaml says why; about 10 minutes on 2 CPU cores), into
# runs/demo-<time>, with runs/demo pointing at the newest one; then prints what the switch did and the
# commands to go on with.
# Extra arguments are config overrides, e.g. `bash scripts/demo.sh train.epochs=1`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
name="demo-$(date +%Y%m%d-%H%M%S)"
.venv/bin/switokd train --config configs/fashion_mnist_noisy.yaml train.run_name="$name" "$@"
ln -sfn "$name" runs/demo
echo; echo "What the switch did in this run:"
.venv/bin/python -c "
from switokd.runs.analysis import explain
from switokd.runs.files import read_run
print('\n'.join(explain(read_run('runs/demo'))))"
cat <<NEXT

The next commands (runs/demo is this run: runs/$name):
  .venv/bin/switokd report runs/demo                 # figures and a plain-language account: runs/demo/report/index.html
  .venv/bin/switokd status runs/demo
  .venv/bin/switokd export --checkpoint runs/demo/best.pt --network student --format onnx --out student.onnx
  .venv/bin/switokd predict --onnx student.onnx IMAGE.png
(or 'source .venv/bin/activate' once, then plain 'switokd ...')
NEXT
