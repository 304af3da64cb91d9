"""The planner: declarations + state + the world → :class:`~tectum.plans.Plan`.

1. Build the dependency graph of the declarations (references, ``depends_on``, ``restart_on``,
   and automatic ones: a path under a managed directory, an owner that is a managed user —
   Puppet's autorequire); report unknown references and cycles.
2. Resolve references and prepare desired attributes (render templates) in dependency order.
3. Refresh: read every object of a type at once (one batch per type and host).
4. Diff each resource in dependency order; mark triggered restarts; plan deletions for
   resources that left the stack (in reverse dependency order).
"""

from __future__ import annotations

import graphlib
import threading
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

from tectum.addrs import ResourceAddress
from tectum.backends.base import Intent
from tectum.config.declaration import Declaration, Stack
from tectum.config.facts import FactsUnknown
from tectum.diagnostics import Diagnostic, DiagnosticError, Diagnostics, SourceLocation
from tectum.engine.targets import Places, Targets
from tectum.graph.dag import Graph, find_cycles
from tectum.masking import REDACTOR
from tectum.plans.plan import Action, AttrChange, Plan, ResourceChange
from tectum.providers.base import ReadItem, ResourceType
from tectum.providers.registry import registry
from tectum.state.model import (
    CREATED,
    FOUND,
    OWED_KINDS,
    WATCH_KINDS,
    ResourceRecord,
    State,
)
from tectum.values import (
    SECRET_SOURCES,
    SENSITIVE_VAR,
    UNKNOWN,
    is_known,
    refs_in,
    resolve,
)

#: suffix of the read key of the object a resource managed before its identity changed
_OLD = "\x00old"


#: one host's reads: (resource type, [(address, (desired, prior))]) per type
HostBatches = list[tuple[ResourceType[Any], list[tuple[str, ReadItem]]]]
#: what reading one host gave: observed per address, diagnostics, (kind, reason) when down
HostRead = tuple[dict[str, dict[str, Any] | None], Diagnostics, tuple[str, str] | None]


class PlanResult(NamedTuple):
    plan: Plan
    graph: Graph
    diagnostics: Diagnostics


def _rtype(name: str) -> ResourceType[Any]:
    rtype = registry.get(name)
    if rtype is None:
        raise DiagnosticError(Diagnostic.error(
            "Unknown resource type", f"No provider offers resource type {name!r}."))
    return rtype


def provisioners(decls: dict[str, Declaration]) -> dict[str, str]:
    """Hosts that resources of ``decls`` provision (a container a role is applied to), and
    the address of the resource that does: ``{"podman:web1": "podman_container.web1"}``
    (:meth:`~tectum.providers.base.ResourceType.provides_host`)."""
    out: dict[str, str] = {}
    for address, decl in decls.items():
        rt = registry.get(decl.type)
        host = rt.provides_host(decl.attrs) if rt is not None else None
        if host is not None and is_known(host):
            out.setdefault(host, address)
    return out


def build_graph(stack: Stack) -> tuple[Graph, Diagnostics]:
    """The dependency graph of the declarations, with diagnostics for unknown references
    and cycles."""
    diags = Diagnostics()
    graph = Graph()
    decls = stack.resources
    # automatic dependencies (Puppet's autorequire) stay on one target: the keys objects offer
    # (a directory's path, a user's name) are indexed by (provider, target key, key)
    offered: dict[tuple[str, Hashable, Hashable], str] = {}
    place = Places(stack.inventory)
    provisioned = provisioners(decls)
    for address, decl in decls.items():
        graph.add(address)
        rt = registry.get(decl.type)
        if rt is not None:
            at = place(rt, decl.address.host)
            for key in rt.implicit_keys(decl.attrs):
                offered[(*at, key)] = address
    for address, decl in decls.items():
        targets: list[tuple[str, str]] = []
        for ref_addr, attr in sorted(refs_in(decl.attrs)):
            if ref_addr not in SECRET_SOURCES:
                targets.append((ref_addr, f"reference to {ref_addr}.{attr}"))
        for dep in decl.depends_on:
            targets.append((dep, "depends_on"))
        for key, deps in decl.watches.items():
            for dep in deps:
                targets.append((dep, key))
        for target, why in targets:
            if target == address and why != "depends_on":
                diags.append(Diagnostic.error(
                    "Self-reference", f"{address} refers to itself ({why}).",
                    address=address, source=decl.source))
                continue
            if target not in decls:
                diags.append(Diagnostic.error(
                    "Reference to undeclared resource",
                    f"{address} has a {why}, but no resource {target} is declared in this "
                    "stack. Declare it, or fix the name.",
                    address=address, source=decl.source))
                continue
            graph.connect(address, target)
        maker = provisioned.get(decl.address.host) if decl.address.host else None
        if maker is not None and maker != address and maker in decls:
            graph.connect(address, maker)  # (a container's files need the container)
        # automatic dependencies (never create a cycle: only added when the reverse is absent)
        auto: list[str] = []
        rt = registry.get(decl.type)
        if rt is not None and offered:
            at = place(rt, decl.address.host)
            for group in rt.implicit_needs(decl.attrs):
                found = next((offered[(*at, k)] for k in group if (*at, k) in offered), None)
                if found is not None:
                    auto.append(found)
        for target in auto:
            if target != address and address not in graph.ancestors_of(target):
                graph.connect(address, target)
    try:
        graph.order()
        cycles = []
    except graphlib.CycleError:
        cycles = find_cycles(graph.deps)
    for cycle in cycles:
        members = " → ".join([*cycle, cycle[0]])
        places = "; ".join(f"{m} at {decls[m].source}" for m in cycle if m in decls)
        diags.append(Diagnostic.error(
            "Dependency cycle",
            f"These resources depend on each other in a loop: {members}. ({places}.) Break the "
            "loop by removing one of the references or depends_on entries.",
            address=cycle[0],
            source=decls[cycle[0]].source if cycle[0] in decls else None,
        ))
    return graph, diags


