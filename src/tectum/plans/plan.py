"""The plan: one :class:`ResourceChange` per resource instance, decided before anything is done.

The applier executes a plan and never re-decides it (OpenTofu's execution-architecture RFC names
re-deciding at apply time as a source of bugs). Values in ``after`` may still hold reference tokens
(see :mod:`tectum.values`); those are "known after apply".
"""

from __future__ import annotations

import enum
from typing import Any, NamedTuple

from tectum.state.model import OWED_KINDS


class Action(enum.Enum):
    NOOP = "no-op"
    CREATE = "create"
    UPDATE = "update"
    REPLACE = "replace"
    DELETE = "delete"
    #: stop managing the object and leave it as it is (Terraform's ``removed`` block with
    #: ``destroy = false``): what tectum found already there is forgotten, not deleted
    FORGET = "forget"

    @property
    def symbol(self) -> str:
        return _SYMBOLS[self]


_SYMBOLS = {
    Action.NOOP: " ",
    Action.CREATE: "+",
    Action.UPDATE: "~",
    Action.REPLACE: "-/+",
    Action.DELETE: "-",
    Action.FORGET: ".",
}


class AttrChange(NamedTuple):
    """One attribute's change: ``before`` → ``after`` (``after`` may hold tokens)."""

    name: str
    before: Any
    after: Any
    force_new: bool = False
    sensitive: bool = False


def _str(data: Any, key: str, *, optional: bool = False) -> Any:
    value = data.get(key) if optional else data[key]
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string")
    return value


def _obj(data: Any, key: str, *, required: bool = False) -> Any:
    value = data[key] if required else data.get(key)
    if value is not None and not isinstance(value, dict):
        raise ValueError(f"{key} must be an object or null")
    return value


def _strs(data: Any, key: str) -> list[str]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{key} must be a list of strings")
    return list(value)


def _attr_change(c: Any) -> AttrChange:
    if not isinstance(c, dict):
        raise ValueError("an attribute change is not an object")
    a = AttrChange(**c)
    if not isinstance(a.name, str) or not isinstance(a.force_new, bool) \
            or not isinstance(a.sensitive, bool):
        raise ValueError("an attribute change has fields of the wrong type")
    return a


