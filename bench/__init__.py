"""Benchmarks (not tests): the dataset loader and the load-generator harness."""