class Resolver:
    """Resolves references and prepares the desired attributes of every declaration.

    A configured attribute of another resource is known now; a computed one comes from state
    (``computed_refs`` records who used which, so the planner can make it unknown when that
    resource changes)."""

    def __init__(self, stack: Stack, state: State,
                 secret_value: Callable[[str, str], Any] | None = None) -> None:
        self.stack = stack
        self.decls = stack.resources
        self.prior = state.resources
        #: declared moves (``moved()``): new address → the old one state holds it under, so a
        #: computed value of a moved object is known to what uses it (a subnet of a moved VPC)
        self.moved_from = {new: old for old, new, _ in stack.moves
                           if old in state.resources and new not in state.resources}
        self.desired: dict[str, dict[str, Any]] = {}
        self.computed_refs: dict[str, set[str]] = {}
        self.current = [""]
        self.secret_value = secret_value or _no_secrets(stack)

    def lookup(self, address: str, attr: str) -> Any:
        if address in SECRET_SOURCES:
            return self.secret_value(address, attr)
        rtype = _rtype(self.decls[address].type)
        spec = rtype.schema.attrs.get(attr)
        if spec is not None and spec.computed:
            self.computed_refs.setdefault(self.current[0], set()).add(address)
            value = self.desired.get(address, {}).get(attr)
            if value is not None and is_known(value):
                return value
            rec = self.prior.get(address) or self.prior.get(self.moved_from.get(address, ""))
            if rec is not None and attr in rec.attributes:
                return rec.attributes[attr]
            return UNKNOWN
        return self.desired.get(address, {}).get(attr)

    def resolve_all(self, order: list[str]) -> Diagnostics:
        """Resolve and prepare every declaration in ``order`` (dependencies first); returns
        diagnostics for bad values, templates that fail, and objects claimed twice."""
        diags = Diagnostics()
        for address in order:
            decl = self.decls[address]
            self.current[0] = address
            rtype = _rtype(decl.type)
            try:
                attrs = resolve(decl.attrs, self.lookup)
                # values that held references are checked now that they are resolved
                problems = [
                    f"Attribute {k!r}: {p}." for k, v in attrs.items()
                    if not is_known(decl.attrs[k]) and is_known(v)
                    and (spec := rtype.schema.attrs.get(k)) is not None
                    and (p := spec.check(v)) is not None
                ]
                if problems:
                    diags.append(Diagnostic.error(
                        "Invalid attribute value", " ".join(problems),
                        address=address, source=decl.source))
                    continue
                self.desired[address] = rtype.prepare(attrs, decl.base_dir)
            except (ValueError, TypeError) as exc:
                diags.append(Diagnostic.error(
                    "Invalid resource configuration", _sentence(str(exc)),
                    address=address, source=decl.source))
            except FactsUnknown as exc:
                # validate: a template that decides on a fact is checked at plan time
                diags.append(Diagnostic.warning(
                    "Decided on a fact not known yet",
                    f"Preparing this resource decides on the fact {exc.name} of "
                    f"{exc.host or 'this machine'}, which is read at plan time, not by "
                    "validate: its template was not checked. `tectum plan` checks it.",
                    address=address, source=decl.source))
        diags.extend(self.check_identities())
        return diags

    def check_identities(self) -> Diagnostics:
        """Two resources may not manage one object (a path, a package, a user)."""
        diags = Diagnostics()
        seen: dict[tuple[Any, ...], Declaration] = {}
        place = Places(self.stack.inventory)
        for address, want in self.desired.items():
            decl = self.decls[address]
            ident = _rtype(decl.type).identity(want)
            if not ident or not all(isinstance(v, int) or isinstance(v, str) and is_known(v)
                                    for v in ident):
                continue  # (an identity known only after apply, or not wholly set)
            rt = _rtype(decl.type)
            key = (*place(rt, decl.address.host), *rt.identity_key(want))
            other = seen.get(key)
            if other is None:
                seen[key] = decl
                continue
            diags.append(Diagnostic.error(
                "Object managed twice",
                f"{decl.address} and {other.address} (declared at {other.source}) both "
                f"manage {' '.join(str(v) for v in ident)}. One object can have only one "
                "resource; remove or merge one of them.",
                address=str(decl.address),
                source=decl.source,
            ))
        for address, want in self.desired.items():
            decl = self.decls[address]
            rt = _rtype(decl.type)
            whole = rt.part_of(want)
            if not whole or not all(is_known(v) for v in whole):
                continue
            other = seen.get((*place(rt, decl.address.host), *whole))
            if other is not None:
                diags.append(Diagnostic.error(
                    "Object managed twice",
                    f"{decl.address} manages a part of {' '.join(str(v) for v in whole)}, "
                    f"which {other.address} (declared at {other.source}) manages whole: each "
                    "apply would undo the other. Put the part into the whole one's content "
                    "(or template), or manage only parts of it.",
                    address=str(decl.address), source=decl.source))
        return diags


def _no_secrets(stack: Stack) -> Callable[[str, str], Any]:
    """Secret values for a plan made without a secrets file (``validate``): sensitive
    variables; a secret stays unknown."""
    def value(source: str, name: str) -> Any:
        if source == SENSITIVE_VAR and name in stack.sensitive_vars:
            return stack.sensitive_vars[name]
        return UNKNOWN  # (validate: the secrets file is not opened)
    return value


def sensitive_attrs(decl: Declaration, rt: ResourceType[Any],
                    sensitive_of: dict[str, set[str]]) -> set[str]:
    """The attributes of ``decl`` that are sensitive: declared so in the type's schema, holding
    a secret token, or referring to another resource's sensitive attribute, and what the type
    derives from those (:meth:`~tectum.providers.base.ResourceType.sensitive_derived`)."""
    out = {k for k, a in rt.schema.attrs.items() if a.sensitive}
    for key, value in decl.attrs.items():
        for address, attr in refs_in(value):
            if address in SECRET_SOURCES or attr in sensitive_of.get(address, ()):
                out.add(key)
    return out | rt.sensitive_derived(out)


