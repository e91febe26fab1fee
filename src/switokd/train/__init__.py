"""The training runtime: the loop (trainer), the cohort, precision and optimizers (engine), checkpoints and
the whole training state, the run directory, stops, several processes, progress and the run header, hooks."""
