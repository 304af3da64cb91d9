"""The resource type conformance suite: one lifecycle every resource type must get right.

:func:`check_resource_type` drives one type through its public hooks, in the order and with
the arguments the engine uses (``prepare``; ``Provider.begin_read`` → ``read`` with
:class:`~tectum.providers.base.ReadItem` pairs → ``Provider.end_read``; ``plan``;
``apply`` / ``apply_batch``; ``stored``), on a real target made by the type's provider
(configured through :class:`tectum.engine.targets.Targets`, as a session configures it):

=========  ==============================================================================
create     the object is absent; the plan creates it; apply makes it
noop       read + plan again: a no-op with no attribute change, no mutating call (reads
           never mutate, in any step), and the state record stays as it was
update     an attribute change is planned as ``Case.update_action`` and applied; then no-op
drift      a change made by hand (``Case.tamper``) is planned as a change (of
           ``Case.drift``); applying it repairs the object; then no-op
import     ``import_item(ID)`` + read finds the object (``exists``) with the attributes
           state holds (except ``unobserved`` ones); planning with that record is a no-op
journal    the journal identity of the create (from before the object existed) and of the
           record each find the object again (crash recovery) and are JSON
delete     the object, out of the configuration (``ReadItem(None, record)``), is deleted
gone       a read by the record and by the configuration finds nothing; planning the
           configuration again creates it
=========  ==============================================================================

:func:`check_engine` runs the same object through the engine itself (planner, applier) for
the create / no-op / update / destroy part. :class:`ResourceTypeSuite` is a pytest base class
running both for each :class:`Case` a provider's test module gives.

Conformance suites are the norm for provider interfaces: the Terraform plugin SDK's
acceptance test framework (``resource.Test``: apply, plan is empty, import state verify,
destroy check) is the model of this one; OpenTofu's provider protocol is the contract.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tectum.config.inventory import Inventory, empty_inventory
from tectum.engine.targets import Targets
from tectum.plans.plan import Action, AttrChange, ResourceChange
from tectum.providers.base import Provider, ReadItem, ResourceType
from tectum.providers.registry import registry
from tectum.testing.case import STEPS, Case, ConformanceError, Report
from tectum.testing.engine import run_engine_lifecycle
from tectum.testing.recording import Call

__all__ = ["STEPS", "Case", "ConformanceError", "Report", "ResourceTypeSuite",
           "check_engine", "check_resource_type"]

def _json_problem(value: Any) -> str | None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return str(exc)
    return None


def _show(changes: list[AttrChange]) -> str:
    return "; ".join(f"{c.name}: {c.before!r} → {c.after!r}" for c in changes) or "none"


class _Run:
    """One case's run: the type, its configured provider, the target and its recorder."""

    def __init__(self, case: Case, rt: ResourceType[Any], provider: Provider, raw: Any
                 ) -> None:
        self.case = case
        self.rt = rt
        self.provider = provider
        self.raw = raw
        self.rec = case.record(raw)
        self.step = "setup"
        host = f'host["{case.host}"].' if case.host else ""
        self.address = f"{host}{rt.name}.conformance"

    # -- failing ---------------------------------------------------------------------------
    def fail(self, message: str) -> ConformanceError:
        return ConformanceError(f"{self.rt.name} [{self.case.id}], step {self.step}: {message}")

    def check(self, ok: bool, message: str) -> None:
        if not ok:
            raise self.fail(message)

    def mutations(self) -> list[Call]:
        found = getattr(self.rec, "mutations", None)
        return list(found) if found is not None else []

    # -- the hooks, as the engine calls them ------------------------------------------------
    def prepare(self, attrs: Mapping[str, Any]) -> dict[str, Any]:
        schema = self.rt.schema
        for key, value in attrs.items():
            spec = schema.attrs.get(key)
            self.check(spec is not None and not spec.computed,
                       f"{key!r} is not a settable attribute of {self.rt.name}")
            assert spec is not None
            problem = spec.check(value)
            self.check(problem is None, f"attribute {key!r}: {problem}")
        problems = self.rt.check(dict(attrs))
        self.check(not problems, f"check() refuses the case's attributes: {problems}")
        try:
            return self.rt.prepare(dict(attrs), self.case.root)
        except ValueError as exc:
            raise self.fail(f"prepare() refused the attributes: {exc}") from None

    def read(self, item: ReadItem) -> dict[str, Any] | None:
        """``begin_read``, ``read`` of one item, ``end_read``; a read must not mutate."""
        mark = len(self.mutations())
        self.provider.begin_read(self.rec, [(self.rt, [item])])
        try:
            found = self.rt.read(self.rec, [item])
        except Exception as exc:
            raise self.fail(f"read raised {type(exc).__name__}: {exc}") from None
        finally:
            self.provider.end_read(self.rec)
        self.check(isinstance(found, list) and len(found) == 1,
                   f"read of 1 item returned {found!r} (a list of one result per item)")
        made = self.mutations()[mark:]
        self.check(not made, "a read made mutating calls: " + ", ".join(map(str, made)))
        obs = found[0]
        self.check(obs is None or isinstance(obs, dict),
                   f"read returned {obs!r} (an attribute dict or None)")
        return obs

    def absent(self, obs: dict[str, Any] | None) -> bool:
        if self.case.gone is not None:
            return self.case.gone(obs)
        return obs is None or not self.rt.exists(obs)

    def plan(self, desired: dict[str, Any], obs: dict[str, Any] | None,
             prior: dict[str, Any] | None) -> ResourceChange:
        action, changes = self.rt.plan(desired, obs, prior)
        self.check(isinstance(action, Action), f"plan returned {action!r} as the action")
        return ResourceChange(self.address, self.rt.name, action,
                              self.rt.stored(obs) if obs is not None else None, desired,
                              changes, prior=prior)

    def apply(self, change: ResourceChange) -> dict[str, Any] | None:
        """``apply_batch`` (a batching type) or ``apply``; returns the state record."""
        try:
            if self.rt.batches:
                got = self.rt.apply_batch(self.rec, [change])
                self.check(len(got) == 1, f"apply_batch of 1 change returned {got!r}")
                if isinstance(got[0], Exception):
                    raise got[0]
                result = got[0]
            else:
                result = self.rt.apply(self.rec, change)
        except ConformanceError:
            raise
        except Exception as exc:
            raise self.fail(f"apply ({change.action.value}) raised {type(exc).__name__}: "
                            f"{exc}") from None
        if result is None:
            return None
        self.check(isinstance(result, dict), f"apply returned {result!r} (a dict or None)")
        record = self.rt.stored(result)
        problem = _json_problem(record)
        self.check(problem is None, f"the state record {record!r} is not JSON: {problem}")
        return record

    def observable(self, attrs: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in self.rt.stored(attrs).items() if k not in self.rt.unobserved}

    def converged(self, desired: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
        """Read and plan: a no-op with no change, no mutating call; the record a no-op keeps
        (the applier's rule: what was read, over what state knew) is ``record`` itself."""
        mark = len(self.mutations())
        obs = self.read(ReadItem(desired, record))
        self.check(not self.absent(obs), "the object is not found after it was applied")
        change = self.plan(desired, obs, record)
        self.check(change.action is Action.NOOP and not change.changes,
                   f"the plan after apply is {change.action.value}, not a no-op; changes: "
                   f"{_show(change.changes)}")
        made = self.mutations()[mark:]
        self.check(not made, "a no-op plan made mutating calls: " + ", ".join(map(str, made)))
        seen = self.rt.stored(obs) if obs is not None else {}
        kept = {**record, **{k: v for k, v in seen.items()
                             if k in record or desired.get(k) is not None}}
        self.check(kept == record,
                   f"a no-op would change the state record: {record!r} → {kept!r} (read "
                   "reports something apply did not store, or stores it differently)")
        return record


def _provider_for(case: Case, inventory: Inventory | None) -> tuple[
        ResourceType[Any], Targets]:
    rt = registry.get(case.type_name)
    if rt is None:
        raise ConformanceError(f"no registered provider offers resource type "
                               f"{case.type_name!r} (registered: {', '.join(registry.names())})")
    name = registry.provider_of(case.type_name) or case.type_name
    settings = {name: dict(case.settings)} if case.settings else {}
    targets = Targets(case.root, "default", inventory or empty_inventory(case.root), settings)
    return rt, targets


def check_resource_type(case: Case, *, inventory: Inventory | None = None) -> Report:
    """Run ``case`` through every step of :data:`STEPS` (see the module docstring) on the
    target its provider makes for ``case.host``. Returns a :class:`Report`; raises
    :class:`ConformanceError` at the first broken rule, naming the type, the case and the
    step. The object made is deleted by the suite's own delete step; a test's fixtures clean
    up what a failure leaves."""
    rt, targets = _provider_for(case, inventory)
    report = Report(case)
    try:
        run = _Run(case, rt, targets.provider_of(rt), targets.target(rt, case.host))
        _lifecycle(run, report)
    finally:
        targets.close()
    return report


def _lifecycle(run: _Run, report: Report) -> None:
    case, rt = run.case, run.rt
    skip = dict(case.skip)
    if not rt.deletable:
        for step in ("delete", "gone"):
            skip.setdefault(step, f"{rt.name} is not deletable: a resource that goes is only "
                                  "forgotten")

    def start(step: str) -> bool:
        run.step = step
        if step in skip:
            report.skipped[step] = skip[step]
            return False
        return True

    # create
    start("create")
    desired = run.prepare(case.create)
    create_identity = rt.journal_identity(dict(desired))
    before = run.read(ReadItem(desired, None))
    run.check(run.absent(before), f"the object exists before the create: {before!r} (the "
                                  "test must start from nothing)")
    change = run.plan(desired, before, None)
    run.check(change.action is case.create_action,
              f"the first plan is {change.action.value}, not {case.create_action.value}; "
              f"changes: {_show(change.changes)}")
    record = run.apply(change)
    run.check(record is not None, "apply of a create returned None (the state record)")
    assert record is not None
    if change.action not in (Action.CREATE, Action.REPLACE):
        # an object that was there (a stopped service) and that the create step makes what
        # the configuration asks: tectum counts as its creator (a delete undoes it)
        run.check(rt.takes_over_as_created(change.before, desired),
                  "takes_over_as_created() says tectum did not make the object it made")
    report.done.append("create")

    if start("noop"):
        run.converged(desired, record)
        report.done.append("noop")

    if start("update"):
        assert case.update is not None
        wanted = run.prepare({**case.create, **case.update})
        run.check(rt.identity(wanted) == rt.identity(desired),
                  "the update changes the identity; give one that changes the object in place")
        change = run.plan(wanted, run.read(ReadItem(wanted, record)), record)
        run.check(change.action is case.update_action and bool(change.changes),
                  f"the update is planned as {change.action.value}, not "
                  f"{case.update_action.value}; changes: {_show(change.changes)}")
        new = run.apply(change)
        run.check(new is not None, "apply of an update returned None")
        assert new is not None
        desired, record = wanted, new
        run.converged(desired, record)
        report.done.append("update")

    if start("drift"):
        assert case.tamper is not None
        case.tamper(run.raw, dict(record))
        obs = run.read(ReadItem(desired, record))
        change = run.plan(desired, obs, record)
        run.check(change.action is not Action.NOOP,
                  "a change made by hand is not seen: the plan is a no-op")
        names = [c.name for c in change.changes]
        run.check(case.drift is None or case.drift in names,
                  f"the hand-made change of {case.drift!r} is planned as changes of {names}")
        if case.drift is not None and case.drift in rt.schema.attrs \
                and case.drift not in rt.unobserved and obs is not None:
            run.check(rt.stored(obs).get(case.drift) != record.get(case.drift),
                      f"the read reports {case.drift!r} as state has it: drift cannot be "
                      "reported")
        repaired = run.apply(change)
        run.check(repaired is not None, "applying the repair returned None")
        assert repaired is not None
        record = repaired
        run.converged(desired, record)
        report.done.append("drift")

    if start("import"):
        assert case.import_id is not None
        import_id = case.import_id(dict(record)) if callable(case.import_id) \
            else case.import_id
        item = rt.import_item(import_id)
        run.check(isinstance(item, ReadItem), f"import_item returned {item!r}, not a ReadItem")
        obs = run.read(item)
        run.check(obs is not None and rt.exists(obs),
                  f"import of {import_id!r} finds nothing: {obs!r}")
        assert obs is not None
        run.check(run.observable(obs) == run.observable(record),
                  f"import of {import_id!r} gives {run.observable(obs)!r}, state holds "
                  f"{run.observable(record)!r}")
        imported = rt.stored(obs)
        # the configuration over the imported record plans nothing (unobserved attributes
        # come from the configuration, as after `tectum import` + apply)
        merged = {**imported, **{k: v for k, v in record.items() if k in rt.unobserved}}
        run.converged(desired, merged)
        report.done.append("import")

    if start("journal"):
        for what, ident in (("the create's journal identity", create_identity),
                            ("the record's journal identity", rt.journal_identity(dict(record)))):
            problem = _json_problem(ident)
            run.check(problem is None, f"{what} {ident!r} is not JSON: {problem}")
            obs = run.read(ReadItem(None, dict(ident)))
            run.check(obs is not None and not run.absent(obs),
                      f"{what} {ident!r} does not find the object after a crash")
            assert obs is not None
            run.check(run.observable(obs) == run.observable(record),
                      f"{what} {ident!r} finds {run.observable(obs)!r}, not "
                      f"{run.observable(record)!r}")
        report.done.append("journal")

    if start("delete"):
        obs = run.read(ReadItem(None, record))
        run.check(not run.absent(obs), "the object is not found before its delete")
        change = ResourceChange(run.address, rt.name, Action.DELETE,
                                rt.stored(obs) if obs is not None else None, None,
                                prior=record)
        run.check(run.apply(change) is None, "apply of a delete returned a record, not None")
        report.done.append("delete")

    if start("gone"):
        by_record = run.read(ReadItem(None, record))
        run.check(run.absent(by_record), f"a read by the record finds {by_record!r}")
        by_config = run.read(ReadItem(desired, None))
        run.check(run.absent(by_config), f"a read by the configuration finds {by_config!r}")
        change = run.plan(desired, by_config, None)
        run.check(change.action is case.create_action,
                  f"planning the configuration again gives {change.action.value}, not "
                  f"{case.create_action.value}")
        report.done.append("gone")
    report.calls = list(getattr(run.rec, "calls", []))


def check_engine(case: Case, *, inventory: Inventory | None = None) -> Report:
    """Run ``case`` through the engine (:class:`~tectum.engine.planner.Planner` and
    :func:`~tectum.engine.applier.apply_plan`, state kept in its JSON form between runs): a
    stack declaring the object is planned and applied (create); planned again (every change a
    no-op) and applied with no mutating call and the record unchanged; updated; changed by
    hand (the plan reports the drift, applying it repairs the object); destroyed (a read
    finds nothing). Steps the case skips are skipped. Returns a :class:`Report`; raises
    :class:`ConformanceError`."""
    return run_engine_lifecycle(case, inventory=inventory)


class ResourceTypeSuite:
    """A pytest base class: subclass it in a provider's test module and give a ``case``
    fixture yielding :class:`Case` objects (parametrise it over the provider's types, and
    clean up in it what a failing run leaves)::

        class TestMockKey(ResourceTypeSuite):
            @pytest.fixture(params=["mock_key"])
            def case(self, request, tmp_path):
                yield Case("mock_key", {"name": "k", "value": "1"}, ...)

    Each case runs :func:`check_resource_type` (``test_lifecycle``) and :func:`check_engine`
    (``test_engine``)."""

    def test_lifecycle(self, case: Case) -> None:
        report = check_resource_type(case)
        assert report.done, report

    def test_engine(self, case: Case) -> None:
        check_engine(case)