def _recovery(intent: Intent | None) -> dict[str, Any] | None:
    """The journal identity of a create or replace a killed run may have done (a client
    token, a server-assigned id): it finds an object neither the desired attributes nor the
    state record can (a replace's new object, its old one's id still in state)."""
    if intent is None or intent.action not in ("create", "replace") or not intent.identity:
        return None
    return dict(intent.identity)


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else text + "."


class Planner:
    """``targets`` gives the providers' targets; ``in_limit(host)`` says whether ``--limit``
    selects a host (None: resources outside a role); ``parallelism``: hosts read at once."""

    def __init__(self, targets: Targets,
                 in_limit: Callable[[str | None], bool] = lambda host: True,
                 parallelism: int = 50,
                 secret_value: Callable[[str, str], str] | None = None) -> None:
        self.targets = targets
        self.in_limit = in_limit
        self.parallelism = parallelism
        self.secret_value = secret_value
        #: what reads found missing for a desired object: address -> [(key, sentence)]
        #: (:meth:`~tectum.providers.base.ResourceType.missing`)
        self.missing: dict[str, list[tuple[Hashable | None, str]]] = {}
        self._missing_lock = threading.Lock()

    def plan(self, stack: Stack, state: State, *, destroy: bool = False,
             workspace: str = "default", pending: Sequence[Intent] = (),
             refresh: bool = True, limit: Sequence[str] | None = None,
             targets: Sequence[str] | None = None, replace: Sequence[str] = ()
             ) -> PlanResult:
        """Make the plan. ``pending``: intents an interrupted run left without a result — their
        objects are read like any other and adopted (in the configuration) or planned for
        removal (not in it). Resources on hosts outside the limit, or on hosts that cannot be
        reached, are left out (their state stays). ``targets`` (Terraform's ``-target``): only
        those resources and what they depend on are planned (destroying: those and what
        depends on them); the rest keep their state. ``replace`` (Terraform's ``-replace``):
        those objects are replaced even when they match. Raises :class:`DiagnosticError` for
        configuration errors and for a target or replace address that is neither declared nor
        in state."""
        graph, diags = build_graph(stack)
        for address, decl in stack.resources.items():
            rt = registry.get(decl.type)
            for title, detail in rt.check_declared(decl.attrs) if rt is not None else ():
                diags.append(Diagnostic.error(title, detail, address=address,
                                              source=decl.source))
        diags.raise_if_errors()
        for recorded in state.resources.values():
            if not recorded.schema_version:
                continue  # (version 0: no provider is older than that)
            known = registry.get(recorded.type)
            if known is not None and recorded.schema_version > known.schema_version:
                # OpenTofu refuses state a newer provider wrote: this one cannot read it right
                diags.append(Diagnostic.error(
                    "Resource state from a newer provider",
                    f"State records {recorded.address} in schema version "
                    f"{recorded.schema_version} of resource type {recorded.type!r}, but the "
                    f"installed provider knows only up to version {known.schema_version}. "
                    "Upgrade the provider (the tectum that wrote this state was newer).",
                    address=recorded.address))
        diags.raise_if_errors()
        decls = stack.resources
        order = graph.order()
        prior_records = dict(state.resources)
        interrupted: dict[str, Intent] = {i.address: i for i in pending}
        for left in pending:
            if left.address not in prior_records and (destroy or left.address not in decls):
                # the interrupted run may have made this object: find it by its identity
                prior_records[left.address] = ResourceRecord(
                    left.address, left.type, dict(left.identity))

        # 2. resolve and prepare desired attributes
        resolver = Resolver(stack, state, self.secret_value)
        if not destroy:
            diags.extend(resolver.resolve_all(order))
            diags.raise_if_errors()
        desired = {a: w for a, w in resolver.desired.items()
                   if self.in_limit(decls[a].address.host)}
        computed_refs = resolver.computed_refs
        lookup_config = resolver.lookup
        current = resolver.current

        # orphans: in state, not in the stack (or everything when destroying)
        orphans = [a for a in prior_records if (destroy or a not in decls)
                   and self.in_limit(ResourceAddress.parse(a).host)]
        moved: dict[str, str] = {}  # new address -> old address (same object, renamed)
        if not destroy:
            # declared moves first (Terraform's moved blocks), then same identity, new name
            for old_addr, new_addr, where in stack.moves:
                problem = None
                if new_addr not in decls:
                    problem = f"{new_addr} is not declared in this stack"
                elif old_addr in decls:
                    problem = f"{old_addr} is still declared in this stack"
                elif old_addr in prior_records and new_addr in prior_records:
                    problem = (f"state holds both {old_addr} and {new_addr}; remove one "
                               f"(`tectum state rm`)")
                elif ResourceAddress.parse(old_addr).host != decls[new_addr].address.host:
                    problem = ("an object stays on its host: declare the new one and remove "
                               "the old one instead")
                elif old_addr in prior_records \
                        and prior_records[old_addr].type != decls[new_addr].type:
                    problem = (f"{old_addr} is a {prior_records[old_addr].type}, "
                               f"{new_addr} a {decls[new_addr].type}")
                if problem is not None:
                    diags.append(Diagnostic.error(
                        "Invalid moved declaration",
                        f"moved({old_addr!r}, {new_addr}): {problem}.", address=new_addr,
                        source=where))
                elif old_addr in prior_records and old_addr in orphans \
                        and new_addr in desired:
                    moved[new_addr] = old_addr
            diags.raise_if_errors()
            orphans = [a for a in orphans if a not in moved.values()]
            by_ident: dict[tuple[Any, ...], str] = {}
            for a in orphans:
                old = prior_records[a]
                rt = registry.get(old.type)
                if rt is not None:
                    host = ResourceAddress.parse(a).host
                    by_ident[(old.type, host, *rt.identity(old.attributes))] = a
            for address, want in desired.items():
                if address in prior_records or address in moved:
                    continue
                decl = decls[address]
                if not _rtype(decl.type).moves_by_identity:
                    continue
                ident_key = (decl.type, decl.address.host, *_rtype(decl.type).identity(want))
                if ident_key in by_ident:
                    moved[address] = by_ident.pop(ident_key)
            orphans = [a for a in orphans if a not in moved.values()]
        for flag, given in (("-target", targets or ()), ("-replace", replace)):
            unknown = [a for a in given if a not in decls and a not in prior_records]
            if unknown:
                raise DiagnosticError(Diagnostic.error(
                    "Resource not found",
                    f"{flag} {unknown[0]}: no such resource is declared or in state. "
                    "`tectum state list` shows what state holds.", address=unknown[0]))
        for address in replace:
            kind = decls[address].type if address in decls else prior_records[address].type
            why = _rtype(kind).replace_refused
            if why:
                raise DiagnosticError(Diagnostic.error(
                    "Cannot replace", f"-replace {address}: {why}", address=address))
        if targets is not None:
            chosen = _targeted(targets, graph, prior_records, destroy, decls)
            if not destroy:
                # a container targeted may be made anew: what a role put in it comes along
                hosts_made = {h for h, a in provisioners(decls).items() if a in chosen}
                chosen |= {a for a, d in decls.items() if d.address.host in hosts_made}
            desired = {a: w for a, w in desired.items() if a in chosen}
            orphans = [a for a in orphans if a in chosen]

        # 3. refresh: one read per (host, type), of (desired, prior) pairs
        # a resource whose identity (a path, a name) changed: its old object is read too, to
        # be replaced (deleted) rather than left behind (Terraform's force_new)
        reidentified: set[str] = set()
        for address, want in desired.items():
            # (a declared move may change the identity too: the old object is then replaced)
            rec = prior_records.get(moved.get(address, address))
            decl = decls[address]
            if rec is None or rec.type != decl.type:
                continue
            rt = _rtype(decl.type)
            new_ident, old_ident = rt.identity(want), rt.identity(rec.attributes)
            if all(is_known(v) for v in (*new_ident, *old_ident)) and new_ident != old_ident:
                reidentified.add(address)
        # hosts that resources provision (containers): their objects are not read when the
        # provisioner is new or goes (nothing there yet / everything goes with it)
        provisioned = provisioners(decls)
        for address, rec in prior_records.items():
            rt_rec = registry.get(rec.type)
            made_host = rt_rec.provides_host(rec.attributes) if rt_rec is not None else None
            if made_host is not None and made_host not in provisioned:
                provisioned[made_host] = address
        orphan_set_early = set(orphans)

        def goes(p: str) -> bool:
            """``p`` is deleted by this plan (not only forgotten)."""
            rec_p = prior_records.get(p)
            rt_p = registry.get(rec_p.type) if rec_p is not None else None
            return p in orphan_set_early and rec_p is not None and rec_p.deletes_on_destroy \
                and rt_p is not None and rt_p.deletable

        unread: set[str] = {h for h, p in provisioned.items()
                            if goes(p) or (p in desired and p not in prior_records
                                           and p not in moved)}
        batches: dict[tuple[str | None, str], list[tuple[str, ReadItem]]] = {}
        for address, want in desired.items():
            decl = decls[address]
            rt = _rtype(decl.type)
            if all(is_known(v) for v in rt.identity(want)):
                rec = prior_records.get(moved.get(address, address))
                prior = rec.attributes if rec is not None and address not in reidentified \
                    and rec.type == decl.type else None
                batches.setdefault((decl.address.host, decl.type), []).append(
                    (address, ReadItem(want, prior, _recovery(interrupted.get(address)))))
        for address in orphans:
            gone = prior_records[address]
            host = ResourceAddress.parse(address).host
            batches.setdefault((host, gone.type), []).append(
                (address, ReadItem(None, gone.attributes,
                                   _recovery(interrupted.get(address)))))
        for address in sorted(reidentified):
            rec = prior_records[moved.get(address, address)]
            batches.setdefault((decls[address].address.host, rec.type), []).append(
                (address + _OLD, ReadItem(None, rec.attributes)))
        observed: dict[str, dict[str, Any] | None] = {}
        if not refresh:
            # -refresh=false: trust state as the world (Terraform's flag), read nothing
            for items in batches.values():
                for address, _ in items:
                    base = address.removesuffix(_OLD)
                    rec = prior_records.get(moved.get(base, base))
                    if address.endswith(_OLD):
                        observed[address] = dict(rec.attributes) if rec is not None else None
                    elif address in reidentified:
                        observed[address] = None
                    else:
                        observed[address] = dict(rec.attributes) if rec is not None else None
            batches = {}
        batches = {k: v for k, v in batches.items() if k[0] not in unread}
        hosts_down: dict[str, tuple[str, str]] = {}
        #: provisioned hosts that could not be read: left out unless their provisioner is
        #: created or replaced by this plan (then everything on them is made anew)
        provisioned_down: dict[str, tuple[str, str]] = {}
        by_host: dict[str | None, HostBatches] = {}
        for (host, type_name), items in batches.items():
            rt = registry.get(type_name)
            if rt is None:
                diags.append(Diagnostic.error(
                    "Unknown resource type",
                    f"State holds {items[0][0]} of type {type_name!r}, which no provider "
                    "offers any more. Install the provider, or remove it from state.",
                    address=items[0][0]))
                continue
            by_host.setdefault(host, []).append((rt, items))
        if by_host:
            done = self.read_hosts(by_host)
            for host, (found, host_diags, down) in zip(by_host, done, strict=True):
                observed.update(found)
                diags.extend(host_diags)
                if down is not None and host is None:
                    # (a provider's server outside any role: an API, a database, a key-value
                    # store. Unread, its objects would look absent and be planned anew)
                    diags.append(Diagnostic.error(
                        "Cannot reach a provider's server",
                        f"{down[1].rstrip('.')}. Nothing was planned: the objects there "
                        "could not be read. Check the provider's settings in tectum.toml and "
                        "that the server runs, then plan again."))
                elif down is not None and host is not None:
                    if host in provisioned and provisioned[host] in decls:
                        provisioned_down[host] = down
                    else:
                        hosts_down[host] = down
        if hosts_down:
            # not planned: their objects could not be read; state keeps what it knows
            desired = {a: w for a, w in desired.items()
                       if decls[a].address.host not in hosts_down}
            orphans = [a for a in orphans if ResourceAddress.parse(a).host not in hosts_down]
        if stack.incomplete_hosts:
            # a role stopped at a fact that cannot be read: what it would have declared
            # after it is unknown, so nothing of that host is taken for removed
            orphans = [a for a in orphans
                       if ResourceAddress.parse(a).host not in stack.incomplete_hosts]
        diags.raise_if_errors()

        # 4. diff in dependency order
        changes: dict[str, ResourceChange] = {}
        sensitive_of: dict[str, set[str]] = {}
        for address in order:
            decl = decls[address]
            sensitive_of[address] = sensitive_attrs(decl, _rtype(decl.type), sensitive_of)
        if not destroy:
            for address in order:
                if address not in desired:
                    continue  # outside --limit, or on a host that is down
                decl = decls[address]
                rt = _rtype(decl.type)
                want = desired[address]
                on_host = decl.address.host
                maker = provisioned.get(on_host) if on_host else None
                anew = False
                if maker is not None and on_host is not None:
                    made = changes.get(maker)
                    anew = on_host in unread or (made is not None and made.action in (
                        Action.CREATE, Action.REPLACE))
                    if anew:
                        # a new container: nothing of it is there until it is made
                        observed[address] = None
                        observed.pop(address + _OLD, None)
                        reidentified.discard(address)
                    elif on_host in provisioned_down:
                        hosts_down[on_host] = provisioned_down[on_host]
                        continue
                uses = computed_refs.get(address, set())
                if any(changes[u].action is not Action.NOOP for u in uses if u in changes):
                    # a computed value it uses will change: unknown until apply
                    def lookup_apply(a: str, attr: str, _uses: set[str] = uses) -> Any:
                        spec = _rtype(decls[a].type).schema.attrs.get(attr)
                        if spec is not None and spec.computed and a in _uses \
                                and a in changes and changes[a].action is not Action.NOOP \
                                and not (changes[a].action is Action.UPDATE and attr
                                         in _rtype(decls[a].type).kept_on_update):
                            return UNKNOWN
                        return lookup_config(a, attr)
                    current[0] = address
                    try:
                        want = rt.prepare(resolve(decl.attrs, lookup_apply), decl.base_dir)
                    except (ValueError, TypeError) as exc:
                        diags.append(Diagnostic.error(
                            "Invalid resource configuration", _sentence(str(exc)),
                            address=address, source=decl.source))
                        continue
                    desired[address] = want
                prior_addr = moved.get(address, address)
                rec = prior_records.get(prior_addr)
                prior = rec.attributes if rec is not None else None
                obs = observed.get(address)
                old_obs = observed.get(address + _OLD) if address in reidentified else None
                left_in_place = old_obs is not None and rec is not None \
                    and not rec.deletes_on_destroy
                if left_in_place:
                    # the old object was there before tectum: it is forgotten, not deleted
                    old_obs = None
                    prior = None
                if old_obs is not None:
                    # its identity changed and the old object is still there: replace it
                    action = Action.REPLACE
                    ident_keys = set(rt.schema.identity)
                    attr_changes = [
                        AttrChange(k, old_obs.get(k), want.get(k), force_new=True,
                                   sensitive=rt.schema.attrs[k].sensitive)
                        for k in rt.schema.identity if old_obs.get(k) != want.get(k)
                    ] + [c for c in rt.diff(want, old_obs) if c.name not in ident_keys]
                else:
                    action, attr_changes = rt.plan(want, obs, prior)
                if decl.ignore_changes and action in (Action.UPDATE, Action.REPLACE):
                    attr_changes = [c for c in attr_changes if c.name not in decl.ignore_changes]
                    if not attr_changes:
                        action = Action.NOOP
                    elif not any(c.force_new for c in attr_changes):
                        action = Action.UPDATE
                forced = address in replace and obs is not None \
                    and action in (Action.NOOP, Action.UPDATE)
                if forced:
                    action = Action.REPLACE  # (-replace: made anew though it matches)
                hidden = sensitive_of.get(address, set())
                for value in rt.masked_values(want, hidden):
                    # (the digest of a secret-bearing file would let anyone test guesses)
                    REDACTOR.add(value)
                if hidden:
                    attr_changes = [c._replace(sensitive=True) if c.name in hidden else c
                                    for c in attr_changes]
                seen: dict[str, Any] | None
                if old_obs is not None:
                    seen = rt.stored(old_obs)
                else:
                    seen = rt.stored(obs) if obs is not None else None
                intent = interrupted.get(address)
                if forced and rec is not None:
                    origin = rec.origin  # (made anew as asked: who made it first stays)
                elif action in (Action.CREATE, Action.REPLACE):
                    origin = CREATED
                elif rec is not None:
                    origin = rec.origin
                elif intent is not None and intent.action in ("create", "replace"):
                    origin = CREATED  # made by the interrupted run
                else:
                    origin = CREATED if rt.takes_over_as_created(seen, want) else FOUND
                change = ResourceChange(
                    address=address,
                    type=decl.type,
                    action=action,
                    before=seen,
                    after=want,
                    changes=attr_changes,
                    dependencies=sorted(graph.deps.get(address, ())),
                    prior=prior,
                    source=str(decl.source),
                    watches=decl.watches,
                    origin=origin,
                    on_destroy=decl.on_destroy,
                    moved_from=prior_addr if prior_addr != address else None,
                )
                if obs is not None and old_obs is None:
                    change.display.update(rt.display(obs))
                drift: list[str] = []
                if prior is not None and seen is not None:
                    drift = [d for d in _drift(rt, prior, seen, want)
                             if d not in decl.ignore_changes]
                elif prior is not None and obs is None and prior_addr == address:
                    drift = ["deleted"]
                if address in reidentified and old_obs is None and not left_in_place:
                    drift = ["deleted"]  # the object at its old identity is gone
                if anew:
                    drift = []  # (its container is new: nothing of it was changed by hand)
                    if rec is not None:
                        change.note = f"made anew in the new {maker}"
                if intent is not None and rec is not None:
                    # the interrupted run's own changes: not made by hand
                    change.interrupted = drift
                else:
                    change.drift = drift
                if forced:
                    change.note = "replaced as requested (-replace)"
                elif old_obs is not None:
                    keys = ", ".join(c.name for c in attr_changes if c.force_new)
                    change.note = (f"{keys} changed: the object at the old {keys} is deleted "
                                   "and a new one created")
                elif left_in_place and rec is not None:
                    change.note = (f"it now manages {rt.describe(want)}; "
                                   f"{rt.describe(rec.attributes)} was there before tectum, so "
                                   "it is left in place and forgotten")
                if rec is not None and action is Action.NOOP and prior_addr == address \
                        and rec.on_destroy != decl.on_destroy:
                    change.restate = (f"on_destroy: {rec.on_destroy or 'default'} → "
                                      f"{decl.on_destroy or 'default'}")
                for watch, kind in WATCH_KINDS.items():
                    fired = [d for d in decl.watches.get(watch, ())
                             if d in changes and changes[d].action is not Action.NOOP]
                    if fired and change.triggered is None and change.action in (
                            Action.NOOP, Action.UPDATE, Action.CREATE):
                        change.triggers = fired
                        change.triggered = kind
                        if change.action is Action.NOOP:
                            change.action = Action.UPDATE
                owed = rec.owed if rec is not None else ()
                if owed and change.action in (Action.NOOP, Action.UPDATE, Action.CREATE):
                    # a restart an earlier run owed (its trigger changed, then the run failed
                    # or was killed before the restart): it runs now
                    kind = next(k for k in OWED_KINDS if any(o[0] == k for o in owed))
                    causes = [c for _, c in owed]
                    if change.triggered is None or (kind == "restart"
                                                    and change.triggered == "reload"):
                        change.triggered = kind
                    change.triggers = sorted(set(change.triggers) | set(causes))
                    change.owed = list(owed)
                    if change.action is Action.NOOP:
                        change.action = Action.UPDATE
                changes[address] = change

        # deletions, in reverse dependency order: recorded dependencies, and objects inside a
        # directory before the directory (also for records rebuilt from a killed run's journal,
        # which have no recorded dependencies)
        orphan_set = set(orphans)
        inside = _contained(stack, {a: prior_records[a] for a in orphans})
        for address in orphans:
            orphan = prior_records[address]
            obs = observed.get(address)
            rt = registry.get(orphan.type)
            on_host = ResourceAddress.parse(address).host
            maker = provisioned.get(on_host) if on_host else None
            if maker is not None and on_host is not None and on_host in provisioned_down \
                    and on_host not in unread and not (
                        maker in changes and changes[maker].action in (Action.CREATE,
                                                                        Action.REPLACE)):
                # its container could not be read (stopped): left in state for a later run
                hosts_down[on_host] = provisioned_down[on_host]
                continue
            if maker is not None and (on_host in unread or (
                    maker in changes and changes[maker].action in (Action.CREATE,
                                                                    Action.REPLACE))):
                # its container goes (or is made anew): the object goes with it
                changes[address] = ResourceChange(
                    address=address, type=orphan.type, action=Action.FORGET, before=None,
                    after=None, prior=orphan.attributes, source=orphan.source,
                    origin=orphan.origin, on_destroy=orphan.on_destroy,
                    note=f"goes with {maker}: only removed from state")
                continue
            dependents = sorted(
                a for a in orphan_set
                if (address in prior_records[a].dependencies or a in inside.get(address, ()))
                and a != address)
            forget = not orphan.deletes_on_destroy or (rt is not None and not rt.deletable)
            change = ResourceChange(
                address=address,
                type=orphan.type,
                action=Action.FORGET if forget else Action.DELETE,
                before=rt.stored(obs) if rt is not None and obs is not None else None,
                after=None,
                dependencies=dependents,
                prior=orphan.attributes,
                source=orphan.source,
                origin=orphan.origin,
                on_destroy=orphan.on_destroy,
            )
            if rt is not None and not rt.deletable:
                if address in interrupted and address not in state.resources and obs is None:
                    continue  # the interrupted run never ran it: nothing to forget
                change.action = Action.FORGET
                change.note = f"what a {orphan.type} did is not undone: it is only forgotten"
            elif address in interrupted and address not in state.resources:
                if obs is None:
                    continue  # the interrupted run never made it: nothing to clean up
                change.note = (f"left by an interrupted run ({interrupted[address].action}); "
                               "not in the configuration, so it is removed")
            elif obs is None:
                change.action = Action.DELETE
                change.note = "already gone; only removed from state"
            elif forget:
                change.note = ("it was there before tectum managed it, so it is left as it is "
                               "and only forgotten"
                               if orphan.on_destroy is None else "on_destroy = \"forget\"")
            elif rt is not None:
                change.note = rt.delete_summary(orphan.attributes)
            changes[address] = change

        # outputs
        outputs: dict[str, Any] = {}
        sensitive: dict[str, bool] = {}
        if not destroy:
            for name, out in stack.outputs.items():
                outputs[name] = resolve(out.value, _final_lookup(changes, resolver.lookup))
                sensitive[name] = out.sensitive or any(
                    a in SECRET_SOURCES or attr in sensitive_of.get(a, ())
                    for a, attr in refs_in(out.value))
            missing = [
                (name, ref) for name, out in stack.outputs.items()
                for ref, _ in refs_in(out.value) if ref not in decls and ref not in SECRET_SOURCES
            ]
            for name, ref in missing:
                diags.append(Diagnostic.error(
                    "Reference to undeclared resource",
                    f"Output {name!r} refers to {ref}, which is not declared in this stack.",
                    source=stack.outputs[name].source))
            diags.raise_if_errors()
        for address, intent in interrupted.items():
            pending_change = changes.get(address)
            if pending_change is None or pending_change.note is not None \
                    or address not in decls or pending_change.action is Action.CREATE:
                continue  # (a create still to do: the interrupted run never made it)
            if pending_change.state_only:
                pending_change.note = ("adopted: made by an interrupted run, matches the "
                                       "configuration")
            elif pending_change.action is not Action.NOOP:
                what = (f": it left {', '.join(pending_change.interrupted)} changed"
                        if pending_change.interrupted else "")
                pending_change.note = (f"an interrupted run was doing {intent.action}{what}; "
                                       "planned from what is there now")
            elif pending_change.interrupted:
                # the interrupted run finished this change but did not record it
                pending_change.restate = (
                    f"an interrupted run changed {', '.join(pending_change.interrupted)} as "
                    "the configuration asks; recorded in state")
        if not destroy:
            diags.extend(self._report_missing(stack, graph, desired, changes))
            diags.raise_if_errors()
        # (destroying, every change is a deletion of an orphan: listed once)
        ordered = ([] if destroy else [changes[a] for a in order if a in changes]) + \
            [changes[a] for a in orphans if a in changes]
        plan = Plan(changes=ordered, outputs=outputs, output_sensitive=sensitive,
                    lineage=state.lineage, serial=state.serial, destroy=destroy,
                    workspace=workspace,
                    variables={k: v for k, v in stack.values.items()})
        plan.hosts_down = hosts_down
        plan.limit = list(limit) if limit is not None else None
        return PlanResult(plan, graph, diags)

    def _report_missing(self, stack: Stack, graph: Graph, desired: dict[str, Any],
                        changes: dict[str, ResourceChange]) -> Diagnostics:
        """Errors for what reads found missing on a host (an owner that is no user there, an
        unknown package or service), unless the plan may bring it: a resource declared on
        the same target offers its key, or something the resource depends on changes in this
        plan (a command that adds the user, a package whose install script does)."""
        diags = Diagnostics()
        if not self.missing:
            return diags
        decls = stack.resources
        place = Places(stack.inventory)
        offered: set[tuple[Hashable, ...]] = set()
        for decl in decls.values():
            rt = registry.get(decl.type)
            if rt is not None:
                at = place(rt, decl.address.host)
                offered.update((*at, k) for k in rt.implicit_keys(decl.attrs))
        for address, needs in sorted(self.missing.items()):
            if address not in desired or address not in decls:
                continue
            mine = decls[address]
            at = place(_rtype(mine.type), mine.address.host)
            changing = None
            for key, sentence in needs:
                if key is not None and (*at, key) in offered:
                    continue
                if changing is None:
                    changing = any(changes[d].action is not Action.NOOP
                                   for d in graph.ancestors_of(address) if d in changes)
                if changing:
                    continue  # (a package's postinst, a command may bring it)
                diags.append(Diagnostic.error(
                    "Missing on the host", f"{_sentence(sentence)} No resource of this stack "
                    "declares it, and nothing this one depends on changes in this plan: "
                    "declare it, make this resource depend on what brings it, or fix the name.",
                    address=address, source=mine.source))
        return diags

    def read_found(self, by_host: dict[str | None, HostBatches]
                   ) -> Iterator[tuple[ResourceType[Any], str, dict[str, Any] | None]]:
        """:meth:`read_hosts`, then ``(type, address, observed or None)`` for each object on
        the hosts that answered; objects whose read failed are left out."""
        for (_host, batches), (found, _diags, down) in zip(
                by_host.items(), self.read_hosts(by_host), strict=True):
            if down is not None:
                continue
            for rt, items in batches:
                for address, _ in items:
                    if address in found:
                        yield rt, address, found[address]

    def read_hosts(self, by_host: dict[str | None, HostBatches]) -> list[HostRead]:
        """:meth:`read_host` for every host of ``by_host``, up to ``parallelism`` at once;
        results in ``by_host``'s order."""
        workers = max(1, min(self.parallelism, len(by_host)))
        if workers == 1:
            return [self.read_host(h, t) for h, t in by_host.items()]
        with ThreadPoolExecutor(workers, thread_name_prefix="tectum-read") as pool:
            return list(pool.map(lambda kv: self.read_host(*kv), by_host.items()))

    def read_host(self, host: str | None, batches: HostBatches) -> HostRead:
        """Read every object on one host, provider by provider: the provider first fetches
        what all the reads of its target need, in one round trip where it can
        (:meth:`~tectum.providers.base.Provider.begin_read`), then each type's read is
        answered from that. Returns what was observed per address, diagnostics, and ``(kind,
        reason)`` when the host is down (unreachable, or its key or login refused)."""
        observed: dict[str, dict[str, Any] | None] = {}
        diags = Diagnostics()
        by_provider: dict[str, HostBatches] = {}
        for rt, items in batches:
            by_provider.setdefault(registry.provider_of(rt.name) or rt.name, []).append(
                (rt, items))
        for name, mine in by_provider.items():
            provider = self.targets.provider(name)
            target = provider.target(host)
            try:
                try:
                    provider.begin_read(target, [(rt, [i for _, i in items])
                                                 for rt, items in mine])
                except Exception:  # noqa: BLE001 - reported below, or by the reads
                    down = provider.down(target)
                    if down is not None:
                        return {}, Diagnostics(), down
                for rt, items in mine:
                    try:
                        found = rt.read(target, [item for _, item in items])
                    except Exception as exc:  # noqa: BLE001 - a failed read is a diagnostic
                        down = provider.down(target)
                        if down is not None:
                            return {}, Diagnostics(), down
                        diags.append(Diagnostic.error(
                            "Cannot read objects",
                            f"Reading the {rt.name} objects "
                            f"({', '.join(a for a, _ in items[:5])}"
                            f"{'...' if len(items) > 5 else ''}) failed: {exc}.",
                            address=items[0][0]))
                        continue
                    try:
                        needs = rt.missing(target, [item for _, item in items])
                    except Exception:  # noqa: BLE001 - not knowing is not an error here
                        needs = []
                    with self._missing_lock:
                        for (address, _), need in zip(items, needs, strict=False):
                            if need:
                                self.missing[address] = list(need)
                    for (address, _), obs in zip(items, found, strict=True):
                        observed[address] = obs
                        if obs is not None and REDACTOR:
                            # an object found holding a secret: what would reveal it (a
                            # file's digest) is masked and sealed too
                            for value in rt.masked_observed(obs, REDACTOR.holds_secret):
                                REDACTOR.add(value)
            finally:
                provider.end_read(target)
        return observed, diags, None


