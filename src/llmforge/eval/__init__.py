"""Evaluation: metrics as pure functions, and the runner that scores a model on a prepared split."""
