# Sourced by benchmarks/methods.sh and benchmarks/race.sh: the grid's arms, one definition for the grid and the
# race that is set beside it (a race compares like with like only if its arms are the grid's).
online() {  # online WARMUP: DKD's warm-up scaled to the run
  echo vanilla dml kdcl switokd uniokd "dml+dkd@warmup_epochs=$1" dml+dist
}
offline() {  # offline WARMUP
  echo kd kd+ls "dkd@warmup_epochs=$1" "dkd+ls@warmup_epochs=$1" dist
}
branch() {  # the branch grid (issue 41) RAMP: the consistency ramp's 80 of 300 epochs scaled to the run
  echo vanilla dml kdcl switokd "one@options.ramp_epochs=$1" "okddip@options.ramp_epochs=$1" \
    "pcl@options.ramp_epochs=$1" "ffl@options.ramp_epochs=$1"
}
