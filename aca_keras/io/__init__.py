"""Files: atomic writes, exact checkpoints and the run directory layout (NumPy only)."""
