# Sourced by benchmarks/evidence.sh and benchmarks/conditions.sh.
# collect SRC DST: copy what a sweep wrote in SRC (results, report, each run's config and logs, but not its
# checkpoints) into DST in the repository. With FINISHED_ONLY=1, only the runs that wrote report.json (for
# committing a grid still in progress).
collect() {
  local src=$1 dst=$2
  mkdir -p "$dst/runs"
  cp "$src/results.md" "$src/results.json" "$dst/"
  [ -d "$src/report" ] && rm -rf "$dst/report" && cp -r "$src/report" "$dst/report"
  for run in "$src"/*/; do
    name=$(basename "$run")
    [ "$name" = report ] && continue
    [ "${FINISHED_ONLY:-0}" = 1 ] && [ ! -f "$run/report.json" ] && continue
    mkdir -p "$dst/runs/$name"
    cp "$run"/config.yaml "$run"/epochs.jsonl "$run"/steps.jsonl "$dst/runs/$name/" 2>/dev/null || true
    for f in report.json status.json; do [ -f "$run/$f" ] && cp "$run/$f" "$dst/runs/$name/"; done
  done
  echo "$dst/results.md"
}
