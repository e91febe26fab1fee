#!/usr/bin/env bash
# The race against the methods grid (issue 30): `switokd race` on the grid's four conditions, with the grid's
# methods, seeds and sizes (benchmarks/methods.sh), on one machine with 2 workers (one thread each: the grid's
# two lanes). Each experiment is one race into runs/race/<exp>/ (resumable: the same command again), then its
# race.md, race.json and the runs' logs (not checkpoints) are copied into $RESULTS/<exp>/, with the elapsed time.
# benchmarks/race_summary.py then sets each beside the grid.
#
#   bash benchmarks/race.sh clean few50          # some experiments (default: the four)
#   LONG=2 bash benchmarks/race.sh clean         # the same race at twice the epochs (runs/race/<exp>-x2)
#   CACHE=1 bash benchmarks/race.sh clean        # the offline arms read one teacher cache per seed (issue 29):
#       data.augment_seed=0 (every trial's views from one seed, as the cache needs) and
#       networks.teacher.cache=runs/race/<exp>-cache
#   EXTRA="train.precision=fp32" bash ...      # more overrides for every trial (the grid ran in fp32 on an AVX2 CPU:
#       pin its precision on a CPU with native bf16, where `auto` would pick bf16)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
RESULTS=${RESULTS:-benchmarks/results/race}
LONG=${LONG:-1}
SUFFIX=$([ "$LONG" = 1 ] && echo "" || echo "-x$LONG")
# WORKERS=1 when another job holds the other core (the wall-clock is then per core; race_summary.py compares core-seconds)
RACE=".venv/bin/switokd race --workers ${WORKERS:-2} --seeds 0 1 2 ${RUNGS:+--rungs $RUNGS}"
COMMON=(train.threads=1 train.progress=false train.log_interval=5 train.eval_batch_size=256 data.val_split=500)
read -ra EXTRA <<< "${EXTRA:-}"
source benchmarks/arms.sh  # online, offline, branch: the grid's own arms
source benchmarks/collect.sh

run() {  # run EXP CONFIG "METHODS" EPOCHS OVERRIDES...
  local exp=$1 config=$2 methods=$3 epochs=$4
  shift 4
  local out="runs/race/$exp$SUFFIX" dst="$RESULTS/$exp$SUFFIX" t0 cache=()
  [ "${CACHE:-0}" = 1 ] && cache=(data.augment_seed=0 "networks.teacher.cache=$out-cache")
  t0=$(date +%s)
  mkdir -p "$(dirname "$out")"
  # shellcheck disable=SC2086  # the methods are words
  $RACE --config "$config" --methods $methods --out "$out" "${COMMON[@]}" "${EXTRA[@]}" "${cache[@]}" "$@" "train.epochs=$((epochs * LONG))" \
    > /dev/null 2> >(tee -a "$out.log" >&2) || true
  mkdir -p "$dst/runs"
  echo "{\"seconds\": $(( $(date +%s) - t0 )), \"started\": $t0}" > "$dst/elapsed-$(date +%s).json"
  cp "$out/race.md" "$out/race.json" "$dst/" 2>/dev/null || true
  for r in "$out"/*-seed*/; do
    name=$(basename "$r"); mkdir -p "$dst/runs/$name"
    cp "$r"/config.yaml "$r"/epochs.jsonl "$dst/runs/$name/" 2>/dev/null || true
    for f in report.json status.json; do [ -f "$r/$f" ] && cp "$r/$f" "$dst/runs/$name/"; done
  done
  echo "$dst/race.md"
}

# The feature methods (issue 39) beside KD, DKD and DIST on pairs100 (100 classes, where offline methods separate),
# the grid's sizes; rungs after the first lr step (epoch 9): RUNGS=10. Warm-ups scaled as the grid's (2 of 20).
features() { echo vanilla kd "dkd@warmup_epochs=$1" dist fitnet at nst pkt rkd sp vid crd ofd \
  "reviewkd@feature_options.warmup_epochs=$1"; }

FM=configs/fashion_mnist.yaml
# The feature methods on offline10k (the grid's sizes: teachers converged on 10,000 clean images, 15 epochs, cosine),
# one rung at epoch 5: RUNGS=5. No teacher cache: a feature method reads the teacher's features every step.
exp_features-offline10k() {
  run features-offline10k $FM "$(features $((2 * LONG)))" 15 data.limit_train=10500 train.eval_every=5 data.augment_seed=0
}
exp_clean() { run clean $FM "$(online $((3 * LONG))) $(offline $((3 * LONG)))" 30 data.limit_train=1500 train.eval_every=15; }
exp_sym40-noaug() { run sym40-noaug configs/fashion_mnist_noisy.yaml "$(online $((3 * LONG)))" 40 data.limit_train=1500; }
exp_few50() { run few50 $FM "$(online $((3 * LONG)))" 40 data.labels_per_class=50 train.eval_every=20; }
exp_features-pairs100() {
  run features-pairs100 $FM "$(features $((2 * LONG)))" 20 data.name=fashion_mnist_pairs data.limit_train=2500 \
    train.eval_every=10 networks.teacher.model=resnet20 networks.teacher.schedule=multistep \
    networks.student.schedule=multistep "networks.teacher.milestones=[$((9 * LONG)),$((13 * LONG)),$((17 * LONG))]" \
    "networks.student.milestones=[$((9 * LONG)),$((13 * LONG)),$((17 * LONG))]"
}
exp_pairs100() {
  run pairs100 $FM "$(online $((2 * LONG))) $(offline $((2 * LONG)))" 20 data.name=fashion_mnist_pairs data.limit_train=2500 \
    train.eval_every=10 networks.teacher.model=resnet20 networks.teacher.schedule=multistep \
    networks.student.schedule=multistep "networks.teacher.milestones=[$((9 * LONG)),$((13 * LONG)),$((17 * LONG))]" \
    "networks.student.milestones=[$((9 * LONG)),$((13 * LONG)),$((17 * LONG))]"
}

# The branch methods (issue 41) among the arms: the branch grid's eight methods (benchmarks/methods.sh
# branches-<condition>: vanilla, DML, KDCL, SwitOKD, and ONE, OKDDip, PCL, FFL on the grid's student split into
# 3 branches), its seeds, sizes and ramps, raced against that grid. Cosine conditions keep the default rungs
# (E/9, E/3, E); pairs100's multistep rungs fall after its first step (epoch 9): RUNGS=10 there.
exp_branches-clean() { run branches-clean $FM "$(branch $((8 * LONG)))" 30 data.limit_train=1500 train.eval_every=15; }
exp_branches-sym40-noaug() {
  run branches-sym40-noaug configs/fashion_mnist_noisy.yaml "$(branch $((11 * LONG)))" 40 data.limit_train=1500
}
exp_branches-few50() {
  run branches-few50 $FM "$(branch $((11 * LONG)))" 40 data.labels_per_class=50 train.eval_every=20
}
exp_branches-pairs100() {
  run branches-pairs100 $FM "$(branch $((5 * LONG)))" 20 data.name=fashion_mnist_pairs data.limit_train=2500 \
    train.eval_every=10 networks.teacher.model=resnet20 networks.teacher.schedule=multistep \
    networks.student.schedule=multistep "networks.teacher.milestones=[$((9 * LONG)),$((13 * LONG)),$((17 * LONG))]" \
    "networks.student.milestones=[$((9 * LONG)),$((13 * LONG)),$((17 * LONG))]"
}
for e in "${@:-clean sym40-noaug few50 pairs100}"; do
  for x in $e; do "exp_$x"; done
done
