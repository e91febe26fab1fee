#!/usr/bin/env bash
# The seeded method grids behind benchmarks/results/evidence/: what SwitOKD does, against the baselines.
#
#   bash benchmarks/evidence.sh a b      # one or more experiments: a b c d (default: all four)
#
# Each experiment is one `switokd sweep` (3 seeds) into runs/evidence/<exp>/ (resumable: run the same
# command again after an interruption), then its results.md/json, report and the runs' logs are copied
# into benchmarks/results/evidence/<exp>/. Sized for a 2-core CPU: one torch thread per run, so two
# experiments can run side by side; about 3 hours of one core for all four.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
SWEEP=".venv/bin/switokd sweep"
SEEDS=(--seeds 0 1 2)
# Every method of an experiment gets the same images, epochs and schedule.
SMALL=(train.threads=1 train.progress=false train.log_interval=10 data.limit_train=10000 train.epochs=2)

source benchmarks/collect.sh

exp_a() {  # the default pair (WRN-16-2 teaches WRN-16-1), all five methods
  $SWEEP --config configs/fashion_mnist.yaml --methods vanilla kd dml kdcl switokd "${SEEDS[@]}" \
    --out runs/evidence/a "${SMALL[@]}"
  collect runs/evidence/a benchmarks/results/evidence/a
}

exp_b() {  # the paper's CIFAR-100 learning-rate protocol: teacher lr 0.1, student lr 0.01
  $SWEEP --config configs/fashion_mnist.yaml --methods vanilla dml switokd "${SEEDS[@]}" \
    --out runs/evidence/b "${SMALL[@]}" networks.student.lr=0.01
  collect runs/evidence/b benchmarks/results/evidence/b
}

exp_c() {  # a setting where the switch fires: MobileNet teaches ResNet-20 (different families; see results)
  $SWEEP --config configs/fashion_mnist_mobilenet_resnet20.yaml --methods vanilla kd dml kdcl switokd "${SEEDS[@]}" \
    --out runs/evidence/c "${SMALL[@]}"
  collect runs/evidence/c benchmarks/results/evidence/c
}

exp_d() {  # the basis topologies: 2T1S and 1T2S, SwitOKD against DML and KDCL with the same networks
  for topo in 2t1s 1t2s; do
    $SWEEP --config configs/fashion_mnist_$topo.yaml --methods dml kdcl switokd "${SEEDS[@]}" \
      --out runs/evidence/d-$topo "${SMALL[@]}" data.limit_train=6000
    collect runs/evidence/d-$topo benchmarks/results/evidence/d-$topo
  done
}

for e in "${@:-a b c d}"; do
  for x in $e; do "exp_$x"; done
done
