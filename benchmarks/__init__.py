"""Benchmarks: side-by-side ratios on the same data, model, batch size and device (not tests)."""