def _targeted(targets: Sequence[str], graph: Graph, records: dict[str, ResourceRecord],
              destroy: bool, decls: dict[str, Declaration]) -> set[str]:
    """What ``-target`` selects: the targets and everything they depend on (in the
    configuration, else as state recorded it); destroying, the targets and everything that
    depends on them (Terraform's rule: targeting never leaves a dependent without what it
    needs). A resource that watches a selected one (a service's ``restart_on``, a command's
    ``run_on``) is selected too, with what it depends on, so a change never loses the restart
    or run it causes."""
    deps: dict[str, set[str]] = {a: set(r.dependencies) for a, r in records.items()}
    for node, on in graph.deps.items():
        deps.setdefault(node, set()).update(on)
    if destroy:
        dependents: dict[str, set[str]] = {}
        for node, on in deps.items():
            for d in on:
                dependents.setdefault(d, set()).add(node)
        deps = dependents
    watchers: dict[str, set[str]] = {}
    if not destroy:
        for address, decl in decls.items():
            for watched in decl.watches.values():
                for w in watched:
                    watchers.setdefault(w, set()).add(address)
    chosen: set[str] = set()
    todo = list(targets)
    while todo:
        node = todo.pop()
        if node not in chosen:
            chosen.add(node)
            todo.extend(deps.get(node, ()))
            todo.extend(watchers.get(node, ()))
    return chosen


