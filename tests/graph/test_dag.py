"""Property tests for :mod:`tectum.graph.dag`: the parallel walk and cycle detection.

Random DAGs have nodes ``n00``..``nNN`` with edges only from a higher to a lower index (so they
are acyclic); a random subset of nodes fails when visited. Every run records, under a lock, when
each visit starts and finishes, how many visits run at once, and which nodes were batched.
"""

from __future__ import annotations

import graphlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tectum.graph.dag import Graph, WalkResult, find_cycles, walk

WALK_SETTINGS = settings(max_examples=150, deadline=None,
                         suppress_health_check=[HealthCheck.too_slow])


# -- random graphs -----------------------------------------------------------------------

def _name(i: int) -> str:
    return f"n{i:02d}"


@st.composite
def dags(draw: st.DrawFn, max_nodes: int = 40) -> dict[str, set[str]]:
    """A random DAG: node i may depend only on nodes j < i."""
    n = draw(st.integers(min_value=0, max_value=max_nodes))
    deps: dict[str, set[str]] = {}
    density = draw(st.sampled_from([0.0, 0.05, 0.15, 0.4]))
    for i in range(n):
        chosen: set[str] = set()
        if i:
            # a few random picks plus a density-driven number of extra edges
            k = draw(st.integers(min_value=0, max_value=min(i, 1 + int(density * i))))
            picks = draw(st.lists(st.integers(min_value=0, max_value=i - 1), min_size=k,
                                  max_size=k))
            chosen = {_name(j) for j in picks}
        deps[_name(i)] = chosen
    return deps


@st.composite
def walk_cases(draw: st.DrawFn) -> tuple[dict[str, set[str]], set[str], int, bool]:
    deps = draw(dags())
    nodes = sorted(deps)
    failing = set(draw(st.lists(st.sampled_from(nodes), unique=True))) if nodes else set()
    parallelism = draw(st.integers(min_value=1, max_value=8))
    raise_single = draw(st.booleans())
    return deps, failing, parallelism, raise_single


def ancestors(deps: dict[str, set[str]], node: str) -> set[str]:
    seen: set[str] = set()
    todo = list(deps.get(node, ()))
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(deps.get(n, ()))
    return seen


# -- an instrumented visit -----------------------------------------------------------------

class Boom(Exception):
    def __init__(self, node: str) -> None:
        super().__init__(f"{node} failed")
        self.node = node


@dataclass
class Recorder:
    """A ``visit`` for :func:`walk` that records everything it sees."""

    failing: set[str]
    raise_single: bool = False
    delay: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    clock: int = 0
    started: dict[str, int] = field(default_factory=dict)
    finished: dict[str, int] = field(default_factory=dict)
    visits: dict[str, int] = field(default_factory=dict)
    batches: list[list[str]] = field(default_factory=list)
    running: int = 0
    max_running: int = 0
    threads: set[int] = field(default_factory=set)

    def _tick(self) -> int:
        self.clock += 1
        return self.clock

    def __call__(self, batch: Sequence[str]) -> list[Any]:
        with self.lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
            self.batches.append(list(batch))
            now = self._tick()
            for n in batch:
                self.started[n] = now
                self.visits[n] = self.visits.get(n, 0) + 1
        try:
            if self.delay:
                time.sleep(self.delay)
            if self.raise_single and len(batch) == 1 and batch[0] in self.failing:
                raise Boom(batch[0])
            return [Boom(n) if n in self.failing else f"value of {n}" for n in batch]
        finally:
            with self.lock:
                now = self._tick()
                for n in batch:
                    self.finished[n] = now
                self.running -= 1


def check_outcome(deps: dict[str, set[str]], failing: set[str], result: WalkResult,
                  rec: Recorder) -> None:
    nodes = set(deps)
    # a node runs exactly when none of its ancestors is a failing node
    visited = {n for n in nodes if not (ancestors(deps, n) & failing)}
    expect_failed = visited & failing
    expect_done = visited - failing
    expect_skipped = nodes - visited

    assert set(result.done) == expect_done
    assert set(result.failed) == expect_failed
    assert set(result.skipped) == expect_skipped
    assert result.not_started == []
    # the three outcomes partition the nodes
    assert len(result.done) + len(result.failed) + len(result.skipped) == len(nodes)

    for n, value in result.done.items():
        assert value == f"value of {n}"
    for n, exc in result.failed.items():
        assert isinstance(exc, Boom) and exc.node == n
    for n, cause in result.skipped.items():
        assert cause in result.failed, f"{n} skipped because of {cause}, which did not fail"
        assert cause in ancestors(deps, n), f"{n} skipped because of {cause}, not an ancestor"

    # only the nodes that ran were visited, each exactly once
    assert set(rec.visits) == visited
    assert all(count == 1 for count in rec.visits.values())
    # every node started only after all its dependencies finished
    for n in visited:
        for d in deps[n]:
            assert rec.finished[d] < rec.started[n], f"{n} started before its dependency {d}"


