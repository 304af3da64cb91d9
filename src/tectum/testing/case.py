"""The shapes the conformance suite shares (:mod:`tectum.testing.conformance` runs a
:class:`Case` through a type's hooks, :mod:`tectum.testing.engine` through the engine; both
report in a :class:`Report` and fail with :class:`ConformanceError`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tectum.plans.plan import Action
from tectum.testing.recording import Call, recording

__all__ = ["STEPS", "Case", "ConformanceError", "Report", "Tamper"]

#: the steps of :func:`check_resource_type`, in order
STEPS = ("create", "noop", "update", "drift", "import", "journal", "delete", "gone")

#: ``tamper(target, record)``: change the object recorded as ``record`` by hand
Tamper = Callable[[Any, dict[str, Any]], None]


class ConformanceError(AssertionError):
    """A resource type broke the contract: the message names the type, the step and what
    was expected."""


@dataclass(frozen=True)
class Case:
    """One object to run through the suite.

    ``type_name``: the resource type; ``create``: its configured attributes (as a stack
    declares them, before ``prepare``); ``update``: attributes merged over ``create`` for the
    update step, planned as ``update_action``; ``tamper(target, record)``: a change made by
    hand to the object (``target`` is the provider's real target, ``record`` the state
    record), seen in the plan as a change of the attribute ``drift`` (any change when None);
    ``import_id``: the ID ``tectum import`` takes (or a function of the record, for a
    server-assigned id); ``create_action``: how the first plan makes the object (CREATE; an
    UPDATE for a service that exists but is stopped); ``gone(observed)``: whether a read
    result means "absent" (default: None, or :meth:`ResourceType.exists` False).

    ``settings``: the provider's ``[providers.NAME]`` settings; ``host``: the host the
    resource is declared on (None: outside a role); ``root``: the project directory (base of
    relative paths); ``record(target)``: the recording view of the target that mutations are
    counted on (default :func:`~tectum.testing.recording.recording`).

    ``skip``: steps that do not apply to this type, each with the reason (a sentence). A
    step without what it needs (``update``, ``tamper``, ``import_id``) must be skipped
    explicitly: an omission is visible in the test, not silent. Raises ``ValueError`` for an
    unknown step or a missing reason."""

    type_name: str
    create: Mapping[str, Any]
    update: Mapping[str, Any] | None = None
    update_action: Action = Action.UPDATE
    tamper: Tamper | None = None
    drift: str | None = None
    import_id: str | Callable[[dict[str, Any]], str] | None = None
    create_action: Action = Action.CREATE
    gone: Callable[[dict[str, Any] | None], bool] | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    host: str | None = None
    root: str = "."
    record: Callable[[Any], Any] = recording
    skip: Mapping[str, str] = field(default_factory=dict)
    label: str | None = None

    def __post_init__(self) -> None:
        unknown = sorted(set(self.skip) - set(STEPS))
        if unknown:
            raise ValueError(f"Case {self.id}: unknown step(s) {unknown} in skip "
                             f"(steps: {', '.join(STEPS)})")
        for step, reason in self.skip.items():
            if not isinstance(reason, str) or not reason.strip():
                raise ValueError(f"Case {self.id}: skipping {step!r} needs a reason")
        for step, needs, value in (("update", "update", self.update),
                                   ("drift", "tamper", self.tamper),
                                   ("import", "import_id", self.import_id)):
            if value is None and step not in self.skip:
                raise ValueError(f"Case {self.id}: give {needs}, or skip {step!r} with the "
                                 "reason it does not apply")

    @property
    def id(self) -> str:
        """A short name for test ids: ``label``, else the type name."""
        return self.label or self.type_name


@dataclass
class Report:
    """What :func:`check_resource_type` did: the steps ``done``, the steps ``skipped`` (with
    their reasons), and every call the type made on its target (``calls``, from the
    recording view when it keeps them)."""

    case: Case
    done: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
