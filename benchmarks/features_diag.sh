#!/usr/bin/env bash
# One feature-method run on pairs100 from a finished features-pairs100 race's own teacher (its vanilla trial of
# the same seed, frozen), at the race's sizes and precision, for checking a disagreement with a paper one change
# at a time (issue 39; benchmarks/results/race/features-pairs100/diagnostics.md lists every run and its commit).
#
#   bash benchmarks/features_diag.sh NAME SEED [OVERRIDES...]
#   TEACHERS=/path/to/runs/race/features-pairs100 bash benchmarks/features_diag.sh sp-raw 0 method.name=sp \
#       "method.feature_options={student_paths: [stage3], teacher_paths: [stage3]}"
#
# Writes runs/features-diag/NAME-seedSEED/ (skipped when its report.json exists), then prints the student's
# validation and test accuracy at epochs 10 and 20.
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1 seed=$2
shift 2
TEACHERS=${TEACHERS:-runs/race/features-pairs100}
out=runs/features-diag
[ -f "$TEACHERS/vanilla-seed$seed/last.pt" ] || { echo "no teacher: $TEACHERS/vanilla-seed$seed/last.pt (run RUNGS=10 bash benchmarks/race.sh features-pairs100 first)" >&2; exit 2; }
if [ ! -f "$out/$name-seed$seed/report.json" ]; then
  .venv/bin/switokd train --config configs/fashion_mnist.yaml train.threads=1 train.progress=false \
    train.log_interval=5 train.eval_batch_size=256 data.val_split=500 train.precision=fp32 \
    data.name=fashion_mnist_pairs data.limit_train=2500 train.eval_every=10 networks.teacher.model=resnet20 \
    networks.teacher.schedule=multistep networks.student.schedule=multistep "networks.teacher.milestones=[9,13,17]" \
    "networks.student.milestones=[9,13,17]" train.epochs=20 "train.seed=$seed" \
    "networks.teacher.checkpoint=$TEACHERS/vanilla-seed$seed/last.pt" "train.out_dir=$out" \
    "train.run_name=$name-seed$seed" "$@" > /dev/null
fi
.venv/bin/python - "$out/$name-seed$seed/epochs.jsonl" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print(sys.argv[1].split("/")[-2], "  ".join(f"epoch {r['epoch']}: val {r['val']['student']['acc']:.2f} test "
      f"{r.get('test', {}).get('student', {}).get('acc', float('nan')):.2f}" for r in rows if "val" in r))
PY
