"""Evaluation: eval splits, batched generation, metrics and the baseline comparison."""
