"""Compression: quantization and pruning, each variant saved as a run directory with its quality measured."""
