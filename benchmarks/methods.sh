#!/usr/bin/env bash
# The methods grid behind benchmarks/results/methods/: the field's strongest logit-based methods, online and
# offline, on the same data and seeds (issue 22). Sizes: smaller than benchmarks/results/conditions, so that
# all 108 runs fit one session of one machine (1 h 27 min on 2 cores with native bf16, two single-thread runs
# side by side; about 5 h, estimated, at the conditions grid's sizes): clean on 1,000 images x 30 epochs, sym40-noaug
# = configs/fashion_mnist_noisy.yaml (1,000 images x 40 epochs, where the switch fires from epoch ~17), few50
# for 40 epochs, pairs100 on 2,000 images x 20 epochs; each evaluated 2-3 times.
#
#   bash benchmarks/methods.sh clean few50     # one or more experiments (default: all, in this order)
#   SEEDS="0 1" bash benchmarks/methods.sh pairs100   # some seeds (a later full run skips what is done)
#
# Experiments: clean sym40-noaug few50 pairs100. Online in each: vanilla, dml, kdcl, switokd, uniokd and DML
# with the dkd and the dist loss. Offline on clean and pairs100: kd, kd+ls, dkd and dist from each seed's
# vanilla-trained teacher (the vanilla run's own, frozen). Each experiment is one `switokd sweep` into
# runs/methods/<exp>/ (resumable: run the same command again after an interruption), then its results,
# report and the runs' logs (not their checkpoints) are copied into benchmarks/results/methods/<exp>/.
# One torch thread per run, so two experiments run side by side on 2 cores.
#
# Recipes on these short runs: DKD's warm-up is the recipe's 20 of 240 epochs scaled to the run (3 epochs of
# 30-40, 2 of 20); DIST at the authors' code's defaults (beta = gamma = 1, tau = 1); KD+LS at its recipe
# (tau 2, KD weight 9, CE weight 0.1); UniOKD at the authors' script's temperatures and weights.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
SWEEP=".venv/bin/switokd sweep"
# shellcheck disable=SC2206  # the seeds are words
SEEDS=(--seeds ${SEEDS:-0 1 2})
COMMON=(train.threads=1 train.progress=false train.log_interval=5)
LONG=(data.limit_train=1000 train.epochs=30 train.eval_every=15)
online() {  # online WARMUP
  echo vanilla dml kdcl switokd uniokd "dml+dkd@loss_options.warmup=$1" dml+dist
}
offline() {  # offline WARMUP
  echo kd "kd+ls@tau=2,ce_weight=0.1,kl_weight=9" "dkd@loss_options.warmup=$1" dist
}

source benchmarks/collect.sh

grid() {  # grid EXP CONFIG "METHODS" OVERRIDES...
  local exp=$1 config=$2 methods=$3
  shift 3
  # shellcheck disable=SC2086  # the methods are words
  $SWEEP --config "$config" --methods $methods "${SEEDS[@]}" --out "runs/methods/$exp" "${COMMON[@]}" "$@"
  collect "runs/methods/$exp" "benchmarks/results/methods/$exp"
}

FM=configs/fashion_mnist.yaml
exp_clean() { grid clean $FM "$(online 3) $(offline 3)" "${LONG[@]}"; }
# The main job's config: 40% symmetric noise, no augmentation, 1,000 images, 40 epochs, evaluated at 20 and 40.
exp_sym40-noaug() { grid sym40-noaug configs/fashion_mnist_noisy.yaml "$(online 3)"; }
exp_few50() { grid few50 $FM "$(online 3)" data.labels_per_class=50 train.epochs=40 train.eval_every=20; }
# 100 classes with the multistep protocol of benchmarks/conditions.sh (pairs100), its milestones [14,20,25] of
# 30 epochs scaled to 20. The student's lr is 0.1, not that grid's 0.01: at 0.01, 320 steps on 2,000 images
# left every online student at 2.0-2.8% (chance is 1%; benchmarks/results/methods/README.md).
exp_pairs100() {
  grid pairs100 $FM "$(online 2) $(offline 2)" data.name=fashion_mnist_pairs data.limit_train=2000 train.epochs=20 \
    train.eval_every=10 networks.teacher.model=resnet20 networks.teacher.schedule=multistep \
    networks.student.schedule=multistep "networks.teacher.milestones=[9,13,17]" \
    "networks.student.milestones=[9,13,17]"
}

for e in "${@:-clean sym40-noaug few50 pairs100}"; do
  for x in $e; do "exp_$x"; done
done
