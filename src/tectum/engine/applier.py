"""The applier: executes a :class:`~tectum.plans.Plan` and never re-decides it.

Changes run in dependency order, up to ``parallelism`` at once; ready changes of a type that
batches (apt packages) run as one operation. Each finished change's new state record is
committed to the backend's journal within :data:`JOURNAL_INTERVAL` seconds (the changes finished
meanwhile share one transaction: one per change would cost more than the change), so a killed run
keeps what it did; at the end the state is stored as a new version. A failed change skips
everything downstream of it; independent changes go on (Terraform's walk semantics).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from tectum.graph.dag import walk
from tectum.plans.plan import Action, Plan, ResourceChange
from tectum.providers.base import ApplyError
from tectum.providers.host.connector import Connector
from tectum.providers.registry import registry
from tectum.state.model import ResourceRecord, State
from tectum.values import UNKNOWN, is_known, resolve

JournalEntry = tuple[str, str, "ResourceRecord | None"]  # address, action, record


class Journal(Protocol):
    def record(self, base_serial: int, entries: Sequence[JournalEntry]) -> None: ...


class ApplyResult:
    """The new ``state``; addresses ``applied``; ``failed`` and ``skipped`` with reasons;
    ``counts`` per kind (add, change, replace, destroy)."""

    __slots__ = ("state", "applied", "failed", "skipped", "counts")

    def __init__(self, state: State) -> None:
        self.state = state
        self.applied: list[str] = []
        self.failed: dict[str, str] = {}
        self.skipped: dict[str, str] = {}
        self.counts: dict[str, int] = {}

    @property
    def ok(self) -> bool:
        return not self.failed and not self.skipped


Event = Callable[[str, ResourceChange, str | None], None]


def apply_plan(
    plan: Plan,
    state: State,
    connector: Callable[[str | None], Connector],
    journal: Journal,
    *,
    parallelism: int = 10,
    on_event: Event | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ApplyResult:
    """Apply ``plan`` on top of ``state`` (the state it was made from). ``on_event(kind,
    change, message)`` is called with kind ``start``, ``done``, ``failed`` or ``skipped``."""
    from tectum.addrs import ResourceAddress

    new_state = state.copy()
    changes = {c.address: c for c in plan.changes}
    results: dict[str, dict[str, Any] | None] = {}
    base_serial = state.serial
    out = ApplyResult(new_state)
    counts = {"add": 0, "change": 0, "replace": 0, "destroy": 0}
    pending: list[JournalEntry] = []

    def lookup(address: str, attr: str) -> Any:
        attrs = results.get(address)
        if attrs is None:
            return UNKNOWN
        value = attrs.get(attr)
        return UNKNOWN if value is None else value

    def visit(addresses: Sequence[str]) -> list[Any]:
        batch = [changes[a] for a in addresses]
        todo: list[ResourceChange] = []
        values: dict[str, Any] = {}
        for change in batch:
            if change.action is Action.NOOP:
                # what the read saw, over what state knew (keeps unobservable attributes)
                values[change.address] = _noop_record(change)
                continue
            if change.after is not None and not is_known(change.after):
                rt = registry.get(change.type)
                assert rt is not None
                resolved = resolve(change.after, lookup)
                if not is_known(resolved):
                    values[change.address] = ApplyError(
                        "a referenced value is still unknown after its resource was applied")
                    continue
                change.after = rt.prepare(resolved, ".")
            if on_event:
                on_event("start", change, None)
            todo.append(change)
        if todo:
            rt = registry.get(todo[0].type)
            if rt is None:
                for change in todo:
                    values[change.address] = ApplyError(
                        f"no provider offers resource type {change.type!r}")
            else:
                host = ResourceAddress.parse(todo[0].address).host
                conn = connector(host)
                if rt.batches and len(todo) > 1:
                    got = rt.apply_batch(conn, todo)
                else:
                    got = []
                    for change in todo:
                        try:
                            got.append(rt.apply(conn, change))
                        except Exception as exc:  # noqa: BLE001 - reported per change
                            got.append(exc)
                for change, value in zip(todo, got, strict=True):
                    values[change.address] = value
        return [values[a] for a in addresses]

    def group(address: str) -> str | None:
        change = changes[address]
        if change.action is Action.NOOP:
            return None
        rt = registry.get(change.type)
        if rt is not None and rt.batches:
            host = ResourceAddress.parse(address).host
            return f"{host}/{change.type}"
        return None

    def on_result(address: str, value: Any, exc: BaseException | None) -> None:
        change = changes[address]
        if exc is not None:
            message = str(exc) if isinstance(exc, ApplyError) else f"{type(exc).__name__}: {exc}"
            out.failed[address] = message
            if on_event:
                on_event("failed", change, message)
            return
        results[address] = value
        moved_from = change.moved_from
        if change.action is Action.NOOP:
            # refreshed, adopted or moved objects: kept in the state written at the end
            if value is not None:
                _set_record(new_state, change, value)
            if moved_from:
                new_state.resources.pop(moved_from, None)
            return
        rec = _set_record(new_state, change, value)
        pending.append((address, change.action.value, rec))
        if moved_from:
            new_state.resources.pop(moved_from, None)
            pending.append((moved_from, "delete", None))
        out.applied.append(address)
        counts[_COUNT_KEYS[change.action]] += 1
        if on_event:
            on_event("done", change, None)

    last_flush = [time.monotonic()]

    def flush(force: bool = True) -> None:
        now = time.monotonic()
        if pending and (force or now - last_flush[0] >= JOURNAL_INTERVAL):
            journal.record(base_serial, pending)
            pending.clear()
            last_flush[0] = now

    deps = {c.address: {d for d in c.dependencies if d in changes} for c in plan.changes}
    try:
        walked = walk(deps, visit, parallelism=parallelism, group=group,
                      inline=lambda a: changes[a].action is Action.NOOP,
                      on_result=on_result, on_round=lambda: flush(force=False),
                      round_timeout=JOURNAL_INTERVAL, should_stop=should_stop)
    finally:
        flush()
    for address, cause in walked.skipped.items():
        reason = f"upstream {cause} failed" if cause in walked.failed else \
            f"upstream {cause} was not applied"
        out.skipped[address] = reason
        if on_event:
            on_event("skipped", changes[address], reason)
    for address in walked.not_started:
        out.skipped[address] = "not started: the run was interrupted"
    out.counts = counts
    # outputs, from the final attributes
    outputs: dict[str, dict[str, Any]] = {}
    for name, value in plan.outputs.items():
        final = resolve(value, lookup) if not is_known(value) else value
        if is_known(final):
            outputs[name] = {"value": final,
                             "sensitive": plan.output_sensitive.get(name, False)}
    if not plan.destroy:
        new_state.outputs = outputs
    else:
        new_state.outputs = {}
    return out


#: seconds at most between a change finishing and its journal record being committed; one
#: transaction then holds every change finished meanwhile (issue target: durable within 1 s)
JOURNAL_INTERVAL = 0.2

def _noop_record(change: ResourceChange) -> dict[str, Any] | None:
    """What state keeps for an unchanged object: the prior record refreshed with what was read,
    limited to attributes state already held or the configuration manages (so state does not
    grow attributes nobody manages); an adopted object keeps all that was read."""
    before, prior = change.before, change.prior
    if before is None:
        return prior
    if prior is None:
        return before
    after = change.after or {}
    return {**prior, **{k: v for k, v in before.items()
                        if k in prior or after.get(k) is not None}}


_COUNT_KEYS = {Action.CREATE: "add", Action.UPDATE: "change", Action.REPLACE: "replace",
               Action.DELETE: "destroy"}


def _set_record(state: State, change: ResourceChange, value: dict[str, Any] | None
                ) -> ResourceRecord | None:
    if value is None:
        state.resources.pop(change.address, None)
        return None
    rt = registry.get(change.type)
    attrs = rt.stored(value) if rt is not None else dict(value)
    rec = ResourceRecord(change.address, change.type, attrs,
                         [d for d in change.dependencies] if change.action is not Action.DELETE
                         else [], change.source)
    state.resources[change.address] = rec
    return rec
