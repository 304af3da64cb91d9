"""A directed acyclic graph of resource addresses and its parallel walk.

Edges point from a node to what it depends on. :meth:`Graph.walk` visits nodes in dependency
order with bounded parallelism (a thread pool fed by :class:`graphlib.TopologicalSorter`); a node
that fails makes every node downstream of it *skipped* without running (Terraform's
``internal/dag/walk.go`` does the same), while independent branches go on.
"""

from __future__ import annotations

import graphlib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any


class Graph:
    def __init__(self) -> None:
        self.deps: dict[str, set[str]] = {}

    def add(self, node: str) -> None:
        self.deps.setdefault(node, set())

    def connect(self, node: str, depends_on: str) -> None:
        self.deps.setdefault(node, set()).add(depends_on)
        self.deps.setdefault(depends_on, set())

    def nodes(self) -> list[str]:
        return list(self.deps)

    def dependents(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {n: set() for n in self.deps}
        for node, deps in self.deps.items():
            for d in deps:
                out[d].add(node)
        return out

    def ancestors_of(self, node: str) -> set[str]:
        """Everything ``node`` depends on, directly or not."""
        seen: set[str] = set()
        stack = list(self.deps.get(node, ()))
        while stack:
            n = stack.pop()
            if n not in seen:
                seen.add(n)
                stack.extend(self.deps.get(n, ()))
        return seen

    def order(self) -> list[str]:
        """A topological order (dependencies first). Raises ``graphlib.CycleError``."""
        return list(graphlib.TopologicalSorter(self.deps).static_order())

    def reversed(self) -> Graph:
        """The same nodes with every edge turned around (for destroy order)."""
        g = Graph()
        for node in self.deps:
            g.add(node)
        for node, deps in self.deps.items():
            for d in deps:
                g.connect(d, node)
        return g

    def to_dot(self, labels: dict[str, str] | None = None) -> str:
        lines = ["digraph tectum {", "  rankdir = \"RL\";", "  node [shape = box];"]
        for node in sorted(self.deps):
            label = (labels or {}).get(node, node)
            lines.append(f"  {_q(node)} [label = {_q(label)}];")
        for node in sorted(self.deps):
            for d in sorted(self.deps[node]):
                lines.append(f"  {_q(node)} -> {_q(d)};")
        lines.append("}")
        return "\n".join(lines) + "\n"


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def find_cycles(deps: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle, as the list of its members in edge order (Tarjan's strongly connected
    components; a self-edge is a cycle of one)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    result: list[list[str]] = []
    counter = 0

    for root in sorted(deps):
        if root in index:
            continue
        # iterative Tarjan
        work: list[tuple[str, Iterable[str]]] = [(root, iter(sorted(deps.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, it = work[-1]
            advanced = False
            for nxt in it:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(deps.get(nxt, ())))))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                comp: list[str] = []
                while True:
                    n = stack.pop()
                    on_stack.discard(n)
                    comp.append(n)
                    if n == node:
                        break
                if len(comp) > 1 or node in deps.get(node, ()):
                    result.append(_cycle_order(comp, deps))
    return result


def _cycle_order(comp: list[str], deps: dict[str, set[str]]) -> list[str]:
    """Order a strongly connected component along its edges, starting at its smallest node."""
    members = set(comp)
    start = min(comp)
    order = [start]
    seen = {start}
    node = start
    while True:
        nxt = next((d for d in sorted(deps.get(node, ())) if d in members and d not in seen),
                   None)
        if nxt is None:
            break
        order.append(nxt)
        seen.add(nxt)
        node = nxt
    order.extend(sorted(members - seen))
    return order


@dataclass
class WalkResult:
    """``done``: node → value returned; ``failed``: node → exception; ``skipped``: node → the
    failed upstream node that caused the skip; ``not_started``: nodes never reached (stop)."""

    done: dict[str, Any] = field(default_factory=dict)
    failed: dict[str, BaseException] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    not_started: list[str] = field(default_factory=list)


def walk(
    deps: dict[str, set[str]],
    visit: Callable[[Sequence[str]], Sequence[Any]],
    *,
    parallelism: int = 10,
    group: Callable[[str], str | None] | None = None,
    on_result: Callable[[str, Any, BaseException | None], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> WalkResult:
    """Visit every node after its dependencies, up to ``parallelism`` visits at once.

    ``visit(nodes)`` is called with one node, or with several ready nodes that ``group`` maps to
    the same non-None key (batching: e.g. all ready package installs at once); it returns one
    result per node — an exception instance there means that node failed. ``on_result`` is
    called in the walking thread, in completion order (used to persist state after each node).
    """
    sorter = graphlib.TopologicalSorter(deps)
    sorter.prepare()
    dependents: dict[str, set[str]] = {n: set() for n in deps}
    for node, ds in deps.items():
        for d in ds:
            dependents.setdefault(d, set()).add(node)
    result = WalkResult()
    blocked: dict[str, str] = {}  # node -> failed root cause
    running: dict[Future[Sequence[Any]], list[str]] = {}
    ready: list[str] = []

    def settle(node: str, value: Any, exc: BaseException | None) -> None:
        if exc is not None:
            result.failed[node] = exc
            _block_downstream(node, node)
        else:
            result.done[node] = value
        if on_result is not None:
            on_result(node, value, exc)
        sorter.done(node)

    def _block_downstream(node: str, cause: str) -> None:
        todo = list(dependents.get(node, ()))
        while todo:
            n = todo.pop()
            if n not in blocked:
                blocked[n] = cause
                todo.extend(dependents.get(n, ()))

    with ThreadPoolExecutor(max_workers=max(1, parallelism)) as pool:
        while sorter.is_active():
            ready.extend(sorter.get_ready())
            stopping = should_stop is not None and should_stop()
            # skipped nodes complete at once so their own dependents become ready (and skipped)
            while True:
                skip = [n for n in ready if n in blocked]
                if not skip:
                    break
                for n in skip:
                    ready.remove(n)
                    result.skipped[n] = blocked[n]
                    sorter.done(n)
                ready.extend(sorter.get_ready())
            if stopping:
                result.not_started.extend(ready)
                for n in ready:
                    _block_downstream(n, n)
                    sorter.done(n)
                ready.clear()
                if not running:
                    # mark everything left as not started
                    ready.extend(sorter.get_ready())
                    if not ready:
                        break
                    continue
            while ready and len(running) < max(1, parallelism):
                first = ready.pop(0)
                batch = [first]
                key = group(first) if group else None
                if key is not None:
                    same = [n for n in ready if group is not None and group(n) == key]
                    for n in same:
                        ready.remove(n)
                    batch.extend(same)
                running[pool.submit(visit, batch)] = batch
            if not running:
                if ready:
                    continue
                break
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in finished:
                batch = running.pop(fut)
                try:
                    values = fut.result()
                except BaseException as exc:  # noqa: BLE001 - a visit that raised fails its batch
                    for n in batch:
                        settle(n, None, exc)
                    continue
                for n, v in zip(batch, values, strict=True):
                    if isinstance(v, BaseException):
                        settle(n, None, v)
                    else:
                        settle(n, v, None)
    return result
