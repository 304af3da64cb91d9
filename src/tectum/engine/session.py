"""One command's session on a project: evaluate, lock, plan, apply, store state.

This is the Python API the CLI calls (DESIGN decision 8: everything the CLI does is a call here).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from tectum.backends.base import Intent
from tectum.backends.sqlite import SQLiteBackend
from tectum.config.declaration import Stack, VarInput
from tectum.config.project import Project, load_project, read_var_file
from tectum.config.stack import evaluate
from tectum.diagnostics import Diagnostic, DiagnosticError, Diagnostics
from tectum.engine.applier import ApplyResult, Event, apply_plan
from tectum.engine.planner import Planner, PlanResult
from tectum.plans.plan import Action, Plan
from tectum.providers.host.connector import Connector, LocalConnector
from tectum.state.model import State


def intents_of(plan: Plan) -> list[Intent]:
    """One intent per change that mutates, with the attributes that find its object."""
    from tectum.providers.registry import registry

    out = []
    for c in plan.changes:
        if c.action is Action.NOOP:
            continue
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
                        "watches": c.watches, "source": c.source}
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
        workspace: str = "default",
    ) -> None:
        self.project: Project = load_project(directory)
        self.workspace = workspace
        self.warnings = Diagnostics()
        self._cli_vars = dict(variables or {})
        self._var_files = list(var_files)
        self._backend: SQLiteBackend | None = None
        self._local: LocalConnector | None = None

    # -- pieces ----------------------------------------------------------------------------
    @property
    def backend(self) -> SQLiteBackend:
        if self._backend is None:
            self._backend = SQLiteBackend(self.project.state_path, self.workspace)
        return self._backend

    def connector(self, host: str | None) -> Connector:
        if host not in (None, "local"):
            raise DiagnosticError(Diagnostic.error(
                "Unknown host", f"Host {host!r} is not in the inventory."))
        if self._local is None:
            self._local = LocalConnector()
        return self._local

    def close(self) -> None:
        if self._local is not None:
            self._local.close()
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
        stack = evaluate(self.project, self.inputs())
        for d in stack.diagnostics:
            if d.severity.value == "warning":
                self.warnings.append(d)
        stack.diagnostics.raise_if_errors()
        return stack

    @contextmanager
    def locked(self, operation: str) -> Iterator[None]:
        info, warning = self.backend.lock(operation)
        if warning:
            self.warnings.append(Diagnostic.warning("Stale lock taken over", warning))
        try:
            yield
        finally:
            self.backend.unlock(info.id)

    # -- operations --------------------------------------------------------------------------
    def read_state(self) -> State:
        return self.backend.read()

    def plan(self, stack: Stack, state: State, *, destroy: bool = False) -> PlanResult:
        result = Planner(self.connector).plan(stack, state, destroy=destroy,
                                              workspace=self.workspace,
                                              pending=self.backend.pending_intents())
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

    def apply(
        self,
        plan: Plan,
        state: State,
        *,
        parallelism: int = 10,
        on_event: Event | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> ApplyResult:
        """Apply ``plan``; state is journaled after each resource and stored as a new version
        at the end (also when some resources failed)."""
        if state.serial == 0 and plan.lineage:
            state.lineage = plan.lineage
        # the journal first says what is about to happen (one transaction for the plan)
        self.backend.intend(state.serial, intents_of(plan))
        result = apply_plan(plan, state, self.connector, self.backend,
                            parallelism=parallelism, on_event=on_event,
                            should_stop=should_stop)
        self.backend.write(result.state, "destroy" if plan.destroy else "apply",
                           revision=git_revision(self.project.root),
                           desired=None if plan.destroy else desired_of(plan))
        return result

    def outputs(self) -> dict[str, Any]:
        return self.read_state().outputs
