"""Benchmarks of model variants: speed, memory, size, quality; reports people can read."""
