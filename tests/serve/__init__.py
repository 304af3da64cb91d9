"""Tests of `tectum serve`: the status page and metrics."""
