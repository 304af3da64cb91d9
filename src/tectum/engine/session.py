"""One command's session on a project: evaluate, lock, plan, apply, store state.

This is the Python API the CLI calls (DESIGN decision 8: everything the CLI does is a call here).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

from tectum.backends.base import Intent, StateBackend
from tectum.backends.sqlite import SQLiteBackend
from tectum.config.declaration import Stack, VarInput
from tectum.config.inventory import LOCAL, Inventory, load_inventory
from tectum.config.project import Project, load_project, read_var_file
from tectum.config.stack import evaluate
from tectum.diagnostics import Diagnostic, DiagnosticError, Diagnostics, SourceLocation
from tectum.engine.applier import (
    ApplyResult,
    Event,
    HostEvent,
    apply_plan,
    host_of,
    serial_batches,
)
from tectum.engine.planner import Planner, PlanResult, add_read
from tectum.masking import REDACTOR
from tectum.plans.plan import Action, Plan
from tectum.providers.host.connector import Connector, LocalConnector
from tectum.state.model import FOUND, ResourceRecord, State


class Drift(NamedTuple):
    """An object changed outside tectum: ``status`` is ``changed`` (with ``attributes`` as
    (name, recorded, found)) or ``deleted``. ``interrupted``: the change was left by a run
    that was interrupted before it recorded it (tectum's own change, not a hand edit)."""

    address: str
    type: str
    status: str
    attributes: list[tuple[str, Any, Any]]
    interrupted: bool = False


WORKSPACE_FILE = "workspace"


class SealingBackend:
    """A state backend whose documents never hold a secret in plaintext: strings holding a
    registered secret are sealed (age-encrypted, :mod:`tectum.secrets.seal`) on the way in —
    state versions, the desired state kept with them, journal records — and unsealed on the way
    out of :meth:`read`. Everything else is the wrapped backend's."""

    def __init__(self, inner: StateBackend, sealer: Any) -> None:
        self._inner = inner
        self._sealer = sealer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _seal_state(self, state: State) -> State:
        if not REDACTOR:
            return state
        out = state.copy()
        out.resources = {a: r._replace(attributes=self._sealer.seal(r.attributes))
                         for a, r in state.resources.items()}
        out.outputs = self._sealer.seal(state.outputs)
        return out

    def read(self) -> State:
        state = self._inner.read()
        from tectum.secrets.seal import has_sealed

        if any(has_sealed(r.attributes) for r in state.resources.values()) \
                or has_sealed(state.outputs):
            state.resources = {a: r._replace(attributes=self._sealer.unseal(r.attributes))
                               for a, r in state.resources.items()}
            state.outputs = self._sealer.unseal(state.outputs)
        return state

    def write(self, state: State, operation: str, *, revision: str | None = None,
              desired: dict[str, Any] | None = None) -> int:
        return self._inner.write(self._seal_state(state), operation, revision=revision,
                                 desired=self._sealer.seal(desired) if desired else desired)

    def record(self, base_serial: int, entries: Sequence[Any]) -> None:
        if REDACTOR:
            entries = [(a, act, rec._replace(attributes=self._sealer.seal(rec.attributes))
                        if rec is not None else None) for a, act, rec in entries]
        self._inner.record(base_serial, entries)


def current_workspace(project: Project) -> str:
    """``TECTUM_WORKSPACE``, else the one selected with ``tectum workspace select`` (kept in
    ``.tectum/workspace``, as Terraform keeps ``.terraform/environment``), else ``default``."""
    env = os.environ.get("TECTUM_WORKSPACE")
    if env:
        return env
    try:
        with open(os.path.join(project.data_dir, WORKSPACE_FILE), encoding="utf-8") as fh:
            return fh.read().strip() or "default"
    except OSError:
        return "default"


def intents_of(plan: Plan) -> list[Intent]:
    """One intent per change that mutates, with the attributes that find its object."""
    from tectum.providers.registry import registry

    out = []
    for c in plan.changes:
        if c.action in (Action.NOOP, Action.FORGET):
            continue  # (forgetting changes no object: nothing to find after a crash)
        rt = registry.get(c.type)
        attrs = c.after or c.before or c.prior or {}
        keys = rt.schema.identity if rt is not None else ()
        out.append(Intent(c.address, c.action.value, c.type, {k: attrs.get(k) for k in keys}))
    return out


def desired_of(plan: Plan) -> dict[str, Any]:
    """The desired state a plan applies, kept with the state version it makes: enough to plan
    a return to it later (``tectum rollback``) without the code that declared it."""
    return {
        "resources": {
            c.address: {"type": c.type, "attrs": c.after, "dependencies": c.dependencies,
                        "watches": c.watches, "source": c.source,
                        **({"on_destroy": c.on_destroy} if c.on_destroy else {})}
            for c in plan.changes if c.after is not None
        },
        "outputs": plan.outputs,
        "output_sensitive": plan.output_sensitive,
    }


def git_revision(root: str) -> str | None:
    """``git describe --always --dirty`` of the project, or None outside a git work tree."""
    import subprocess

    try:
        proc = subprocess.run(["git", "-C", root, "describe", "--always", "--dirty",
                               "--abbrev=12"], capture_output=True, text=True, timeout=10,
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() or None if proc.returncode == 0 else None


class Session:
    """``Session(directory, variables={...}, var_files=[...])``; close it when done."""

    def __init__(
        self,
        directory: str = ".",
        *,
        variables: Mapping[str, str] | None = None,
        var_files: Sequence[str] = (),
        workspace: str | None = None,
        lock_timeout: float = 0.0,
        inventory: str | None = None,
        limit: str | None = None,
        accept_new_host_keys: bool = False,
    ) -> None:
        self.project: Project = load_project(directory)
        self.workspace = workspace or current_workspace(self.project)
        self.lock_timeout = lock_timeout
        self.warnings = Diagnostics()
        self._cli_vars = dict(variables or {})
        self._var_files = list(var_files)
        self._backend: StateBackend | None = None
        self._local: LocalConnector | None = None
        self._sealer: Any = None
        self._secrets: dict[str, str] | None = None
        self._stack: Stack | None = None
        self.inventory: Inventory = load_inventory(self.project.root, inventory)
        #: hosts ``--limit`` selects (``local`` included when matched); None: every host
        self.limit: frozenset[str] | None = (
            frozenset(self.inventory.select(limit)) if limit is not None else None)
        self.accept_new_host_keys = accept_new_host_keys
        self._connectors: dict[str, Connector] = {}
        self._connectors_lock = threading.Lock()
        #: hosts the last :meth:`refresh` could not read: host → (kind, reason)
        self.hosts_down: dict[str, tuple[str, str]] = {}

    # -- pieces ----------------------------------------------------------------------------
    @property
    def backend(self) -> StateBackend:
        if self._backend is None:
            self._backend = SealingBackend(self.backend_for(self.workspace), self.sealer)
        assert self._backend is not None
        return self._backend

    @property
    def sealer(self) -> Any:
        """Seals sensitive values at rest for this workspace (:mod:`tectum.secrets.seal`)."""
        if self._sealer is None:
            from tectum.secrets.seal import Sealer

            self._sealer = Sealer(self.project.root, self.workspace)
        return self._sealer

    def secret_value(self, source: str, name: str) -> str:
        """The value of ``secret(name)`` (from ``secrets/WORKSPACE.yaml``, decrypted once per
        session and registered for masking) or of a sensitive variable. Raises
        :class:`ValueError` naming what to do when there is no such secret."""
        if source == "var":
            if self._stack is not None and name in self._stack.sensitive_vars:
                return self._stack.sensitive_vars[name]
            raise ValueError(f"sensitive variable {name!r} has no value")
        if self._secrets is None:
            from tectum.secrets.store import secrets_path

            path = secrets_path(self.project.root, self.workspace)
            if not os.path.exists(path):
                raise ValueError(
                    f"secret {name!r} is used, but workspace {self.workspace!r} has no secrets "
                    f"file ({path}). Create it with `tectum secrets init` and add the value "
                    f"with `tectum secrets set {name}`")
            self._secrets = self._load_secrets(strict=True)
        assert self._secrets is not None  # strict: raised otherwise
        if name not in self._secrets:
            raise ValueError(
                f"secret {name!r} is not in the secrets file of workspace {self.workspace!r}. "
                f"Add it with `tectum secrets set {name}` (the value is read from stdin)")
        return self._secrets[name]

    def backend_for(self, workspace: str) -> StateBackend:
        """The project's backend (``[state]`` in tectum.toml) for ``workspace``."""
        state = self.project.state
        if state.get("backend") == "postgres":
            from tectum.backends.postgres import PostgresBackend

            dsn = os.environ.get("TECTUM_PG_CONN_STR") or str(state.get("conn_str"))
            return PostgresBackend(dsn, workspace)
        return SQLiteBackend(self.project.state_path, workspace)

    def connector(self, host: str | None) -> Connector:
        """The connector of ``host`` (None or ``local``: this machine), made on first use and
        kept for the session: one SSH connection per host for the whole run. Raises
        :class:`DiagnosticError` for a host the inventory does not declare."""
        if host in (None, LOCAL):
            with self._connectors_lock:
                if self._local is None:
                    self._local = LocalConnector()
                return self._local
        assert host is not None
        with self._connectors_lock:
            found = self._connectors.get(host)
            if found is None:
                found = self._make_connector(host)
                self._connectors[host] = found
            return found

    def _make_connector(self, name: str) -> Connector:
        entry = self.inventory.hosts.get(name)
        if entry is None:
            raise DiagnosticError(Diagnostic.error(
                "Unknown host",
                f"Host {name!r} is not in the inventory ({self.inventory.path}). Add "
                f"[hosts.{name}] to it, or remove its resources from state with "
                "`tectum state rm`.", address=f'host["{name}"]'))
        conn = entry.connection
        if conn.connector == "local":
            local = LocalConnector()
            local.host = name
            return local
        from tectum.providers.host.ssh import SSHConnector

        password = None
        if conn.become_password_env:
            password = os.environ.get(conn.become_password_env)
            if password is None:
                raise DiagnosticError(Diagnostic.error(
                    "Become password not set",
                    f"Host {name!r} takes its sudo password from the environment variable "
                    f"{conn.become_password_env}, which is not set. Export it (from a secret "
                    "store), or use passwordless sudo.", address=f'host["{name}"]',
                    source=SourceLocation(self.inventory.path)))
        return SSHConnector(
            name, conn.address, port=conn.port, user=conn.user, key_path=conn.key,
            known_hosts=conn.known_hosts, trust_unknown=self.accept_new_host_keys,
            become=conn.become, become_password=password,
            connect_timeout=conn.connect_timeout, command_timeout=conn.command_timeout,
            fail_fast=True)

    def in_limit(self, host: str | None) -> bool:
        """Whether ``--limit`` selects resources on ``host`` (None: the local machine)."""
        return self.limit is None or (host or LOCAL) in self.limit

    def close(self) -> None:
        if self._local is not None:
            self._local.close()
        for conn in self._connectors.values():
            close = getattr(conn, "close", None)
            if close is not None:
                close()
        self._connectors.clear()
        if self._backend is not None:
            self._backend.close()

    def inputs(self) -> dict[str, VarInput]:
        """Variable values by precedence: tectum.toml [vars] < -var-file < -var."""
        out: dict[str, VarInput] = {}
        cfg = os.path.join(self.project.root, "tectum.toml")
        for name, value in self.project.vars.items():
            out[name] = VarInput(value, f"[vars] in {cfg}")
        for path in self._var_files:
            for name, value in read_var_file(path).items():
                out[name] = VarInput(value, f"variables file {path}")
        for name, value in self._cli_vars.items():
            out[name] = VarInput(value, f"-var {name}=...", explicit=True)
        return out

    def evaluate(self) -> Stack:
        """Evaluate the stack; raises :class:`DiagnosticError` when it has errors (warnings
        are kept in :attr:`warnings`)."""
        stack = evaluate(self.project, self.inputs(), self.inventory)
        self._stack = stack
        for d in stack.diagnostics:
            if d.severity.value == "warning":
                self.warnings.append(d)
        stack.diagnostics.raise_if_errors()
        return stack

    @contextmanager
    def locked(self, operation: str) -> Iterator[None]:
        info, warning = self.backend.lock(operation, timeout=self.lock_timeout)
        if warning:
            self.warnings.append(Diagnostic.warning("Stale lock taken over", warning))
        try:
            yield
        finally:
            self.backend.unlock(info.id)

    # -- operations --------------------------------------------------------------------------
    def read_state(self) -> State:
        """The current state, with sealed values decrypted; the workspace's secrets are
        registered for masking first, so anything printed from state is masked."""
        self.register_secrets()
        return self.backend.read()

    def register_secrets(self) -> None:
        """Decrypt the workspace's secrets file (when there is one and a key opens it) so that
        every output of this command masks its values."""
        from tectum.secrets.store import secrets_path

        if self._secrets is None and os.path.exists(
                secrets_path(self.project.root, self.workspace)):
            self._secrets = self._load_secrets(strict=False)

    def _load_secrets(self, *, strict: bool) -> dict[str, str] | None:
        """Decrypt the workspace's secrets file and register its values for masking. A file
        that cannot be opened raises :class:`DiagnosticError` when ``strict``, else gives None
        (reported where a value is needed)."""
        from tectum.secrets.store import SecretsError, load_secrets

        try:
            values = load_secrets(self.project.root, self.workspace)
        except SecretsError as exc:
            if strict:
                raise DiagnosticError(exc.diagnostic()) from None
            return None
        for value in values.values():
            REDACTOR.add(value)
        return values

    def plan(self, stack: Stack, state: State, *, destroy: bool = False,
             refresh: bool = True, forks: int = 50) -> PlanResult:
        """Plan ``stack`` against ``state``, reading up to ``forks`` hosts at once (one round
        trip each for the facts). Hosts that cannot be reached are left out of the plan and
        named in ``plan.hosts_down``."""
        self._stack = stack
        planner = Planner(self.connector, self.in_limit, parallelism=forks,
                          secret_value=self.secret_value)
        result = planner.plan(stack, state, destroy=destroy, workspace=self.workspace,
                              pending=self.backend.pending_intents(), refresh=refresh,
                              limit=sorted(self.limit) if self.limit is not None else None)
        self.warnings.extend(d for d in result.diagnostics if d.severity.value == "warning")
        return result

    def check_fresh(self, plan: Plan, state: State, origin: str) -> None:
        """Refuse a saved plan made from another state (lineage) or an older one (serial)."""
        if plan.serial > 0 and state.serial > 0 and plan.lineage != state.lineage:
            raise DiagnosticError(Diagnostic.error(
                "Saved plan is for another state",
                f"{origin} was made for state lineage {plan.lineage}, but workspace "
                f"{self.workspace!r} has lineage {state.lineage}. Make a new plan.",
            ))
        if plan.serial != state.serial:
            raise DiagnosticError(Diagnostic.error(
                "Saved plan is stale",
                f"{origin} was made from state serial {plan.serial}, but the state is now at "
                f"serial {state.serial}: something was applied since. Make a new plan with "
                "`tectum plan -out FILE` and apply that.",
            ))

    def check_world(self, plan: Plan, *, made: str, retry: str, forks: int = 50) -> None:
        """Design decision 2 for a plan applied some time after it was made (a saved plan, or
        one the user confirmed at a prompt): before anything is done, re-read every object the
        plan changes (one facts round trip per host, as the plan's own read did) and refuse the
        plan when one of them is no longer what the plan found. Terraform applies a saved plan
        without looking again; tectum does not act on a world it has not seen. ``made`` says
        where the plan came from, ``retry`` what to do instead (both sentences). Objects
        whose identity is known only at apply time, objects whose read fails, and hosts that
        cannot be reached now are not checked (applying reports those). Raises
        :class:`DiagnosticError` naming each object that moved and the attributes that did."""
        from tectum.addrs import ResourceAddress
        from tectum.engine.planner import HostBatches
        from tectum.providers.registry import registry
        from tectum.values import is_known

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
                     obj)
            planned[change.address] = change.before
        if not by_host:
            return
        planner = Planner(self.connector, self.in_limit, parallelism=forks,
                          secret_value=self.secret_value)
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
                keys = sorted("content" if k == "content_sha256" else k
                              for k in set(was) | set(now) if was.get(k) != now.get(k))
                moved.append(f"{address}: {', '.join(keys)} changed")
        if moved:
            shown = moved[:20] + ([f"... and {len(moved) - 20} more"] if len(moved) > 20 else [])
            raise DiagnosticError(Diagnostic.error(
                "The world changed since the plan",
                f"{made} Since then, {len(moved)} of the objects it changes "
                f"{'was' if len(moved) == 1 else 'were'} changed outside it:\n  "
                + "\n  ".join(shown) + f"\nNothing was applied. {retry}",
            ))

    def apply(
        self,
        plan: Plan,
        state: State,
        *,
        parallelism: int = 10,
        on_event: Event | None = None,
        should_stop: Callable[[], bool] | None = None,
        operation: str | None = None,
        forks: int = 50,
        serial: str | None = None,
        max_fail_percent: float | None = None,
        on_host: HostEvent | None = None,
    ) -> ApplyResult:
        """Apply ``plan``; state is journaled after each resource and stored as a new version
        at the end (also when some resources failed). ``serial`` (``N``, ``N%`` or a list,
        see :func:`~tectum.engine.applier.serial_batches`) applies hosts in batches, in
        inventory order, stopping after a batch where more than ``max_fail_percent`` percent
        of the hosts failed. Raises :class:`ValueError` for a malformed ``serial``, and
        :class:`DiagnosticError`, before any change, when a key or recipient that sealing
        sensitive values at rest needs is missing."""
        self.sealer.check_ready()
        if state.serial == 0 and plan.lineage:
            state.lineage = plan.lineage
        self._sweep_interrupted()
        # the journal first says what is about to happen (one transaction for the plan)
        self.backend.intend(state.serial, intents_of(plan))
        batches = None
        if serial is not None:
            present = {host_of(c.address) for c in plan.changes} | set(plan.hosts_down)
            order = [h for h in [LOCAL, *self.inventory.hosts] if h in present]
            order += sorted(present - set(order))
            batches = serial_batches(order, serial)
        result = apply_plan(plan, state, self.connector, self.backend,
                            parallelism=parallelism, on_event=on_event,
                            should_stop=should_stop, forks=forks, batches=batches,
                            max_fail_percent=max_fail_percent, on_host=on_host)
        self._settle(plan, result, forks)
        self.backend.write(result.state,
                           operation or plan.operation
                           or ("destroy" if plan.destroy else "apply"),
                           revision=git_revision(self.project.root),
                           desired=None if plan.destroy else desired_of(plan))
        return result

    def _settle(self, plan: Plan, result: ApplyResult, forks: int) -> None:
        """State records what the world holds when the run ends, not what tectum asked for
        before a later change ran: on each host where a change with side effects was applied
        (a package's install scripts may chown a directory tectum just made), the objects this
        run changed are read again (one round trip per host) and their records updated.
        Hosts that cannot be read now keep the records as applied."""
        from tectum.addrs import ResourceAddress
        from tectum.engine.planner import HostBatches
        from tectum.providers.registry import registry

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
            add_read(by_host, host, rt, c.address, rec.attributes)
        if not by_host:
            return
        planner = Planner(self.connector, self.in_limit, parallelism=forks)
        for rt, address, obs in planner.read_found(by_host):
            rec = result.state.resources[address]
            if obs is None:
                continue  # (something removed it: the next plan reads it again)
            now = {k: v for k, v in rt.stored(obs).items() if k in rec.attributes}
            if any(rec.attributes.get(k) != v for k, v in now.items()):
                result.state.resources[address] = rec._replace(
                    attributes={**rec.attributes, **now})

    # -- refresh, drift, import, rollback ------------------------------------------------------
    def refresh(self, state: State, stack: Stack | None = None, *, forks: int = 50
                ) -> tuple[State, list[Drift]]:
        """Read every object in state (one round trip per host for the facts, up to ``forks``
        hosts at once) and return the refreshed state and what changed outside tectum since the
        last apply (Terraform's prev-run vs prior state). Objects that are gone leave state, as
        ``terraform refresh`` does. Attributes in a resource's ``ignore_changes`` (from
        ``stack``) are not reported. Hosts outside ``--limit`` are not read; hosts that are
        down are named in :attr:`hosts_down` and their records kept as they are."""
        from tectum.addrs import ResourceAddress
        from tectum.engine.planner import Planner
        from tectum.providers.registry import registry

        ignored: dict[str, set[str]] = {}
        if stack is not None:
            ignored = {a: set(d.ignore_changes) for a, d in stack.resources.items()}
        new = state.copy()
        drifts: list[Drift] = []
        by_host: dict[str | None, dict[str, list[ResourceRecord]]] = {}
        for rec in state.resources.values():
            host = ResourceAddress.parse(rec.address).host
            if self.in_limit(host):
                by_host.setdefault(host, {}).setdefault(rec.type, []).append(rec)
        batches: dict[str | None, list[tuple[Any, list[tuple[str, dict[str, Any]]]]]] = {}
        for host, types in by_host.items():
            for type_name, recs in types.items():
                rt = registry.get(type_name)
                if rt is None:
                    raise DiagnosticError(Diagnostic.error(
                        "Unknown resource type",
                        f"State holds {recs[0].address} of type {type_name!r}, which no "
                        "provider offers.", address=recs[0].address))
                batches.setdefault(host, []).append(
                    (rt, [(r.address, r.attributes) for r in recs]))
        hosts = list(batches)
        left = {i.address for i in self.backend.pending_intents()}
        done = Planner(self.connector, self.in_limit, parallelism=forks).read_hosts(batches)
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
        from tectum.addrs import ResourceAddress
        from tectum.providers.registry import registry

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
        keys = rt.schema.identity
        obj = {keys[0]: ident} if keys else {}
        obs = rt.read(self.connector(ResourceAddress.parse(address).host), [obj])[0]
        exists = obs is not None and obs.get("ensure", "present") != "absent" \
            and not obs.get("_kind")
        if not exists:
            raise DiagnosticError(Diagnostic.error(
                "Cannot import non-existent object",
                f"No {decl.type} {ident!r} exists on the host, so there is nothing to import "
                f"into {address}. Check the ID, or let apply create it.",
                address=address, source=decl.source))
        assert obs is not None
        new = state.copy()
        new.resources[address] = ResourceRecord(address, decl.type, rt.stored(obs),
                                                [], str(decl.source), FOUND, decl.on_destroy)
        return new

    def rollback_stack(self, serial: int) -> tuple[Stack, State]:
        """A stack that declares what state version ``serial`` applied (from the desired state
        kept with it; the code of that version is not needed), and that version."""
        from tectum.addrs import ResourceAddress
        from tectum.config.declaration import Declaration, OutputDecl
        from tectum.diagnostics import SourceLocation

        version, desired = self.backend.read_version(serial)
        desired = self.sealer.unseal(desired, f"state version {serial}")
        version.resources = {a: r._replace(attributes=self.sealer.unseal(r.attributes))
                             for a, r in version.resources.items()}
        if desired is None:
            raise DiagnosticError(Diagnostic.error(
                "No desired state recorded",
                f"State version {serial} was written by a {self._operation_of(serial)} and "
                "holds no desired state to return to. `tectum state history` shows the "
                "versions written by apply."))
        stack = Stack(self.project.root)
        for address, entry in desired.get("resources", {}).items():
            src = entry.get("source") or ""
            name, _, line = src.rpartition(":")
            stack.resources[address] = Declaration(
                address=ResourceAddress.parse(address), type=entry["type"],
                attrs=dict(entry["attrs"]),
                source=SourceLocation(name, int(line)) if line.isdigit()
                else SourceLocation(src or f"state version {serial}"),
                base_dir=self.project.root, depends_on=list(entry.get("dependencies", [])),
                watches=dict(entry.get("watches", {})), ignore_changes=[],
                on_destroy=entry.get("on_destroy"))
        for name, value in desired.get("outputs", {}).items():
            stack.outputs[name] = OutputDecl(
                name, value, bool(desired.get("output_sensitive", {}).get(name)), "",
                SourceLocation(f"state version {serial}"))
        return stack, version

    def _operation_of(self, serial: int) -> str:
        for v in self.backend.history():
            if v.serial == serial:
                return v.operation
        return "run"

    def _sweep_interrupted(self) -> None:
        """After a killed run: remove the temporary files its atomic writes left behind."""
        from tectum.addrs import ResourceAddress

        paths: dict[str | None, list[str]] = {}
        for intent in self.backend.pending_intents():
            path = intent.identity.get("path")
            if isinstance(path, str):
                paths.setdefault(ResourceAddress.parse(intent.address).host, []).append(path)
        from tectum.providers.host.connector import ConnectorError

        for host, items in paths.items():
            if not self.in_limit(host):
                continue
            try:
                self.connector(host).sweep_temp(items)
            except ConnectorError as exc:
                # a host that is down keeps its leftovers until a run reaches it
                self.warnings.append(Diagnostic.warning(
                    "Temporary files not swept", f"On host {host}: {exc}."))

    def outputs(self) -> dict[str, Any]:
        return self.read_state().outputs
