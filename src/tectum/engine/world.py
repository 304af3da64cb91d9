"""What the engine reads of the world outside planning (DESIGN decision 2): the check that a
plan made earlier still matches the world, the re-read after changes with side effects, refresh
and drift, import, and the clean-up after a killed run. Every read goes through
:func:`~tectum.engine.planner.add_read` and :meth:`~tectum.engine.planner.Planner.read_hosts`:
grouped by host and type, one round trip per host where the provider can."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from tectum.addrs import ResourceAddress
from tectum.backends.base import Intent
from tectum.config.declaration import Stack
from tectum.config.inventory import LOCAL
from tectum.diagnostics import Diagnostic, DiagnosticError, Diagnostics
from tectum.engine.applier import ApplyResult
from tectum.engine.planner import HostBatches, Planner, add_read
from tectum.engine.targets import Targets
from tectum.plans.plan import Action, Plan
from tectum.providers.base import ReadItem
from tectum.providers.registry import registry
from tectum.state.model import FOUND, ResourceRecord, State
from tectum.values import is_known


class Drift(NamedTuple):
    """An object changed outside tectum: ``status`` is ``changed`` (with ``attributes`` as
    (name, recorded, found)) or ``deleted``. ``interrupted``: the change was left by a run
    that was interrupted before it recorded it (tectum's own change, not a hand edit)."""

    address: str
    type: str
    status: str
    attributes: list[tuple[str, Any, Any]]
    interrupted: bool = False


class World:
    """``World(targets, in_limit, forks)``: reads through the session's ``targets``, on hosts
    ``in_limit`` selects, up to ``forks`` hosts at once. :attr:`hosts_down` names the hosts
    the last :meth:`refresh` could not read: host → (kind, reason)."""

    def __init__(self, targets: Targets, in_limit: Callable[[str | None], bool],
                 forks: int = 50) -> None:
        self.targets = targets
        self.in_limit = in_limit
        self.forks = forks
        self.hosts_down: dict[str, tuple[str, str]] = {}

    def check(self, plan: Plan, *, made: str, retry: str) -> None:
        """Design decision 2 for a plan applied some time after it was made (a saved plan, or
        one the user confirmed at a prompt): before anything is done, re-read every object the
        plan changes (one facts round trip per host, as the plan's own read did) and refuse the
        plan when one of them is no longer what the plan found. Terraform applies a saved plan
        without looking again; tectum does not act on a world it has not seen. ``made`` says
        where the plan came from, ``retry`` what to do instead (both sentences). Objects
        whose identity is known only at apply time, objects whose read fails, and hosts that
        cannot be reached now are not checked (applying reports those). Raises
        :class:`DiagnosticError` naming each object that moved and the attributes that did."""

        planned: dict[str, Any] = {}
        by_host: dict[str | None, HostBatches] = {}
        for change in plan.changes:
            rt = registry.get(change.type)
            obj = change.after if change.after is not None else (change.prior or change.before)
            if change.action in (Action.NOOP, Action.FORGET) or rt is None or obj is None \
                    or not is_known(obj):
                continue  # (forgetting leaves the object alone: nothing to check)
            if change.action is Action.REPLACE and change.prior is not None \
                    and rt.identity(change.prior) != rt.identity(obj):
                obj = change.prior  # its identity changes: the object it replaces
            add_read(by_host, ResourceAddress.parse(change.address).host, rt, change.address,
                     ReadItem(None, obj) if obj is change.prior
                     else ReadItem(obj, change.prior))
            planned[change.address] = change.before
        if not by_host:
            return
        planner = Planner(self.targets, self.in_limit, parallelism=self.forks)
        moved: list[str] = []
        for rt, address, obs in planner.read_found(by_host):
            now = rt.stored(obs) if obs is not None else None
            was = planned[address]
            if now == was:
                continue
            if was is None:
                moved.append(f"{address}: was absent, now exists")
            elif now is None:
                moved.append(f"{address}: is gone")
            else:
                keys = sorted(rt.label(k) for k in set(was) | set(now)
                              if was.get(k) != now.get(k))
                moved.append(f"{address}: {', '.join(keys)} changed")
        if moved:
            shown = moved[:20] + ([f"... and {len(moved) - 20} more"] if len(moved) > 20 else [])
            raise DiagnosticError(Diagnostic.error(
                "The world changed since the plan",
                f"{made} Since then, {len(moved)} of the objects it changes "
                f"{'was' if len(moved) == 1 else 'were'} changed outside it:\n  "
                + "\n  ".join(shown) + f"\nNothing was applied. {retry}",
            ))

    def settle(self, plan: Plan, result: ApplyResult) -> None:
        """State records what the world holds when the run ends, not what tectum asked for
        before a later change ran: on each host where a change with side effects was applied
        (a package's install scripts may chown a directory tectum just made), the objects this
        run changed are read again (one round trip per host) and their records updated.
        Hosts that cannot be read now keep the records as applied."""

        applied = set(result.applied)
        changes = [c for c in plan.changes if c.address in applied
                   and c.action not in (Action.DELETE, Action.FORGET)]
        touched = {ResourceAddress.parse(c.address).host for c in changes
                   if (rt := registry.get(c.type)) is not None and rt.side_effects}
        by_host: dict[str | None, HostBatches] = {}
        for c in changes:
            host = ResourceAddress.parse(c.address).host
            rt = registry.get(c.type)
            rec = result.state.resources.get(c.address)
            if host not in touched or rt is None or rt.side_effects or rec is None:
                continue
            add_read(by_host, host, rt, c.address, ReadItem(None, rec.attributes))
        if not by_host:
            return
        planner = Planner(self.targets, self.in_limit, parallelism=self.forks)
        for rt, address, obs in planner.read_found(by_host):
            rec = result.state.resources[address]
            if obs is None:
                continue  # (something removed it: the next plan reads it again)
            now = {k: v for k, v in rt.stored(obs).items() if k in rec.attributes}
            if any(rec.attributes.get(k) != v for k, v in now.items()):
                result.state.resources[address] = rec._replace(
                    attributes={**rec.attributes, **now})

    def refresh(self, state: State, stack: Stack | None = None,
                pending: Sequence[Intent] = ()) -> tuple[State, list[Drift]]:
        """Read every object in state (one round trip per host for the facts, up to ``forks``
        hosts at once) and return the refreshed state and what changed outside tectum since the
        last apply (Terraform's prev-run vs prior state). Objects that are gone leave state, as
        ``terraform refresh`` does. Attributes in a resource's ``ignore_changes`` (from
        ``stack``) are not reported. Hosts outside ``--limit`` are not read; hosts that are
        down are named in :attr:`hosts_down` and their records kept as they are. ``pending``:
        the intents an interrupted run left (their changes are reported as left by it)."""

        ignored: dict[str, set[str]] = {}
        if stack is not None:
            ignored = {a: set(d.ignore_changes) for a, d in stack.resources.items()}
        new = state.copy()
        drifts: list[Drift] = []
        batches: dict[str | None, HostBatches] = {}
        for rec in state.resources.values():
            host = ResourceAddress.parse(rec.address).host
            if not self.in_limit(host):
                continue
            rt = registry.get(rec.type)
            if rt is None:
                raise DiagnosticError(Diagnostic.error(
                    "Unknown resource type",
                    f"State holds {rec.address} of type {rec.type!r}, which no "
                    "provider offers.", address=rec.address))
            add_read(batches, host, rt, rec.address, ReadItem(None, rec.attributes))
        hosts = list(batches)
        left = {i.address for i in pending}
        done = Planner(self.targets, self.in_limit, parallelism=self.forks).read_hosts(batches)
        self.hosts_down = {}
        for host, (found, diags, down) in zip(hosts, done, strict=True):
            diags.raise_if_errors()
            if down is not None:
                self.hosts_down[host or LOCAL] = down
                continue
            for rt, items in batches[host]:
                for address, _ in items:
                    rec = state.resources[address]
                    obs = found.get(address)
                    if obs is None:
                        drifts.append(Drift(rec.address, rec.type, "deleted", [],
                                            address in left))
                        del new.resources[rec.address]
                        continue
                    now = rt.stored(obs)
                    changed = [
                        (k, v, now[k]) for k, v in rec.attributes.items()
                        if k in now and now[k] != v and k not in rt.unobserved
                        and k not in ignored.get(rec.address, ())
                    ]
                    if changed:
                        drifts.append(Drift(rec.address, rec.type, "changed", changed,
                                            address in left))
                    new.resources[rec.address] = rec._replace(
                        attributes={**rec.attributes, **now})
        return new, drifts

    def import_object(self, stack: Stack, state: State, address: str, ident: str) -> State:
        """Bring an existing object under management as ``address`` (declared in the stack):
        ``ident`` is its identity (a path, a package or user name). Returns the new state;
        raises :class:`DiagnosticError` when the address is unknown, already managed, or no
        such object exists."""

        decl = stack.resources.get(address)
        if decl is None:
            raise DiagnosticError(Diagnostic.error(
                "Import to an undeclared resource",
                f"{address} is not declared in the stack. Declare it first (its attributes "
                "as you want them), then import the existing object into it.",
                address=address))
        if address in state.resources:
            raise DiagnosticError(Diagnostic.error(
                "Resource already managed",
                f"{address} is already in state. Use `tectum state show {address}` to see it.",
                address=address, source=decl.source))
        rt = registry.get(decl.type)
        assert rt is not None
        host = ResourceAddress.parse(address).host
        found, diags, down = Planner(self.targets, self.in_limit).read_host(
            host, [(rt, [(address, rt.import_item(ident))])])
        if down is not None:
            raise DiagnosticError(Diagnostic.error(
                "Host not reachable", f"Host {host or LOCAL} is {down[0]}: {down[1]}. Nothing "
                "was imported; run the import again when it can be reached.", address=address))
        diags.raise_if_errors()
        obs = found.get(address)
        if obs is None or not rt.exists(obs):
            raise DiagnosticError(Diagnostic.error(
                "Cannot import non-existent object",
                f"No {decl.type} {ident!r} exists on the host, so there is nothing to import "
                f"into {address}. Check the ID, or let apply create it.",
                address=address, source=decl.source))
        assert obs is not None
        new = state.copy()
        new.resources[address] = ResourceRecord(address, decl.type, rt.stored(obs),
                                                [], str(decl.source), FOUND, decl.on_destroy,
                                                schema_version=rt.schema_version)
        return new

    def sweep_interrupted(self, pending: Sequence[Intent], warnings: Diagnostics) -> None:
        """After a killed run: each type removes what its unfinished operations left behind
        (temporary files of atomic writes), found by the journal identities of the intents
        that have no result. A target that cannot be reached keeps its leftovers until a run
        reaches it."""

        left: dict[tuple[str | None, str], list[dict[str, Any]]] = {}
        for intent in pending:
            host = ResourceAddress.parse(intent.address).host
            if self.in_limit(host):
                left.setdefault((host, intent.type), []).append(intent.identity)
        for (host, type_name), identities in left.items():
            rt = registry.get(type_name)
            if rt is None:
                continue
            try:
                rt.sweep_interrupted(self.targets.target(rt, host), identities)
            except Exception as exc:  # noqa: BLE001 - a warning: the next run tries again
                warnings.append(Diagnostic.warning(
                    "Temporary files not swept", f"On host {host or LOCAL}: {exc}."))
