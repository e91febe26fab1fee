#!/usr/bin/env bash
# Sets up everything switokd needs on a fresh Debian machine, idempotently:
#  - Debian's dataset-fashion-mnist (the real Fashion-MNIST IDX files) if missing,
#  - a virtual environment in .venv with PyTorch 2.13.0 (CPU) and switokd installed editable, with its
#    extras for the tests, export, reports and TensorBoard (pytest, hypothesis, onnx, onnxruntime, onnxscript,
#    safetensors, matplotlib, tensorboard, mlflow-skinny, mkdocs,
#    lightning, transformers, optuna, optuna-dashboard, psycopg; never torchvision: PyPI's for torch 2.13 is a CUDA build that breaks imports).
set -euo pipefail
cd "$(dirname "$0")/.."

FMNIST=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
if [ ! -f "$FMNIST" ]; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null && SUDO="sudo" || { echo "setup: run 'apt-get install dataset-fashion-mnist' as root first" >&2; exit 1; }
  fi
  echo "setup: installing Debian's dataset-fashion-mnist"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
# Finding the packages, not importing them: importing all of them takes 14 s of CPU on every test, demo and
# benchmark command.
if ! .venv/bin/python -c "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in sys.argv[1:]))" \
    torch switokd pytest xdist hypothesis PIL yaml tqdm onnx onnxruntime onnxscript safetensors matplotlib tensorboard \
    mlflow mkdocs lightning transformers optuna optuna_dashboard psycopg 2>/dev/null; then
  echo "setup: installing torch==2.13.0 and switokd[test,export,report,tensorboard,mlflow,docs,integrations,race] into .venv"
  # torch first, pinned: a bare 'torch' requirement could pull a CUDA build of several GB.
  .venv/bin/python -m pip install -q torch==2.13.0
  .venv/bin/python -m pip install -q -e ".[test,export,report,tensorboard,mlflow,docs,integrations,race]"
fi
