#!/usr/bin/env bash
# SwitOKD on the paper's own pair (issue 41): WRN-16-2 (lr 0.1) with MobileNetV2 x0.5 (`mobilenetv2_x0.5`, lr
# 0.01), online, at the recipe of hfutqian/SwitOKD `SwitOKD_code/CIFAR-100/WRN16-2_0.5mobilenetv2/main.py` (SGD,
# momentum 0.9, wd 5e-4, lr x0.1 at 140/200/250 of 300 epochs, scaled to the run: [9, 13, 17] of 20 and
# [19, 27, 33] of 40), on Fashion-MNIST at the grid's sizes. The paper's premise is a teacher ahead of its
# student (72.90 against 60.07 trained alone, Table 4); `regime-*` trains both alone (vanilla, seed 0) to find
# where the WRN leads, and `pair-*` runs vanilla, DML, KDCL and SwitOKD there with 3 seeds. Each experiment is
# one `switokd sweep` into runs/pair/<exp>/ (resumable), collected into $RESULTS/<exp>/.
#
#   bash benchmarks/paper_pair.sh regime-pairs100 regime-sym40-noaug
#   bash benchmarks/paper_pair.sh pair-pairs100
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
SWEEP=".venv/bin/switokd sweep"
RESULTS=${RESULTS:-benchmarks/results/pair}
COMMON=(train.threads=1 train.progress=false train.log_interval=5 train.eval_batch_size=256 data.val_split=500
        networks.teacher.model=wrn16_2 networks.teacher.lr=0.1 networks.student.model=mobilenetv2_x0.5
        networks.student.lr=0.01 networks.teacher.schedule=multistep networks.student.schedule=multistep)
source benchmarks/collect.sh

grid() {  # grid EXP CONFIG "METHODS" "SEEDS" OVERRIDES...
  local exp=$1 config=$2 methods=$3 seeds=$4
  shift 4
  # shellcheck disable=SC2086  # the methods and seeds are words
  $SWEEP --config "$config" --methods $methods --seeds $seeds --out "runs/pair/$exp" "${COMMON[@]}" "$@"
  collect "runs/pair/$exp" "$RESULTS/$exp"
}
FM=configs/fashion_mnist.yaml
M20=("networks.teacher.milestones=[9,13,17]" "networks.student.milestones=[9,13,17]")
M40=("networks.teacher.milestones=[19,27,33]" "networks.student.milestones=[19,27,33]")
PAIRS=(data.name=fashion_mnist_pairs train.epochs=20 train.eval_every=10 "${M20[@]}")
NOISY=(train.epochs=40 train.eval_every=20 "${M40[@]}")
ONLINE="vanilla dml kdcl switokd"
# pairs100 at the grid's size (2,000 training images) and at 5x (10,000), 20 epochs
exp_regime-pairs100() { grid regime-pairs100 $FM vanilla 0 "${PAIRS[@]}" data.limit_train=2500; }
exp_regime-pairs100-10k() { grid regime-pairs100-10k $FM vanilla 0 "${PAIRS[@]}" data.limit_train=10500; }
exp_regime-sym40-noaug() { grid regime-sym40-noaug configs/fashion_mnist_noisy.yaml vanilla 0 "${NOISY[@]}"; }
exp_pair-pairs100() { grid pair-pairs100 $FM "$ONLINE" "0 1 2" "${PAIRS[@]}" data.limit_train=2500; }
exp_pair-pairs100-10k() { grid pair-pairs100-10k $FM "$ONLINE" "0 1 2" "${PAIRS[@]}" data.limit_train=10500; }
exp_pair-sym40-noaug() { grid pair-sym40-noaug configs/fashion_mnist_noisy.yaml "$ONLINE" "0 1 2" "${NOISY[@]}"; }

for e in "$@"; do "exp_$e"; done
