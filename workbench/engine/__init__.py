"""Training and inference loops, checkpoints and the run directory."""
