"""A directed acyclic graph of resource addresses and its parallel walk.

Edges point from a node to what it depends on. :meth:`Graph.walk` visits nodes in dependency
order with bounded parallelism (a thread pool fed by :class:`graphlib.TopologicalSorter`); a node
that fails makes every node downstream of it *skipped* without running (Terraform's
``internal/dag/walk.go`` does the same), while independent branches go on.
"""

from __future__ import annotations

import graphlib
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from concurrent.futures import Future


class Graph:
    def __init__(self) -> None:
        self.deps: dict[str, set[str]] = {}
        self._order: list[str] | None = None

    def add(self, node: str) -> None:
        self.deps.setdefault(node, set())
        self._order = None

    def connect(self, node: str, depends_on: str) -> None:
        self.deps.setdefault(node, set()).add(depends_on)
        self.deps.setdefault(depends_on, set())
        self._order = None

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
        """A topological order (dependencies first; computed once until the graph changes).
        Raises ``graphlib.CycleError``."""
        if self._order is None:
            self._order = list(graphlib.TopologicalSorter(self.deps).static_order())
        return self._order

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


class WalkResult:
    """``done``: node → value returned; ``failed``: node → exception; ``skipped``: node → the
    failed upstream node that caused the skip; ``not_started``: nodes never reached (stop)."""

    __slots__ = ("done", "failed", "skipped", "not_started")

    def __init__(self) -> None:
        self.done: dict[str, Any] = {}
        self.failed: dict[str, BaseException] = {}
        self.skipped: dict[str, str] = {}
        self.not_started: list[str] = []


def walk(
    deps: dict[str, set[str]],
    visit: Callable[[Sequence[str]], Sequence[Any]],
    *,
    parallelism: int = 10,
    group: Callable[[str], str | None] | None = None,
    inline: Callable[[str], bool] | None = None,
    on_result: Callable[[str, Any, BaseException | None], None] | None = None,
    on_round: Callable[[], None] | None = None,
    round_timeout: float | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> WalkResult:
    """Visit every node after its dependencies, up to ``parallelism`` visits at once.

    ``visit(nodes)`` is called with one node, or with several ready nodes that ``group`` maps to
    the same non-None key (batching: e.g. all ready package installs at once); it returns one
    result per node — an exception instance there means that node failed. Nodes for which
    ``inline`` is true are visited at once in the walking thread (cheap work, e.g. no-ops).
    ``on_result`` is called in the walking thread, in completion order; ``on_round`` after each
    round of completions, and at least every ``round_timeout`` seconds while visits run (used
    to make results durable together, and soon, even while a long visit goes on). When
    ``should_stop()`` turns true no new visit starts; running ones finish; the rest is reported
    ``not_started`` or skipped.
    """
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    sorter = graphlib.TopologicalSorter(deps)
    sorter.prepare()
    dependents: dict[str, set[str]] = {n: set() for n in deps}
    for node, ds in deps.items():
        for d in ds:
            dependents.setdefault(d, set()).add(node)
    result = WalkResult()
    blocked: dict[str, str] = {}  # node -> failed (or never started) root cause
    running: dict[Future[Sequence[Any]], list[str]] = {}
    queue: deque[list[str]] = deque()
    stopping = False
    limit = max(1, parallelism)

    def block_downstream(node: str, cause: str) -> None:
        todo = list(dependents.get(node, ()))
        while todo:
            n = todo.pop()
            if n not in blocked:
                blocked[n] = cause
                todo.extend(dependents.get(n, ()))

    def settle(node: str, value: Any, exc: BaseException | None) -> None:
        if exc is not None:
            result.failed[node] = exc
            block_downstream(node, node)
        else:
            result.done[node] = value
        if on_result is not None:
            on_result(node, value, exc)
        sorter.done(node)

    def settle_batch(batch: Sequence[str], values: Sequence[Any]) -> None:
        for n, v in zip(batch, values, strict=True):
            if isinstance(v, BaseException):
                settle(n, None, v)
            else:
                settle(n, v, None)

    def drain_ready() -> None:
        """Move newly ready nodes into the queue (skipping blocked ones, running inline ones),
        until no more become ready without a visit."""
        buckets: dict[str, list[str]] = {}
        while True:
            new = sorter.get_ready()
            if not new:
                break
            for n in new:
                if n in blocked:
                    result.skipped[n] = blocked[n]
                    sorter.done(n)
                elif stopping:
                    result.not_started.append(n)
                    block_downstream(n, n)
                    sorter.done(n)
                elif inline is not None and inline(n):
                    try:
                        settle_batch([n], visit([n]))
                    except Exception as exc:  # noqa: BLE001 - a visit that raised fails
                        settle(n, None, exc)
                else:
                    key = group(n) if group is not None else None
                    if key is None:
                        queue.append([n])
                    else:
                        buckets.setdefault(key, []).append(n)
        queue.extend(buckets.values())

    with ThreadPoolExecutor(max_workers=limit) as pool:
        while True:
            drain_ready()
            if should_stop is not None and not stopping and should_stop():
                stopping = True
            if stopping:
                while queue:
                    for n in queue.popleft():
                        result.not_started.append(n)
                        block_downstream(n, n)
                        sorter.done(n)
                drain_ready()
            while queue and len(running) < limit:
                batch = queue.popleft()
                running[pool.submit(visit, batch)] = batch
            if not running:
                break
            finished, _ = wait(list(running), timeout=round_timeout,
                               return_when=FIRST_COMPLETED)
            for fut in finished:
                batch = running.pop(fut)
                try:
                    values = fut.result()
                except Exception as exc:  # noqa: BLE001 - a visit that raised fails its batch
                    for n in batch:
                        settle(n, None, exc)
                    continue
                settle_batch(batch, values)
            if on_round is not None:
                on_round()
    # whatever is left behind a never-started node
    for n in deps:
        if n not in result.done and n not in result.failed and n not in result.skipped \
                and n not in result.not_started:
            result.skipped[n] = blocked.get(n, n)
    return result
