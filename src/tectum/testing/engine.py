"""The engine pass of the conformance suite: one object through the planner and the applier.

:func:`run_engine_lifecycle` declares the case's object in a
:class:`~tectum.config.declaration.Stack`, plans it with
:class:`~tectum.engine.planner.Planner` and applies it with
:func:`~tectum.engine.applier.apply_plan` — the code ``tectum plan`` / ``apply`` /
``destroy`` run — keeping state in memory between runs (round-tripped through its JSON form,
as a backend stores it). The targets the engine gets are wrapped in the case's recording view
(:class:`RecordingTargets`), so "a no-op apply makes no mutating call" is checked on the calls
the engine really made.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from tectum.config.declaration import Host, Resource, Stack
from tectum.config.inventory import Inventory, empty_inventory
from tectum.diagnostics import DiagnosticError
from tectum.engine.applier import JournalEntry, apply_plan
from tectum.engine.planner import Planner
from tectum.engine.targets import Targets
from tectum.plans.plan import Action, Plan
from tectum.providers.base import Provider, ReadItem
from tectum.providers.registry import registry
from tectum.state.model import State
from tectum.testing.case import Case, ConformanceError, Report

__all__ = ["RecordingTargets", "run_engine_lifecycle"]


class RecordingTargets(Targets):
    """:class:`~tectum.engine.targets.Targets` whose providers hand out recording views of
    their targets: ``record(target)`` makes the view (once per target); :meth:`mutations`
    lists the mutating calls made through every view so far."""

    def __init__(self, *args: Any, record: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._record = record
        self._views: dict[int, Any] = {}
        self._wrapped: set[int] = set()
        self._views_lock = threading.Lock()

    def provider(self, name: str) -> Provider:
        inst = super().provider(name)
        with self._views_lock:
            if id(inst) in self._wrapped:
                return inst
            self._wrapped.add(id(inst))
        real = inst.target

        def target(host: str | None) -> Any:
            made = real(host)
            with self._views_lock:
                view = self._views.get(id(made))
                if view is None:
                    view = self._views[id(made)] = self._record(made)
            return view

        # this instance only (made by this session): the engine's calls go through the view
        setattr(inst, "target", target)  # noqa: B010 - a method replaced on one instance
        return inst

    def _gather(self, kind: str) -> list[Any]:
        with self._views_lock:
            views = list(self._views.values())
        return [m for v in views for m in (getattr(v, kind, None) or [])]

    def calls(self) -> list[Any]:
        """Every call recorded through the views so far (where a view keeps them)."""
        return self._gather("calls")

    def mutations(self) -> list[Any]:
        """The mutating calls made through the views so far."""
        return self._gather("mutations")


class _Journal:
    """Journal entries kept in memory (the applier commits intents and results here)."""

    def __init__(self) -> None:
        self.entries: list[JournalEntry] = []

    def record(self, base_serial: int, entries: Sequence[JournalEntry]) -> None:
        self.entries.extend(entries)


def _declare(case: Case, attrs: Mapping[str, Any], inventory: Inventory) -> Stack:
    cls = type(f"Conformance_{case.type_name}", (Resource,),
               {"type_name": case.type_name, "__slots__": ()})
    with Stack(base_dir=case.root, inventory=inventory) as stack:
        if case.host is not None:
            with Host(case.host, (), {}, case.host):
                cls("conformance", **attrs)
        else:
            cls("conformance", **attrs)
        stack.finish()
    if stack.diagnostics.has_errors:
        raise ConformanceError(f"{case.id}: the case's attributes are refused: "
                               + "; ".join(f"{d.summary}: {d.detail}"
                                           for d in stack.diagnostics))
    return stack


def run_engine_lifecycle(case: Case, *, inventory: Inventory | None = None) -> Report:
    """See :func:`tectum.testing.conformance.check_engine`."""
    rt = registry.get(case.type_name)
    if rt is None:
        raise ConformanceError(f"no registered provider offers resource type "
                               f"{case.type_name!r}")
    inventory = inventory or empty_inventory(case.root)
    name = registry.provider_of(case.type_name) or case.type_name
    targets = RecordingTargets(case.root, "default", inventory,
                               {name: dict(case.settings)} if case.settings else {},
                               record=case.record)
    report = Report(case)
    step = "create"

    def fail(message: str) -> ConformanceError:
        return ConformanceError(f"{case.type_name} [{case.id}], engine, step {step}: "
                                f"{message}")

    def plan(stack: Stack, state: State, *, destroy: bool = False) -> Plan:
        try:
            result = Planner(targets).plan(stack, state, destroy=destroy)
        except DiagnosticError as exc:
            raise fail("the planner refused: " + "; ".join(
                f"{d.summary}: {d.detail}" for d in exc.diagnostics)) from None
        errors = [d for d in result.diagnostics if d.severity.value == "error"]
        if errors:
            raise fail(f"plan diagnostics: {errors}")
        return result.plan

    def apply(planned: Plan, state: State) -> State:
        result = apply_plan(planned, state, targets, _Journal())
        if result.failed or result.skipped or result.unreachable:
            raise fail(f"apply failed: {result.failed or result.skipped or result.unreachable}")
        # what a backend stores and reads back
        return State.from_json(result.state.to_json())

    def only(planned: Plan, *actions: Action) -> None:
        got = [(c.address, c.action) for c in planned.changes]
        if len(got) != 1 or got[0][1] not in actions:
            raise fail(f"planned {[(a, x.value) for a, x in got]}, expected one "
                       f"{' or '.join(a.value for a in actions)}")

    def quiet(stack: Stack, state: State) -> State:
        """Plan and apply an unchanged configuration: all no-ops, no mutating call, and the
        state record as it was."""
        mark = len(targets.mutations())
        planned = plan(stack, state)
        noisy = [f"{c.address} {c.action.value} {[x.name for x in c.changes]}"
                 for c in planned.changes if c.action is not Action.NOOP]
        if noisy:
            raise fail(f"the plan after apply is not a no-op: {noisy}")
        after = apply(planned, state)
        made = targets.mutations()[mark:]
        if made:
            raise fail("a no-op plan and apply made mutating calls: "
                       + ", ".join(map(str, made)))
        before = {a: r.attributes for a, r in state.resources.items()}
        now = {a: r.attributes for a, r in after.resources.items()}
        if before != now:
            raise fail(f"a no-op apply changed state: {before} → {now}")
        return after

    try:
        state = State.new()
        stack = _declare(case, case.create, inventory)
        planned = plan(stack, state)
        only(planned, case.create_action)
        state = apply(planned, state)
        if len(state.resources) != 1:
            raise fail(f"state holds {sorted(state.resources)} after the create")
        report.done.append("create")

        step = "noop"
        state = quiet(stack, state)
        report.done.append("noop")

        if "update" in case.skip:
            report.skipped["update"] = case.skip["update"]
        else:
            step = "update"
            assert case.update is not None
            stack = _declare(case, {**case.create, **case.update}, inventory)
            planned = plan(stack, state)
            only(planned, case.update_action)
            state = apply(planned, state)
            state = quiet(stack, state)
            report.done.append("update")

        if "drift" in case.skip:
            report.skipped["drift"] = case.skip["drift"]
        else:
            step = "drift"
            assert case.tamper is not None
            record = next(iter(state.resources.values()))
            view = targets.provider(name).target(case.host)
            case.tamper(getattr(view, "inner", view), dict(record.attributes))
            planned = plan(stack, state)
            change = planned.changes[0]
            names = [c.name for c in change.changes]
            if change.action is Action.NOOP or (case.drift is not None
                                                and case.drift not in names):
                raise fail(f"a change made by hand is planned as {change.action.value} of "
                           f"{names}")
            if case.drift is not None and case.drift in rt.schema.attrs \
                    and case.drift not in rt.unobserved \
                    and rt.label(case.drift) not in change.drift:
                raise fail(f"the plan reports drift of {change.drift}, not of {case.drift!r}")
            state = apply(planned, state)
            state = quiet(stack, state)
            report.done.append("drift")

        step = "delete"
        record = next(iter(state.resources.values()))
        # as `tectum destroy` does: an empty stack (the configuration is not evaluated)
        planned = plan(Stack(base_dir=case.root, inventory=inventory), state, destroy=True)
        only(planned, Action.DELETE if rt.deletable else Action.FORGET)
        state = apply(planned, state)
        if state.resources:
            raise fail(f"state still holds {sorted(state.resources)} after destroy")
        report.done.append("delete")

        if "gone" in case.skip or not rt.deletable:
            report.skipped["gone"] = case.skip.get("gone", "not deletable: only forgotten")
        else:
            step = "gone"
            provider = targets.provider(name)
            view = provider.target(case.host)
            item = ReadItem(None, dict(record.attributes))
            provider.begin_read(view, [(rt, [item])])
            try:
                found = rt.read(view, [item])[0]
            finally:
                provider.end_read(view)
            absent = case.gone(found) if case.gone is not None \
                else found is None or not rt.exists(found)
            if not absent:
                raise fail(f"after destroy a read by the record finds {found!r}")
            report.done.append("gone")
    finally:
        report.calls = targets.calls()
        targets.close()
    return report