def _contained(stack: Stack, records: dict[str, ResourceRecord]) -> dict[str, set[str]]:
    """For each record among ``records`` that offers implicit keys (a directory its path),
    the records on the same target that need one of them (paths inside it): deleted before
    it, so a directory is deleted last (its delete removes whatever else is left in it)."""
    offered: dict[tuple[str, Hashable, Hashable], str] = {}
    placed: dict[str, tuple[ResourceType[Any], tuple[str, Hashable]]] = {}
    place = Places(stack.inventory)
    for address, rec in records.items():
        rt = registry.get(rec.type)
        if rt is None:
            continue
        at = place(rt, ResourceAddress.parse(address).host)
        placed[address] = (rt, at)
        for key in rt.implicit_keys(rec.attributes):
            offered[(*at, key)] = address
    out: dict[str, set[str]] = {}
    if not offered:
        return out
    for address, (rt, at) in placed.items():
        for group in rt.implicit_needs(records[address].attributes):
            for key in group:
                found = offered.get((*at, key))
                if found is not None and found != address:
                    out.setdefault(found, set()).add(address)
    return out


def add_read(by_host: dict[str | None, HostBatches], host: str | None, rt: ResourceType[Any],
             address: str, item: ReadItem) -> None:
    """Queue the object ``item`` of ``address`` for :meth:`Planner.read_hosts` (grouped by
    host, then by type)."""
    batches = by_host.setdefault(host, [])
    items = next((i for t, i in batches if t is rt), None)
    if items is None:
        items = []
        batches.append((rt, items))
    items.append((address, item))


