"""Training: the loop, its runtime (devices, RNG, EMA, checkpoints), the log, and the tasks."""
