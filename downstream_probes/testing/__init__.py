"""Helpers for the tests and benchmarks that ship with the package (as ``upstream_mrhubert.testing`` does)."""