class ResourceChange:
    """What the plan decided for one resource instance.

    ``before`` is the object as read from the world (storable attributes) or None when absent;
    ``after`` the desired attributes (None for delete); ``prior`` the state record before this run
    (None when the resource was not in state). ``triggers`` names upstream resources whose change
    causes ``triggered`` (``"restart"`` or ``"reload"``); ``drift`` lists attributes changed
    outside tectum since the last apply (prev-run state vs refreshed object).

    ``origin`` is what state will record about who made the object (``created`` or ``found``,
    :mod:`tectum.state.model`), ``on_destroy`` the resource's setting; ``moved_from`` the old
    address when the plan renames a resource in state (same object); ``interrupted`` lists
    attributes an interrupted run changed (its own changes, not drift). ``restate`` says why
    the state record changes when the object does not (e.g. a new ``on_destroy``); ``owed``
    lists the ``(kind, cause)`` restarts or reloads an earlier run owed, which this change runs.
    """

    __slots__ = ("address", "type", "action", "before", "after", "changes", "triggers",
                 "triggered", "drift", "dependencies", "prior", "source", "note", "display",
                 "watches", "origin", "on_destroy", "moved_from", "interrupted", "restate",
                 "owed")

    def __init__(
        self,
        address: str,
        type: str,
        action: Action,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        changes: list[AttrChange] | None = None,
        triggers: list[str] | None = None,
        triggered: str | None = None,
        drift: list[str] | None = None,
        dependencies: list[str] | None = None,
        prior: dict[str, Any] | None = None,
        source: str | None = None,
        note: str | None = None,
        watches: dict[str, list[str]] | None = None,
        origin: str | None = None,
        on_destroy: str | None = None,
        moved_from: str | None = None,
        interrupted: list[str] | None = None,
        restate: str | None = None,
        owed: list[tuple[str, str]] | None = None,
    ) -> None:
        self.address = address
        self.type = type
        self.action = action
        self.before = before
        self.after = after
        self.changes: list[AttrChange] = changes if changes is not None else []
        self.triggers: list[str] = triggers if triggers is not None else []
        self.triggered = triggered
        self.drift: list[str] = drift if drift is not None else []
        self.dependencies: list[str] = dependencies if dependencies is not None else []
        self.prior = prior
        self.source = source
        self.note = note
        #: restart_on / reload_on addresses of the declaration (kept for rollback)
        self.watches: dict[str, list[str]] = watches if watches is not None else {}
        self.origin = origin
        self.on_destroy = on_destroy
        self.moved_from = moved_from
        self.interrupted: list[str] = interrupted if interrupted is not None else []
        self.restate = restate
        self.owed: list[tuple[str, str]] = owed if owed is not None else []
        # transient display data (e.g. old file content); not saved in plan files
        self.display: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"<ResourceChange {self.action.value} {self.address}>"

    @property
    def state_only(self) -> bool:
        """A no-op for the object whose state record changes: adopted (an object that
        already matches the configuration), moved to a new address, or ``restate``."""
        return self.action is Action.NOOP and (self.prior is None or self.moved_from is not None
                                               or self.restate is not None)

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "type": self.type,
            "action": self.action.value,
            "before": self.before,
            "after": self.after,
            "changes": [
                {"name": c.name, "before": c.before, "after": c.after, "force_new": c.force_new,
                 "sensitive": c.sensitive}
                for c in self.changes
            ],
            "triggers": self.triggers,
            "triggered": self.triggered,
            "drift": self.drift,
            "dependencies": self.dependencies,
            "prior": self.prior,
            "source": self.source,
            "note": self.note,
            "watches": self.watches,
            "origin": self.origin,
            "on_destroy": self.on_destroy,
            "moved_from": self.moved_from,
            "interrupted": self.interrupted,
            "restate": self.restate,
            "owed": [list(o) for o in self.owed],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ResourceChange:
        if not isinstance(data, dict):
            raise ValueError("a resource change is not an object")
        changes = data.get("changes", [])
        if not isinstance(changes, list):
            raise ValueError("changes must be a list")
        watches = data.get("watches") or {}
        if not isinstance(watches, dict) or not all(
                isinstance(v, list) and all(isinstance(x, str) for x in v)
                for v in watches.values()):
            raise ValueError("watches must map names to lists of addresses")
        return cls(
            address=_str(data, "address"),
            type=_str(data, "type"),
            action=Action(data["action"]),
            before=_obj(data, "before", required=True),
            after=_obj(data, "after", required=True),
            changes=[_attr_change(c) for c in changes],
            triggers=_strs(data, "triggers"),
            triggered=_str(data, "triggered", optional=True),
            drift=_strs(data, "drift"),
            dependencies=_strs(data, "dependencies"),
            prior=_obj(data, "prior"),
            source=_str(data, "source", optional=True),
            note=_str(data, "note", optional=True),
            watches=dict(watches),
            origin=_choice(data, "origin", ("created", "found")),
            on_destroy=_choice(data, "on_destroy", ("delete", "forget")),
            moved_from=_str(data, "moved_from", optional=True),
            interrupted=_strs(data, "interrupted"),
            restate=_str(data, "restate", optional=True),
            owed=_owed(data),
        )


def _owed(data: Any) -> list[tuple[str, str]]:
    value = data.get("owed", [])
    if not isinstance(value, list) or not all(
            isinstance(o, list) and len(o) == 2 and o[0] in OWED_KINDS
            and isinstance(o[1], str) for o in value):
        raise ValueError("owed must be a list of [kind, cause] pairs")
    return [(o[0], o[1]) for o in value]


def _choice(data: Any, key: str, allowed: tuple[str, ...]) -> str | None:
    value = data.get(key)
    if value is not None and value not in allowed:
        raise ValueError(f"{key} must be one of {', '.join(allowed)} or null")
    return value if value is None else str(value)


