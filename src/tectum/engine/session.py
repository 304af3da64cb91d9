"""One command's session on a project: evaluate, lock, plan, apply, store state.

This is the Python API the CLI calls (DESIGN decision 8: everything the CLI does is a call here).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from tectum.backends.base import Intent, StateBackend
from tectum.backends.factory import open_backend
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
from tectum.engine.facts import FactsBook, gather
from tectum.engine.planner import (
    Planner,
    PlanResult,
    Resolver,
    build_graph,
)
from tectum.engine.targets import Targets
from tectum.engine.world import Drift, World
from tectum.graph.dag import Graph
from tectum.masking import REDACTOR
from tectum.plans.plan import Action, Plan
from tectum.secrets.seal import Sealer
from tectum.secrets.sealing import SealingBackend
from tectum.state.model import State

WORKSPACE_FILE = "workspace"


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
        # (what the change makes, else what it found, else what state knew: a prior may hold
        # a server-assigned id the desired attributes do not)
        attrs = c.after or c.before or c.prior or {}
        if c.prior and c.after is not None:
            attrs = {**c.prior, **attrs}
        out.append(Intent(c.address, c.action.value, c.type,
                          rt.journal_identity(attrs) if rt is not None else {}))
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
        self._sealer: Sealer | None = None
        self._secrets: dict[str, str] | None = None
        self._stack: Stack | None = None
        self._facts: FactsBook | None = None
        self.inventory: Inventory = load_inventory(self.project.root, inventory)
        #: hosts ``--limit`` selects (``local`` included when matched); None: every host
        self.limit: frozenset[str] | None = (
            frozenset(self.inventory.select(limit)) if limit is not None else None)
        self.accept_new_host_keys = accept_new_host_keys
        self._targets: Targets | None = None
        self._targets_lock = threading.Lock()
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
    def sealer(self) -> Sealer:
        """Seals sensitive values at rest for this workspace (:mod:`tectum.secrets.seal`)."""
        if self._sealer is None:
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
        """The project's backend (``[state]`` in tectum.toml, :mod:`tectum.backends.factory`)
        for ``workspace``; records are upgraded to their types' schema versions when read."""
        from tectum.providers.registry import registry

        backend = open_backend(self.project, workspace)
        if hasattr(backend, "types"):
            backend.types = registry.get
        return backend

    @property
    def targets(self) -> Targets:
        """The providers of this session (configured on first use from ``[providers.NAME]``)
        and the targets they talk to: one connection per host for the whole run."""
        with self._targets_lock:
            if self._targets is None:
                self._targets = Targets(
                    self.project.root, self.workspace, self.inventory, self.project.providers,
                    {"accept_new_host_keys": self.accept_new_host_keys})
            return self._targets

    def in_limit(self, host: str | None) -> bool:
        """Whether ``--limit`` selects resources on ``host`` (None: the local machine)."""
        return self.limit is None or (host or LOCAL) in self.limit

    def close(self) -> None:
        if self._targets is not None:
            self._targets.close()
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

    @property
    def facts_book(self) -> FactsBook:
        """The hosts' facts this session gives its stack (:mod:`tectum.engine.facts`)."""
        if self._facts is None:
            self._facts = FactsBook(
                os.path.join(self.project.root, ".tectum", "facts.json"), self.inventory)
        return self._facts

    def evaluate(self, *, facts: bool = True, forks: int = 50) -> Stack:
        """Evaluate the stack; raises :class:`DiagnosticError` when it has errors (warnings
        are kept in :attr:`warnings`). With ``facts`` (every command but ``validate`` and
        ``graph``), ``host.facts`` are known: remembered from the last run, or gathered now
        from the hosts the stack asks about (up to ``forks`` at once, one round trip each)
        and the stack evaluated again; without, they are unknown."""
        book = self.facts_book if facts else None
        gathered: set[str | None] = set()
        while True:
            if book is not None:
                book.begin_evaluation()
            stack = evaluate(self.project, self.inputs(), self.inventory, book)
            new = [h for h in stack.facts_needed if h not in gathered]
            if book is None or not new:
                break  # (each round gathers hosts not gathered before: it ends)
            gathered.update(new)
            self.warnings.extend(gather(book, self.targets, new, forks, self.in_limit))
        if book is not None:
            book.save()
            self._facts_stopped(stack)
        self._stack = stack
        for d in stack.diagnostics:
            if d.severity.value == "warning" and d not in self.warnings:
                self.warnings.append(d)  # (once: a plan may evaluate the stack again)
        stack.diagnostics.raise_if_errors()
        return stack

    def graph(self, stack: Stack) -> tuple[Graph, Diagnostics]:
        """The dependency graph of ``stack``, with diagnostics for unknown references and
        cycles (``tectum graph``)."""
        return build_graph(stack)

    def validate(self, stack: Stack) -> Diagnostics:
        """Everything that can be checked without state or the world (``tectum validate``):
        references, cycles, attribute values and templates, objects managed twice. Secrets
        stay unknown (the secrets file is not opened)."""
        graph, diags = build_graph(stack)
        if not diags.has_errors:
            diags.extend(Resolver(stack, State.new()).resolve_all(graph.order()))
        return diags

    def _facts_stopped(self, stack: Stack) -> None:
        """A stack whose own code stopped at a fact that cannot be read (a host that is down
        or outside --limit) is refused: what it declares after that line is unknown, and a
        plan would take it for removed. A role that stopped so keeps its host's state: the
        resources it declares after that line are not planned, and none of that host's
        resources is deleted (a warning says so)."""
        for role_host, what, exc, source in stack.facts_stopped:
            fact_host = exc.host or "this machine"
            fact = "the facts" if exc.name == "facts" else f"the fact {exc.name}"
            why = ("are not read (the host is outside --limit)"
                   if exc.host is not None and not self.in_limit(exc.host)
                   else "cannot be read (see the hosts reported unreachable)")
            if role_host is None:
                raise DiagnosticError(Diagnostic.error(
                    "Stack stopped at a fact",
                    f"{what} decides on {fact} of {fact_host}, whose facts "
                    f"{why}: what it declares after that line cannot be known, so nothing is "
                    "planned. Run again when the host answers (or include it in --limit), or "
                    "move the decision into a role applied to that host.", source=source))
            stack.incomplete_hosts.setdefault(role_host, f"{what} stopped at {fact} of "
                                                         f"{fact_host}")
            warning = Diagnostic.warning(
                "Role stopped at a fact",
                f"{what} decides on {fact} of {fact_host}, whose facts {why}: the resources "
                f"it declares after that line are not planned, and none of {role_host}'s "
                "resources is deleted in this plan.", source=source)
            if exc.host != role_host and warning not in self.warnings:
                self.warnings.append(warning)  # (once: a plan may evaluate the stack again)

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
             refresh: bool = True, forks: int = 50, targets: Sequence[str] | None = None,
             replace: Sequence[str] = ()) -> PlanResult:
        """Plan ``stack`` against ``state``, reading up to ``forks`` hosts at once (one round
        trip each for the facts). Hosts that cannot be reached are left out of the plan and
        named in ``plan.hosts_down``. ``targets`` and ``replace``: Terraform's ``-target`` and
        ``-replace`` (:meth:`Planner.plan`); targeting adds a warning that the plan may leave
        other changes out."""
        self._stack = stack
        book = self._facts if stack.facts_source is not None else None
        if book is not None and refresh:
            facts_provider = self.targets.facts_provider()
            if facts_provider is not None:
                for host in book.used:
                    if self.in_limit(host) and not book.fresh(host):
                        facts_provider.want_facts(host)
        try:
            result = self._plan(stack, state, destroy, refresh, forks, targets, replace)
        except DiagnosticError:
            # a plan refused for what remembered facts made the stack declare (a package of
            # the release before an upgrade) is made again with the facts its reads brought
            if book is None or not refresh or not self._facts_moved(book, forks):
                raise
            moved = True
        else:
            moved = book is not None and refresh and self._facts_moved(book, forks)
        if moved:
            # the facts the stack was evaluated with are not the hosts' any more: evaluate
            # it with the ones just read and plan again (the reads come from the hosts again)
            stack = self.evaluate(forks=forks)
            result = self._plan(stack, state, destroy, refresh, forks, targets, replace)
        if book is not None:
            # a host found down while its facts were gathered may have no resource left in
            # the plan to be found down by: the plan says so all the same
            for host, why in book.down.items():
                result.plan.hosts_down.setdefault(host, why)
        self.warnings.extend(d for d in result.diagnostics if d.severity.value == "warning")
        if targets is not None:
            self.warnings.append(Diagnostic.warning(
                "Resource targeting is in effect",
                f"Only {', '.join(targets)} and what "
                f"{'depends on them' if destroy else 'they depend on'} were planned: changes "
                "to other resources are left out, and the world may not match the "
                "configuration after this apply. Use -target for exceptional cases, such as "
                "recovering from a mistake (Terraform's advice), then run a full plan."))
        return result

    def _plan(self, stack: Stack, state: State, destroy: bool, refresh: bool, forks: int,
              targets: Sequence[str] | None, replace: Sequence[str]) -> PlanResult:
        planner = Planner(self.targets, self.in_limit, parallelism=forks,
                          secret_value=self.secret_value)
        return planner.plan(stack, state, destroy=destroy, workspace=self.workspace,
                            pending=self.backend.pending_intents(), refresh=refresh,
                            limit=sorted(self.limit) if self.limit is not None else None,
                            targets=targets, replace=replace)

    def _facts_moved(self, book: FactsBook, forks: int) -> bool:
        """Record the facts the plan's reads brought (and gather those of hosts the stack
        used but the plan did not read); True when any differ from what the stack was
        evaluated with."""
        provider = self.targets.facts_provider()
        if provider is None:
            return False
        moved = False
        unread = []
        for host in list(book.used):
            if book.fresh(host) or not self.in_limit(host):
                continue
            found = provider.observed_facts(host)
            if found is None:
                unread.append(host)
            elif book.record(host, found):
                moved = True
        if unread:
            self.warnings.extend(gather(book, self.targets, unread, forks, self.in_limit))
            moved = moved or any(book.used.get(h) != book.read(h) for h in unread)
        book.save()
        return moved

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

    def world(self, forks: int = 50) -> World:
        """Reads of the world for this session (:class:`~tectum.engine.world.World`)."""
        return World(self.targets, self.in_limit, forks)

    def check_world(self, plan: Plan, *, made: str, retry: str, forks: int = 50) -> None:
        """Refuse ``plan`` when an object it changes is no longer what it found
        (:meth:`World.check`)."""
        self.world(forks).check(plan, made=made, retry=retry)

    def apply(
        self,
        plan: Plan,
        state: State,
        *,
        parallelism: int = 100,
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
        self.world(forks).sweep_interrupted(self.backend.pending_intents(), self.warnings)
        # the journal first says what is about to happen (one transaction for the plan)
        self.backend.intend(state.serial, intents_of(plan))
        batches = None
        if serial is not None:
            present = {host_of(c.address) for c in plan.changes} | set(plan.hosts_down)
            order = [h for h in [LOCAL, *self.inventory.hosts] if h in present]
            order += sorted(present - set(order))
            batches = serial_batches(order, serial)
        result = apply_plan(plan, state, self.targets, self.backend,
                            parallelism=parallelism, on_event=on_event,
                            should_stop=should_stop, forks=forks, batches=batches,
                            max_fail_percent=max_fail_percent, on_host=on_host)
        self.world(forks).settle(plan, result)
        self.backend.write(result.state,
                           operation or plan.operation
                           or ("destroy" if plan.destroy else "apply"),
                           revision=git_revision(self.project.root),
                           desired=None if plan.destroy else self._desired(plan, state, result))
        return result

    def _desired(self, plan: Plan, state: State, result: ApplyResult) -> dict[str, Any]:
        """The desired state to keep with the new version: what ``plan`` applied, and for
        resources it left out (``-target``, ``--limit``, a host that was down) and still in
        state, what the previous version applied to them — so ``rollback`` to this version
        does not take them for removed."""
        desired = desired_of(plan)
        planned = {c.address for c in plan.changes}
        if not state.serial or all(a in planned for a in result.state.resources):
            return desired  # (a full plan: no earlier version to read)
        try:
            _, before = self.backend.read_version(state.serial)
        except DiagnosticError:
            return desired
        for address, entry in ((before or {}).get("resources") or {}).items():
            if address not in planned and address in result.state.resources:
                desired["resources"].setdefault(address, entry)
        return desired

    # -- refresh, drift, import, rollback ------------------------------------------------------
    def refresh(self, state: State, stack: Stack | None = None, *, forks: int = 50
                ) -> tuple[State, list[Drift]]:
        """Read every object in state and return the refreshed state and the drift
        (:meth:`World.refresh`); hosts that could not be read are in :attr:`hosts_down`."""
        world = self.world(forks)
        out = world.refresh(state, stack, self.backend.pending_intents())
        self.hosts_down = world.hosts_down
        return out

    def import_object(self, stack: Stack, state: State, address: str, ident: str) -> State:
        """Bring the existing object ``ident`` under management as ``address``
        (:meth:`World.import_object`)."""
        return self.world().import_object(stack, state, address, ident)

    def _no_pending(self, command: str) -> None:
        """Refuse a state edit while an interrupted run's changes are unrecorded: writing a
        version would drop the journal that lets the next plan find them."""
        pending = self.backend.pending_intents()
        if pending:
            raise DiagnosticError(Diagnostic.error(
                "An interrupted run is not settled",
                f"A run was interrupted before it recorded {len(pending)} change(s) (e.g. "
                f"{pending[0].address}). `tectum {command}` now would lose what the journal "
                "knows of them. Run `tectum apply` (or `tectum plan` to see them) first.",
                address=pending[0].address))

    def forget(self, state: State, addresses: Sequence[str]) -> State:
        """``state`` without the records of ``addresses`` (``tectum state rm``, Terraform's
        ``state rm``): their objects are left as they are and no longer managed. Raises
        :class:`DiagnosticError` naming every address not in state (nothing is removed)."""
        self._no_pending("state rm")
        missing = [a for a in addresses if a not in state.resources]
        if missing:
            raise DiagnosticError(Diagnostic.error(
                "No such resource in state",
                f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not in the state "
                "of workspace " f"{self.workspace!r}; nothing was removed. `tectum state list` "
                "shows what is.", address=missing[0]))
        gone = set(addresses)
        new = state.copy()
        for address in gone:
            del new.resources[address]
        for address, rec in new.resources.items():
            if gone & set(rec.dependencies):
                new.resources[address] = rec._replace(
                    dependencies=[d for d in rec.dependencies if d not in gone])
        return new

    def move(self, state: State, source: str, destination: str) -> State:
        """``state`` with the record of ``source`` under the address ``destination``
        (``tectum state mv``, Terraform's ``state mv``: a rename in the code without deleting
        and creating the object); dependencies on it follow. Raises :class:`DiagnosticError`
        when ``source`` is not in state, ``destination`` is taken or malformed, or the two
        differ in type or host (an object keeps its type and stays on its machine)."""
        from tectum.addrs import AddressError, ResourceAddress

        def refuse(summary: str, detail: str) -> DiagnosticError:
            return DiagnosticError(Diagnostic.error(summary, detail, address=source))

        self._no_pending("state mv")
        rec = state.resources.get(source)
        if rec is None:
            raise refuse("No such resource in state",
                         f"{source} is not in the state of workspace {self.workspace!r}. "
                         "`tectum state list` shows what is.")
        try:
            src, dst = ResourceAddress.parse(source), ResourceAddress.parse(destination)
        except AddressError as exc:
            raise refuse("Invalid address", f"{exc}.") from None
        if destination in state.resources:
            raise refuse("Destination already in state",
                         f"{destination} is in state already; remove it first "
                         f"(`tectum state rm {destination}`) or choose another name.")
        if src.type != dst.type:
            raise refuse("Cannot move to another resource type",
                         f"{source} is a {src.type}; {destination} would be a {dst.type}. "
                         "An object keeps its type: declare the new resource and import the "
                         "object into it instead.")
        if src.host != dst.host:
            raise refuse("Cannot move to another host",
                         f"{source} is on {src.host or 'this machine'}; {destination} would be "
                         f"on {dst.host or 'this machine'}. An object stays where it is.")
        new = state.copy()
        del new.resources[source]
        new.resources[destination] = rec._replace(address=destination)
        for address, other in list(new.resources.items()):
            if source in other.dependencies:
                new.resources[address] = other._replace(dependencies=[
                    destination if d == source else d for d in other.dependencies])
        return new

    def rollback_stack(self, serial: int) -> tuple[Stack, State]:
        """A stack that declares what state version ``serial`` applied (from the desired state
        kept with it; the code of that version is not needed), and that version."""
        from tectum.addrs import ResourceAddress
        from tectum.config.declaration import Declaration, OutputDecl

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
        from tectum.providers.registry import registry

        stack = Stack(self.project.root)
        for address, entry in desired.get("resources", {}).items():
            src = entry.get("source") or ""
            name, _, line = src.rpartition(":")
            # what was declared: computed attributes the prepare of that apply filled in (a
            # digest, a client token an API takes once) are made again by this plan's
            rt = registry.get(entry["type"])
            attrs = {k: v for k, v in dict(entry["attrs"]).items()
                     if rt is None or (spec := rt.schema.attrs.get(k)) is None
                     or not spec.computed}
            stack.resources[address] = Declaration(
                address=ResourceAddress.parse(address), type=entry["type"],
                attrs=attrs,
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

    def outputs(self) -> dict[str, Any]:
        return self.read_state().outputs
