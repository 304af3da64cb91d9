"""Dependency graphs: cycle reports and the parallel walk."""

from tectum.graph.dag import Graph, WalkResult, find_cycles

__all__ = ["Graph", "WalkResult", "find_cycles"]