class Plan:
    """Every decision of one run. ``lineage``/``serial`` identify the state it was made from.

    ``hosts_down`` maps each inventory host that could not be read to ``(kind, reason)``, kind
    ``unreachable`` (no answer, connection lost) or ``refused`` (host key, login): its resources
    are not in the plan and their state is kept as it was. ``limit`` is the ``--limit`` host
    list the plan was made for (None: every host)."""

    __slots__ = ("changes", "outputs", "output_sensitive", "lineage", "serial", "destroy",
                 "workspace", "variables", "hosts_down", "limit", "operation")

    def __init__(
        self,
        changes: list[ResourceChange],
        outputs: dict[str, Any],
        output_sensitive: dict[str, bool],
        lineage: str | None,
        serial: int,
        destroy: bool = False,
        workspace: str = "default",
        variables: dict[str, Any] | None = None,
    ) -> None:
        self.changes = changes
        self.outputs = outputs
        self.output_sensitive = output_sensitive
        self.lineage = lineage
        self.serial = serial
        self.destroy = destroy
        self.workspace = workspace
        self.variables: dict[str, Any] = variables if variables is not None else {}
        self.hosts_down: dict[str, tuple[str, str]] = {}
        self.limit: list[str] | None = None
        #: the operation state history records when this plan is applied (``rollback``);
        #: None: ``apply`` (``destroy`` for a destroy plan)
        self.operation: str | None = None

    def counts(self) -> dict[str, int]:
        counts = {"add": 0, "change": 0, "replace": 0, "destroy": 0, "forget": 0, "adopt": 0,
                  "move": 0}
        for c in self.changes:
            if c.state_only:
                counts["move" if c.moved_from else "adopt"] += 1
            if c.action is Action.CREATE:
                counts["add"] += 1
            elif c.action is Action.UPDATE:
                counts["change"] += 1
            elif c.action is Action.REPLACE:
                counts["replace"] += 1
            elif c.action is Action.DELETE:
                counts["destroy"] += 1
            elif c.action is Action.FORGET:
                counts["forget"] += 1
        return counts

    @property
    def has_changes(self) -> bool:
        return any(c.action is not Action.NOOP or c.state_only for c in self.changes)

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": 1,
            "lineage": self.lineage,
            "serial": self.serial,
            "destroy": self.destroy,
            "workspace": self.workspace,
            "variables": self.variables,
            "resource_changes": [c.to_json() for c in self.changes],
            "outputs": self.outputs,
            "output_sensitive": self.output_sensitive,
            "hosts_down": {h: {"kind": k, "reason": r} for h, (k, r) in self.hosts_down.items()},
            "limit": self.limit,
            "operation": self.operation,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        if not isinstance(data, dict):
            raise ValueError("the plan is not an object")
        rcs = data["resource_changes"]
        if not isinstance(rcs, list):
            raise ValueError("resource_changes must be a list")
        serial = data["serial"]
        if not isinstance(serial, int) or isinstance(serial, bool) or serial < 0:
            raise ValueError("serial must be a non-negative integer")
        if not isinstance(data.get("destroy", False), bool) \
                or not isinstance(data.get("workspace", "default"), str):
            raise ValueError("destroy must be true or false, workspace a string")
        for key in ("outputs", "output_sensitive", "variables"):
            if not isinstance(data.get(key, {}), dict):
                raise ValueError(f"{key} must be an object")
        if not all(isinstance(v, bool) for v in data.get("output_sensitive", {}).values()):
            raise ValueError("output_sensitive must map names to true/false")
        down = data.get("hosts_down", {})
        if not isinstance(down, dict) or not all(
                isinstance(v, dict) and isinstance(v.get("kind"), str)
                and isinstance(v.get("reason"), str) for v in down.values()):
            raise ValueError("hosts_down must map hosts to {kind, reason}")
        limit = data.get("limit")
        if limit is not None and (not isinstance(limit, list)
                                  or not all(isinstance(h, str) for h in limit)):
            raise ValueError("limit must be a list of host names")
        plan = cls(
            changes=[ResourceChange.from_json(c) for c in rcs],
            outputs=dict(data.get("outputs", {})),
            output_sensitive=dict(data.get("output_sensitive", {})),
            lineage=_str(data, "lineage", optional=True),
            serial=serial,
            destroy=bool(data.get("destroy", False)),
            workspace=str(data.get("workspace", "default")),
            variables=dict(data.get("variables", {})),
        )
        plan.hosts_down = {h: (v["kind"], v["reason"]) for h, v in down.items()}
        plan.limit = list(limit) if limit is not None else None
        operation = data.get("operation")
        if operation is not None and operation not in ("apply", "destroy", "rollback"):
            raise ValueError("operation must be apply, destroy or rollback")
        plan.operation = operation
        return plan
