#!/usr/bin/env bash
# The GPU check, for a CUDA machine (a lent H100/H200, or yours), in under 8 minutes; prints one summary.
#
#   bash scripts/gpu_check.sh                # with Fashion-MNIST in /usr/share/datasets/fashion-mnist
#   FMNIST_DIR=path/to/idx bash scripts/gpu_check.sh
#
# Steps: pytest -m gpu; the default pair trained for one epoch in bf16 and in fp16 with the data on the GPU;
# the throughput benchmark against the bare loop; the streaming loader feeding the GPU; NCCL DDP when there
# are 2 GPUs, with the bucketed all-reduce and with train.ddp=true. Uses the machine's own CUDA PyTorch (no install, no network): it only adds switokd itself.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DATA=${FMNIST_DIR:-/usr/share/datasets/fashion-mnist}
OUT=${OUT:-/tmp/switokd-gpu-check}
mkdir -p "$OUT"
declare -a SUMMARY
step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  if timeout "$limit" "$@" > "$OUT/$name.log" 2>&1; then
    SUMMARY+=("PASS  $name ($((SECONDS - t0)) s)  $(tail -1 "$OUT/$name.log" | cut -c1-110)")
  else
    SUMMARY+=("FAIL  $name ($((SECONDS - t0)) s, exit $?)  see $OUT/$name.log")
  fi
}
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))" \
  || { echo "gpu_check: no CUDA device here"; exit 2; }
"$PY" -m pip install -q --no-deps -e . > "$OUT/install.log" 2>&1 || { echo "gpu_check: installing switokd failed ($OUT/install.log)"; exit 2; }
"$PY" -c "import pytest, yaml, tqdm" 2>/dev/null || "$PY" -m pip install -q pytest pyyaml tqdm >> "$OUT/install.log" 2>&1
GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())")
COMMON=(--config configs/fashion_mnist.yaml data.dir="$DATA" train.epochs=1 train.device=cuda train.progress=false
        train.out_dir="$OUT/runs")
step pytest-gpu 240 "$PY" -m pytest -q -m gpu tests
step train-bf16 150 "$PY" -m switokd train "${COMMON[@]}" train.precision=bf16 train.run_name=bf16
step train-fp16 150 "$PY" -m switokd train "${COMMON[@]}" train.precision=fp16 train.run_name=fp16
step throughput 120 "$PY" benchmarks/throughput.py --device cuda --precision bf16 --out "$OUT/throughput.md"
step loader 90 "$PY" benchmarks/loader_throughput.py --out "$OUT/loader.md"
if [ "$GPUS" -ge 2 ]; then
  step ddp-nccl 150 "$PY" -m torch.distributed.run --nproc_per_node=2 -m switokd train "${COMMON[@]}" \
    train.run_name=ddp
  step ddp-wrapper-nccl 150 "$PY" -m torch.distributed.run --nproc_per_node=2 -m switokd train "${COMMON[@]}" \
    train.run_name=ddp-wrapper train.ddp=true
else
  SUMMARY+=("SKIP  ddp-nccl (one GPU)")
fi
echo "gpu_check on $("$PY" -c "import torch; print(torch.cuda.get_device_name(0), 'x', torch.cuda.device_count(), 'torch', torch.__version__)")"
printf '%s\n' "${SUMMARY[@]}"
grep -h "img/s\|acc" "$OUT"/train-*.log 2>/dev/null | tail -4
! printf '%s\n' "${SUMMARY[@]}" | grep -q "^FAIL"