# -- walk: outcomes, order, parallelism ------------------------------------------------------

@WALK_SETTINGS
@given(walk_cases())
def test_walk_outcomes_and_order(case: tuple[dict[str, set[str]], set[str], int, bool]) -> None:
    deps, failing, parallelism, raise_single = case
    rec = Recorder(failing, raise_single=raise_single, delay=0.0002)
    seen: list[tuple[str, Any, BaseException | None]] = []
    main_thread = threading.get_ident()
    callback_threads: set[int] = set()

    def on_result(node: str, value: Any, exc: BaseException | None) -> None:
        callback_threads.add(threading.get_ident())
        seen.append((node, value, exc))

    result = walk(deps, rec, parallelism=parallelism, on_result=on_result)

    check_outcome(deps, failing, result, rec)
    assert rec.max_running <= parallelism
    # no grouping: one node per visit
    assert all(len(b) == 1 for b in rec.batches)
    # on_result: once per node that ran, in the walking thread
    assert sorted(n for n, _, _ in seen) == sorted(rec.visits)
    assert callback_threads <= {main_thread}
    for node, value, exc in seen:
        if node in failing:
            assert value is None and isinstance(exc, Boom)
        else:
            assert exc is None and value == f"value of {node}"


GroupCase = tuple[dict[str, set[str]], set[str], int, dict[str, str | None]]


@st.composite
def group_cases(draw: st.DrawFn) -> GroupCase:
    deps = draw(dags(max_nodes=30))
    nodes = sorted(deps)
    failing = set(draw(st.lists(st.sampled_from(nodes), unique=True, max_size=4))) \
        if nodes else set()
    parallelism = draw(st.integers(min_value=1, max_value=6))
    keys = {n: draw(st.sampled_from([None, "apt", "pip", "npm"])) for n in nodes}
    return deps, failing, parallelism, keys


@WALK_SETTINGS
@given(group_cases())
def test_walk_batches_only_same_key_ready_nodes(case: GroupCase) -> None:
    deps, failing, parallelism, keys = case
    rec = Recorder(failing, delay=0.0002)

    result = walk(deps, rec, parallelism=parallelism, group=keys.__getitem__)

    check_outcome(deps, failing, result, rec)
    assert rec.max_running <= parallelism
    for batch in rec.batches:
        assert len(set(batch)) == len(batch)
        if len(batch) > 1:
            batch_keys = {keys[n] for n in batch}
            assert len(batch_keys) == 1 and None not in batch_keys, \
                f"batch {batch} mixes keys {batch_keys}"
            # all members were ready together: none depends on another member
            members = set(batch)
            for n in batch:
                assert not (ancestors(deps, n) & members)


def test_walk_batches_ready_nodes_of_one_key() -> None:
    """Independent nodes with the same key run as one visit; keyless ones run alone."""
    deps: dict[str, set[str]] = {"a": set(), "b": set(), "c": set(), "d": set(), "e": {"a"}}
    keys = {"a": "apt", "b": "apt", "c": "apt", "d": None, "e": "apt"}
    rec = Recorder(set())

    result = walk(deps, rec, parallelism=1, group=keys.__getitem__)

    assert set(result.done) == set(deps)
    batches = sorted(sorted(b) for b in rec.batches)
    assert ["a", "b", "c"] in batches
    assert ["d"] in batches and ["e"] in batches


def test_walk_reaches_its_parallelism() -> None:
    """With enough independent nodes, ``parallelism`` visits really run at once."""
    k = 4
    barrier = threading.Barrier(k, timeout=10)
    rec_lock = threading.Lock()
    peak = [0, 0]  # running, max

    def visit(batch: Sequence[str]) -> list[str]:
        with rec_lock:
            peak[0] += 1
            peak[1] = max(peak[1], peak[0])
        try:
            barrier.wait()  # raises BrokenBarrierError if fewer than k run together
            return ["ok" for _ in batch]
        finally:
            with rec_lock:
                peak[0] -= 1

    deps: dict[str, set[str]] = {f"x{i}": set() for i in range(2 * k)}
    result = walk(deps, visit, parallelism=k)
    assert set(result.done) == set(deps) and not result.failed
    assert peak[1] == k


