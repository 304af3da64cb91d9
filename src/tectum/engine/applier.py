"""The applier: executes a :class:`~tectum.plans.Plan` and never re-decides it.

Changes run in dependency order, up to ``parallelism`` operations at once in the whole run
(Terraform's ``-parallelism``), on up to ``forks`` hosts at once (Ansible's ``--forks``), and
never more at once on one target than its provider's concurrency allows; ready changes of a
type that batches (apt packages) run as one operation. Each finished change's new state record is
committed to the backend's journal within :data:`JOURNAL_INTERVAL` seconds (the changes finished
meanwhile share one transaction: one per change would cost more than the change), so a killed run
keeps what it did; at the end the state is stored as a new version. A failed change skips
everything downstream of it; independent changes go on (Terraform's walk semantics).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple, Protocol

from tectum.engine.targets import Targets
from tectum.graph.dag import walk
from tectum.masking import REDACTOR
from tectum.plans.plan import Action, Plan, ResourceChange
from tectum.providers.base import ApplyError, ResourceType
from tectum.providers.registry import registry
from tectum.state.model import CREATED, FOUND, OWED_KINDS, ResourceRecord, State
from tectum.values import UNKNOWN, is_known, resolve

JournalEntry = tuple[str, str, "ResourceRecord | None"]  # address, action, record


class Journal(Protocol):
    def record(self, base_serial: int, entries: Sequence[JournalEntry]) -> None: ...


class HostReport(NamedTuple):
    """How one host fared (``local``: this machine): ``status`` is ``changed``, ``ok``
    (nothing to change), ``failed``, ``unreachable``, ``refused`` (host key or login) or
    ``not attempted`` (a ``--serial`` batch before it failed too much); counts of resources
    (``unreachable``: changes that could not run because the host went down, apart from
    ``failed``)."""

    host: str
    status: str
    changed: int
    unchanged: int
    failed: int
    skipped: int
    reason: str | None = None
    unreachable: int = 0


class ApplyResult:
    """The new ``state``; addresses ``applied``; ``failed`` and ``skipped`` with reasons;
    ``unreachable``: changes whose host went down (address → reason), counted apart from
    ``failed``; ``counts`` per kind (add, change, replace, destroy); ``hosts``: a
    :class:`HostReport` per
    host, in plan order; ``stopped``: why later ``--serial`` batches did not run (or None)."""

    __slots__ = ("state", "applied", "failed", "skipped", "counts", "hosts", "stopped",
                 "unreachable")

    def __init__(self, state: State) -> None:
        self.state = state
        self.applied: list[str] = []
        self.failed: dict[str, str] = {}
        #: changes that could not run because their host went down (not failures of theirs)
        self.unreachable: dict[str, str] = {}
        self.skipped: dict[str, str] = {}
        self.counts: dict[str, int] = {}
        self.hosts: dict[str, HostReport] = {}
        self.stopped: str | None = None

    @property
    def ok(self) -> bool:
        return not self.failed and not self.skipped and not any(
            h.status in ("failed", "unreachable", "refused", "not attempted")
            for h in self.hosts.values())

    def host_counts(self) -> dict[str, int]:
        """Hosts per status: changed, ok, failed, unreachable, refused, not attempted."""
        out = {"changed": 0, "ok": 0, "failed": 0, "unreachable": 0, "refused": 0,
               "not attempted": 0}
        for h in self.hosts.values():
            out[h.status] += 1
        return out


Event = Callable[[str, ResourceChange, str | None], None]
HostEvent = Callable[[HostReport], None]


def host_of(address: str) -> str:
    """The host of a resource address; ``local`` for this machine."""
    from tectum.addrs import ResourceAddress

    return ResourceAddress.parse(address).host or "local"


def serial_batches(hosts: Sequence[str], spec: str) -> list[list[str]]:
    """Split ``hosts`` into ``--serial`` batches (Ansible's ``serial``): ``spec`` is a batch
    size ``N``, a percentage ``N%`` of all hosts (rounded down, at least 1), or a
    comma-separated list of them (``1,25%,100%``) whose last entry repeats. Raises
    :class:`ValueError` for a malformed spec."""
    sizes: list[int] = []
    total = len(hosts)
    for part in (p.strip() for p in spec.split(",")):
        if part.endswith("%"):
            number = float(part[:-1])
            if not 0 < number <= 100:
                raise ValueError(f"{part!r}: a percentage is more than 0 and at most 100")
            sizes.append(max(1, int(total * number / 100)))
        else:
            if not part.isdigit() or int(part) < 1:
                raise ValueError(f"{part!r} is not a batch size (N or N%)")
            sizes.append(int(part))
    out: list[list[str]] = []
    at = 0
    i = 0
    while at < total:
        size = sizes[min(i, len(sizes) - 1)]
        out.append(list(hosts[at:at + size]))
        at += size
        i += 1
    return out


def apply_plan(
    plan: Plan,
    state: State,
    targets: Targets,
    journal: Journal,
    *,
    parallelism: int = 100,
    on_event: Event | None = None,
    should_stop: Callable[[], bool] | None = None,
    forks: int = 50,
    batches: Sequence[Sequence[str]] | None = None,
    max_fail_percent: float | None = None,
    on_host: HostEvent | None = None,
) -> ApplyResult:
    """Apply ``plan`` on top of ``state`` (the state it was made from). ``on_event(kind,
    change, message)`` is called with kind ``start``, ``done``, ``failed`` or ``skipped``;
    ``on_host(report)`` when a host has nothing left to do.

    At most ``parallelism`` operations run at once in the whole run, on at most ``forks``
    hosts at once (a host counts while an operation runs on it), and on one target no more
    than its provider's :meth:`~tectum.providers.base.Provider.concurrency`. ``batches``
    (host names, ``local`` for this machine; see :func:`serial_batches`) are applied one
    after another; after a batch in which more than ``max_fail_percent`` percent of its
    hosts failed, were unreachable or refused (strictly more, as Ansible's
    ``max_fail_percentage``), the later batches are not attempted. A dependency on a
    resource of a later batch is not waited for."""
    from tectum.addrs import ResourceAddress

    new_state = state.copy()
    changes = {c.address: c for c in plan.changes}
    results: dict[str, dict[str, Any] | None] = {}
    base_serial = state.serial
    out = ApplyResult(new_state)
    counts = {"add": 0, "change": 0, "replace": 0, "destroy": 0, "forget": 0}
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
            if change.action is Action.FORGET:
                values[change.address] = None  # only state changes: the object stays
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
                run: list[ResourceChange] = []
                got: list[Any] = []
                try:
                    slot = targets.slot(rt, host)
                    target = targets.target(rt, host)
                except Exception as exc:  # noqa: BLE001 - reported per change
                    for change in todo:
                        values[change.address] = exc
                    return [values[a] for a in addresses]
                with gate.working(host or "local"), slot:
                    for change in todo:
                        try:
                            run.append(_replace_identity(rt, target, change))
                        except Exception as exc:  # noqa: BLE001 - reported per change
                            values[change.address] = exc
                    if not run:
                        got = []
                    elif rt.batches:
                        got = rt.apply_batch(target, run)
                    else:
                        for change in run:
                            try:
                                got.append(rt.apply(target, change))
                            except Exception as exc:  # noqa: BLE001 - reported per change
                                got.append(exc)
                for change, value in zip(run, got, strict=True):
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
            down = down_of(hosts[address])
            if down is not None:
                out.unreachable[address] = down[1]
            else:
                message = str(exc) if isinstance(exc, ApplyError) \
                    else f"{type(exc).__name__}: {exc}"
                out.failed[address] = message
                if on_event:
                    on_event("failed", change, message)
            settle(address)
            return
        try:
            succeeded(address, change, value)
        finally:
            settle(address)

    def succeeded(address: str, change: ResourceChange, value: Any) -> None:
        rt = registry.get(change.type)
        if isinstance(value, dict) and rt is not None:
            hidden = {c.name for c in change.changes if c.sensitive}
            for masked in rt.masked_values(value, hidden):
                REDACTOR.add(masked)
            for key, spec in rt.schema.attrs.items():
                if spec.sensitive and isinstance(value.get(key), str):
                    REDACTOR.add(value[key])  # masked in output, sealed at rest
        results[address] = value
        moved_from = change.moved_from
        if change.action is Action.FORGET:
            new_state.resources.pop(address, None)
            pending.append((address, "forget", None))
            out.applied.append(address)
            counts["forget"] += 1
            if on_event:
                on_event("done", change, None)
            return
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
        owe(address)
        if on_event:
            on_event("done", change, None)

    watchers: dict[str, list[ResourceChange]] = {}
    for c in plan.changes:
        if c.triggered:
            for cause in c.triggers:
                watchers.setdefault(cause, []).append(c)

    def owe(address: str) -> None:
        """``address`` changed: each service that restarts (or reloads) for it owes that
        restart until it has run. The debt is journaled with the change that caused it, so a
        run that fails or is killed before the restart leaves it in state for the next run."""
        for w in watchers.get(address, ()):
            if w.address in results or w.triggered not in OWED_KINDS:
                continue
            rec = new_state.resources.get(w.moved_from or w.address)
            if rec is None:
                rtw = registry.get(w.type)
                if w.before is None or rtw is None:
                    continue  # nothing runs yet: creating it starts it with the new input
                rec = ResourceRecord(w.address, w.type, rtw.stored(w.before),
                                     list(w.dependencies), w.source,
                                     w.origin or CREATED, w.on_destroy,
                                     schema_version=rtw.schema_version)
            debt = (w.triggered, address)
            if debt in rec.owed:
                continue
            rec = rec._replace(owed=(*rec.owed, debt))
            new_state.resources[rec.address] = rec
            pending.append((rec.address, "owed", rec))

    last_flush = [time.monotonic()]

    def flush(force: bool = True) -> None:
        now = time.monotonic()
        if pending and (force or now - last_flush[0] >= JOURNAL_INTERVAL):
            journal.record(base_serial, pending)
            pending.clear()
            last_flush[0] = now

    hosts = {a: host_of(a) for a in changes}
    remaining: dict[str, int] = {}
    for h in hosts.values():
        remaining[h] = remaining.get(h, 0) + 1
    gate = _HostGate(forks)
    for h in plan.hosts_down:
        remaining.setdefault(h, 0)
    reported: set[str] = set()

    def down_of(host: str) -> tuple[str, str] | None:
        if host in plan.hosts_down:
            return plan.hosts_down[host]
        if host == "local":
            return None
        return targets.down(host)

    def report(host: str, status: str | None = None, reason: str | None = None) -> None:
        if host in reported:
            return
        reported.add(host)
        mine = [a for a, h in hosts.items() if h == host]
        failed = sum(1 for a in mine if a in out.failed)
        lost = sum(1 for a in mine if a in out.unreachable)
        skipped = sum(1 for a in mine if a in out.skipped)
        changed = sum(1 for a in mine if a in applied_set)
        unchanged = sum(1 for a in mine if changes[a].action is Action.NOOP)
        if status is None:
            down = down_of(host)
            if down is not None:
                status, reason = down
            elif failed:
                status = "failed"
                reason = next(out.failed[a] for a in mine if a in out.failed)
            elif skipped:
                status = "failed"
                reason = next(out.skipped[a] for a in mine if a in out.skipped)
            else:
                status = "changed" if changed else "ok"
        rep = HostReport(host, status, changed, unchanged, failed, skipped, reason, lost)
        out.hosts[host] = rep
        if on_host:
            on_host(rep)

    applied_set: set[str] = set()

    def settle(address: str) -> None:
        if out.applied and out.applied[-1] == address:
            applied_set.add(address)
        host = hosts[address]
        remaining[host] -= 1
        if remaining[host] == 0:
            report(host)

    def _workers(members: set[str], parallelism: int) -> int:
        """Threads for a walk: ``parallelism``, but no more than the targets of ``members``
        can take at once (their concurrency limits summed): a thread more would only wait."""
        limits: dict[Any, int] = {}
        seen: set[tuple[str, str]] = set()
        for a in members:
            change = changes[a]
            if change.action in (Action.NOOP, Action.FORGET) \
                    or (change.type, hosts[a]) in seen:
                continue
            seen.add((change.type, hosts[a]))
            rt = registry.get(change.type)
            if rt is None:
                continue
            host = ResourceAddress.parse(a).host
            key = targets.where(rt, host)
            if key not in limits:
                try:
                    limits[key] = targets.limit(rt, host)
                except Exception:  # noqa: BLE001 - reported when its changes run
                    limits[key] = 1
        return max(1, min(parallelism, sum(limits.values()) or 1))

    order = list(dict.fromkeys([*remaining]))
    if batches is None:
        waves = [order]
    else:
        listed = {h for b in batches for h in b}
        waves = [[h for h in b if h in remaining] for b in batches] or [[]]
        waves[0][0:0] = [h for h in order if h not in listed]  # e.g. local: first
        waves = [w for w in waves if w]
    try:
        for number, wave in enumerate(waves, start=1):
            members = {a for a, h in hosts.items() if h in set(wave)}
            for h in wave:
                if remaining.get(h) == 0:
                    report(h)  # down before the run, or nothing in the plan
            if members:
                deps = {a: {d for d in changes[a].dependencies if d in members}
                        for a in changes if a in members}
                walked = walk(deps, visit, parallelism=_workers(members, parallelism),
                              group=group,
                              inline=lambda a: changes[a].action in (Action.NOOP,
                                                                     Action.FORGET),
                              on_result=on_result, on_round=lambda: flush(force=False),
                              round_timeout=JOURNAL_INTERVAL, should_stop=should_stop)
                for address, cause in walked.skipped.items():
                    down = down_of(hosts[address])
                    if down is not None:
                        out.unreachable[address] = down[1]
                        continue
                    reason = (f"upstream {cause} failed" if cause in walked.failed
                              else f"upstream {cause} was not applied")
                    out.skipped[address] = reason
                    if on_event:
                        on_event("skipped", changes[address], reason)
                for address in walked.not_started:
                    out.skipped[address] = "not started: the run was interrupted"
                for h in wave:
                    report(h)
            if should_stop is not None and should_stop():
                break
            if max_fail_percent is not None and number < len(waves):
                bad = [h for h in wave if out.hosts.get(h) is not None
                       and out.hosts[h].status in ("failed", "unreachable", "refused")]
                percent = 100.0 * len(bad) / len(wave)
                if percent > max_fail_percent:
                    out.stopped = (
                        f"batch {number} of {len(waves)}: {len(bad)} of {len(wave)} hosts "
                        f"failed ({percent:.0f}% > --max-fail-percent {max_fail_percent:g}); "
                        "the later batches were not attempted")
                    for later in waves[number:]:
                        for h in later:
                            for a, hh in hosts.items():
                                if hh == h:
                                    out.skipped[a] = "not attempted: " + out.stopped
                            report(h, "not attempted", out.stopped)
                    break
    finally:
        flush()
    out.counts = counts
    # outputs, from the final attributes
    outputs: dict[str, dict[str, Any]] = {}
    for name, value in plan.outputs.items():
        final = resolve(value, lookup) if not is_known(value) else value
        if is_known(final):
            outputs[name] = {"value": final,
                             "sensitive": plan.output_sensitive.get(name, False)}
    if not plan.destroy:
        # an output that is unknown now (its resource is outside --limit or on a host that was
        # down) keeps its last value
        for name in plan.outputs:
            if name not in outputs and name in state.outputs:
                outputs[name] = state.outputs[name]
        new_state.outputs = outputs
    elif new_state.resources:
        # a destroy that left resources (-target, --limit, failures): outputs stay
        new_state.outputs = dict(state.outputs)
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
               Action.DELETE: "destroy", Action.FORGET: "forget"}


def _set_record(state: State, change: ResourceChange, value: dict[str, Any] | None
                ) -> ResourceRecord | None:
    if value is None:
        state.resources.pop(change.address, None)
        return None
    rt = registry.get(change.type)
    attrs = rt.stored(value) if rt is not None else dict(value)
    was = state.resources.get(change.moved_from or change.address)
    origin = change.origin or (was.origin if was is not None else CREATED)
    if change.action is Action.CREATE and value.get("_found") and change.on_destroy is None:
        # made meanwhile by something else in this apply (a package's own file): that is
        # who made it (ResourceType.apply: ``_found``)
        origin = FOUND
    owed = was.owed if was is not None and change.action is Action.NOOP else ()
    rec = ResourceRecord(change.address, change.type, attrs,
                         [d for d in change.dependencies] if change.action is not Action.DELETE
                         else [], change.source, origin, change.on_destroy, owed,
                         schema_version=rt.schema_version if rt is not None else 0)
    state.resources[change.address] = rec
    return rec


class _HostGate:
    """At most ``forks`` hosts worked on at once: a host takes a place while an operation
    runs on it and gives it back when none does (Ansible's forks). A visit waiting for a place
    never holds one, so waiting cannot deadlock."""

    def __init__(self, forks: int) -> None:
        self._free = max(1, forks)
        self._busy: dict[str, int] = {}
        self._cond = threading.Condition()

    @contextmanager
    def working(self, host: str) -> Iterator[None]:
        with self._cond:
            while host not in self._busy and self._free == 0:
                self._cond.wait()
            if host not in self._busy:
                self._free -= 1
                self._busy[host] = 0
            self._busy[host] += 1
        try:
            yield
        finally:
            with self._cond:
                self._busy[host] -= 1
                if self._busy[host] == 0:
                    del self._busy[host]
                    self._free += 1
                    self._cond.notify_all()


def _replace_identity(rt: ResourceType[Any], conn: Any, change: ResourceChange
                      ) -> ResourceChange:
    """A replace whose identity changed (a new path, a new name) deletes the object at the old
    identity first, then creates the new one: returns the create to run. Any other change is
    returned as it is. Raises what the delete raises."""
    if change.action is not Action.REPLACE or change.prior is None or change.after is None \
            or rt.identity(change.prior) == rt.identity(change.after):
        return change
    rt.apply(conn, ResourceChange(change.address, change.type, Action.DELETE, change.before,
                                  None, prior=change.prior, source=change.source))
    _, creates = rt.plan(change.after, None, None)
    return ResourceChange(change.address, change.type, Action.CREATE, None, change.after,
                          creates, triggers=change.triggers, triggered=change.triggered,
                          dependencies=change.dependencies, source=change.source,
                          origin=change.origin, on_destroy=change.on_destroy)