def _drift(rt: ResourceType[Any], prior: dict[str, Any], now: dict[str, Any],
           desired: dict[str, Any]) -> list[str]:
    """Attributes the configuration manages (or the type's ``drift_attrs``) whose value
    changed since the last apply."""
    out = []
    for key, was in prior.items():
        if key in now and now[key] != was and key in rt.schema.attrs \
                and key not in rt.unobserved \
                and (desired.get(key) is not None or key in rt.drift_attrs):
            out.append(rt.label(key))
    return out


def _final_lookup(changes: dict[str, ResourceChange],
                  secrets: Callable[[str, str], Any]) -> Callable[[str, str], Any]:
    def lookup(address: str, attr: str) -> Any:
        if address in SECRET_SOURCES:
            return secrets(address, attr)
        change = changes.get(address)
        if change is None or change.after is None:
            return UNKNOWN
        value = change.after.get(attr)
        if value is None and change.action is Action.NOOP and change.before is not None:
            value = change.before.get(attr)
        if value is None or not is_known(value):
            return UNKNOWN
        return value
    return lookup


def source_of(text: str | None) -> SourceLocation | None:
    if not text:
        return None
    name, _, line = text.rpartition(":")
    return SourceLocation(name, int(line)) if line.isdigit() else SourceLocation(text)