def test_walk_failure_skips_downstream_and_keeps_independent_branches() -> None:
    deps: dict[str, set[str]] = {
        "root": set(), "bad": {"root"}, "child": {"bad"}, "grandchild": {"child", "other"},
        "other": {"root"}, "lone": set(),
    }
    rec = Recorder({"bad"})
    result = walk(deps, rec, parallelism=3)
    assert set(result.done) == {"root", "other", "lone"}
    assert set(result.failed) == {"bad"}
    assert result.skipped == {"child": "bad", "grandchild": "bad"}


def test_walk_should_stop_starts_nothing_more() -> None:
    deps: dict[str, set[str]] = {"a": set(), "b": {"a"}, "c": {"b"}, "z": set()}
    calls: list[str] = []

    def visit(batch: Sequence[str]) -> list[str]:
        calls.extend(batch)
        return ["ok" for _ in batch]

    result = walk(deps, visit, parallelism=1, should_stop=lambda: len(calls) >= 1)
    assert len(calls) == 1
    ran = calls[0]
    assert set(result.done) == {ran}
    assert not result.failed
    # everything else is accounted for: never started, or skipped because of what was not
    assert set(result.not_started) | set(result.skipped) == set(deps) - {ran}


def test_walk_empty_graph() -> None:
    rec = Recorder(set())
    result = walk({}, rec)
    assert (result.done, result.failed, result.skipped, result.not_started) == ({}, {}, {}, [])
    assert rec.batches == []


# -- find_cycles -----------------------------------------------------------------------------

@st.composite
def graphs_with_planted_cycles(
        draw: st.DrawFn) -> tuple[dict[str, set[str]], list[list[str]], set[frozenset[str]]]:
    """Groups of nodes (the strongly connected components to be) joined by DAG edges from a
    later group to an earlier one. A group of several nodes is a ring; a group of one may
    carry a self-loop. Returns the graph, the rings in edge order, and the expected cycles."""
    sizes = draw(st.lists(st.integers(min_value=1, max_value=5), min_size=0, max_size=12))
    total = sum(sizes)
    # shuffled names, so that a cycle's smallest member is anywhere on the ring
    names = draw(st.permutations([f"r{i:02d}" for i in range(total)]))
    groups: list[list[str]] = []
    pos = 0
    for size in sizes:
        groups.append(list(names[pos:pos + size]))
        pos += size
    deps: dict[str, set[str]] = {n: set() for n in names}
    rings: list[list[str]] = []
    expected: set[frozenset[str]] = set()
    for group in groups:
        if len(group) > 1:
            for a, b in zip(group, group[1:] + group[:1], strict=True):
                deps[a].add(b)
            rings.append(group)
            expected.add(frozenset(group))
        elif draw(st.booleans()):
            deps[group[0]].add(group[0])
            rings.append(group)
            expected.add(frozenset(group))
    # DAG edges between groups: only from a later group to an earlier one
    for gi in range(1, len(groups)):
        n_edges = draw(st.integers(min_value=0, max_value=3))
        for _ in range(n_edges):
            target_group = groups[draw(st.integers(min_value=0, max_value=gi - 1))]
            src = draw(st.sampled_from(groups[gi]))
            dst = draw(st.sampled_from(target_group))
            deps[src].add(dst)
    return deps, rings, expected


@settings(max_examples=200, deadline=None)
@given(graphs_with_planted_cycles())
def test_find_cycles_reports_each_planted_cycle(
        case: tuple[dict[str, set[str]], list[list[str]], set[frozenset[str]]]) -> None:
    deps, rings, expected = case
    cycles = find_cycles(deps)

    assert len(cycles) == len(expected)
    for cycle in cycles:
        assert len(set(cycle)) == len(cycle), f"{cycle} repeats a member"
    assert {frozenset(c) for c in cycles} == expected
    # rings come back in edge order, starting at their smallest member
    by_members = {frozenset(c): c for c in cycles}
    for ring in rings:
        got = by_members[frozenset(ring)]
        assert got[0] == min(ring)
        for a, b in zip(got, got[1:] + got[:1], strict=True):
            assert b in deps[a], f"{a} -> {b} is not an edge, in {got}"


@settings(max_examples=100, deadline=None)
@given(dags())
def test_find_cycles_acyclic_is_empty(deps: dict[str, set[str]]) -> None:
    assert find_cycles(deps) == []


@settings(max_examples=100, deadline=None)
@given(graphs_with_planted_cycles(), st.data())
def test_find_cycles_with_chords_reports_exact_members(
        case: tuple[dict[str, set[str]], list[list[str]], set[frozenset[str]]],
        data: st.DataObject) -> None:
    """Extra edges inside a cycle (chords) do not change which nodes form it."""
    deps, rings, expected = case
    for ring in rings:
        if len(ring) > 2:
            a = data.draw(st.sampled_from(ring))
            b = data.draw(st.sampled_from(ring))
            deps[a].add(b)
    got = {frozenset(c) for c in find_cycles(deps)}
    assert got == expected


def test_find_cycles_self_loop() -> None:
    assert find_cycles({"a": {"a"}}) == [["a"]]
    assert find_cycles({"a": {"a"}, "b": {"a"}, "c": set()}) == [["a"]]


def test_find_cycles_two_node_cycle_and_tail() -> None:
    deps = {"b": {"a"}, "a": {"b"}, "c": {"a"}, "d": set()}
    assert find_cycles(deps) == [["a", "b"]]


def test_find_cycles_edge_to_undeclared_node() -> None:
    assert find_cycles({"a": {"ghost"}}) == []


def test_find_cycles_deep_chain_no_recursion_limit() -> None:
    n = 5000
    deps = {f"v{i}": {f"v{i + 1}"} for i in range(n)}
    deps[f"v{n}"] = {"v0"}
    cycles = find_cycles(deps)
    assert len(cycles) == 1 and len(cycles[0]) == n + 1


# -- Graph basics -------------------------------------------------------------------------------

def _sample_graph() -> Graph:
    g = Graph()
    g.add("file.a")
    g.connect("file.b", "file.a")
    g.connect("file.c", "file.b")
    g.connect("file.c", "directory.d")
    g.add("lone.x")
    return g


def test_graph_nodes_and_edges() -> None:
    g = _sample_graph()
    assert set(g.nodes()) == {"file.a", "file.b", "file.c", "directory.d", "lone.x"}
    assert g.deps["file.c"] == {"file.b", "directory.d"}
    assert g.deps["directory.d"] == set()  # connect adds the target as a node
    assert g.dependents()["file.a"] == {"file.b"}
    assert g.dependents()["file.c"] == set()
    assert g.ancestors_of("file.c") == {"file.a", "file.b", "directory.d"}
    assert g.ancestors_of("lone.x") == set()


def test_graph_order_puts_dependencies_first() -> None:
    g = _sample_graph()
    order = g.order()
    assert sorted(order) == sorted(g.nodes())
    for node, deps in g.deps.items():
        for d in deps:
            assert order.index(d) < order.index(node)


def test_graph_order_raises_on_cycle() -> None:
    g = Graph()
    g.connect("a", "b")
    g.connect("b", "a")
    with pytest.raises(graphlib.CycleError):
        g.order()


def test_graph_reversed() -> None:
    g = _sample_graph()
    r = g.reversed()
    assert set(r.nodes()) == set(g.nodes())
    assert r.deps["file.a"] == {"file.b"}
    assert r.deps["file.b"] == {"file.c"}
    assert r.deps["directory.d"] == {"file.c"}
    assert r.deps["file.c"] == set()
    assert r.deps["lone.x"] == set()
    order = r.order()
    assert order.index("file.c") < order.index("file.b") < order.index("file.a")
    # reversing twice gives the original edges
    assert r.reversed().deps == g.deps


@settings(max_examples=50, deadline=None)
@given(dags())
def test_graph_reversed_and_order_properties(deps: dict[str, set[str]]) -> None:
    g = Graph()
    for n, ds in deps.items():
        g.add(n)
        for d in ds:
            g.connect(n, d)
    order = g.order()
    pos = {n: i for i, n in enumerate(order)}
    assert set(order) == set(deps)
    r = g.reversed()
    rpos = {n: i for i, n in enumerate(r.order())}
    for n, ds in deps.items():
        for d in ds:
            assert pos[d] < pos[n]
            assert rpos[n] < rpos[d]
            assert n in r.deps[d]


def test_graph_to_dot() -> None:
    g = _sample_graph()
    dot = g.to_dot()
    assert dot.startswith("digraph tectum {\n")
    assert dot.endswith("}\n")
    assert '  "file.b" -> "file.a";' in dot
    assert '  "file.c" -> "directory.d";' in dot
    assert '  "file.c" -> "file.b";' in dot
    assert '  "lone.x" [label = "lone.x"];' in dot
    assert dot.count("->") == 3
    # deterministic
    assert dot == _sample_graph().to_dot()


def test_graph_to_dot_labels_and_quoting() -> None:
    g = Graph()
    g.connect('file."q"', "dir\\x")
    dot = g.to_dot(labels={'file."q"': "/etc/\"a\" b"})
    assert '"file.\\"q\\"" [label = "/etc/\\"a\\" b"];' in dot
    assert '"dir\\\\x" [label = "dir\\\\x"];' in dot
    assert '"file.\\"q\\"" -> "dir\\\\x";' in dot
