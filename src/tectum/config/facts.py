"""Facts as a stack sees them: ``host.facts`` in a role, ``tectum.facts()`` for this machine.

A :class:`Facts` is a read-only dict with attribute access (``host.facts.os.family`` and
``host.facts["os"]["family"]`` alike), so it works in Python conditionals, f-strings and
template variables (Jinja reads ``facts.os.family`` the same way). Where the facts come from is
the session's business (:class:`FactsSource`): during ``plan``/``apply`` they are the host's
(gathered in the host's one read round trip, or remembered from the last run and checked
against it); during ``validate`` nothing is read, and every fact is :class:`UnknownFact`.

An unknown fact can be formatted (it shows as ``(fact NAME of HOST)``) and reached into
(``.os.family``), but deciding on it — ``if``, ``==``, ``in``, ``len``, iteration — raises
:class:`FactsUnknown`, which :func:`~tectum.apply_role` turns into a warning: the role was
checked up to that point. During ``plan``, asking for the facts of a host that cannot be
reached raises :class:`FactsUnknown` at once: the role stops there for that host, whose
resources are left out of the plan anyway.

Both :class:`FactsNeeded` and :class:`FactsUnknown` derive from ``BaseException``, so a role's
own ``except Exception`` never swallows them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn, Protocol


class FactsSource(Protocol):
    """Where a stack's facts come from (the session). ``facts(host)``: the facts of ``host``
    (None: this machine) as a plain dict, an empty dict when they cannot be read (an
    unreachable host), or None when they must be gathered first; raises nothing."""

    def facts(self, host: str | None) -> dict[str, Any] | None: ...


class FactsNeeded(BaseException):
    """Raised while a stack is evaluated when it asks for facts of a host not gathered yet:
    the session gathers them (one round trip per host, in parallel) and evaluates again."""

    def __init__(self, host: str | None) -> None:
        super().__init__(host)
        self.host = host


class FactsUnknown(BaseException):
    """Raised when a stack decides on a fact that is not known (``validate``; a host that cannot
    be reached). ``name`` is the fact's dotted name, ``host`` its host (None: this machine)."""

    def __init__(self, host: str | None, name: str) -> None:
        super().__init__(f"{name} of {host or 'this machine'}")
        self.host = host
        self.name = name


def _frozen(value: Any) -> Any:
    if isinstance(value, dict) and not isinstance(value, Facts):
        return Facts(value)
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value


class Facts(dict[str, Any]):
    """A read-only dict of facts with attribute access (nested dicts are :class:`Facts` too,
    lists become tuples). An unknown attribute raises ``AttributeError`` naming the known ones.
    It is a ``dict``, so it can be passed whole as a template variable or an output."""

    __slots__ = ()

    def __init__(self, values: Mapping[str, Any] = {}) -> None:  # noqa: B006 - never mutated
        super().__init__({k: _frozen(v) for k, v in values.items()})

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(
                f"no fact {name!r} (facts here: {', '.join(sorted(self))})") from None

    def _read_only(self, *_args: Any, **_kwargs: Any) -> NoReturn:
        raise TypeError("facts are read-only")

    def __reduce__(self) -> tuple[Any, ...]:
        # copy/deepcopy/pickle make a new Facts from a plain dict (never item by item)
        return (Facts, (dict(self),))

    __setitem__ = __delitem__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only
    __setattr__ = _read_only


class UnknownFact:
    """A fact not known yet (see the module docstring). ``UnknownFact(host, "os.family")``."""

    __slots__ = ("_host", "_name")
    _host: str | None
    _name: str

    def __init__(self, host: str | None, name: str = "") -> None:
        object.__setattr__(self, "_host", host)
        object.__setattr__(self, "_name", name)

    def _child(self, key: object) -> UnknownFact:
        return UnknownFact(self._host, f"{self._name}.{key}" if self._name else str(key))

    def __getattr__(self, name: str) -> UnknownFact:
        if name.startswith("__"):
            raise AttributeError(name)
        return self._child(name)

    def __getitem__(self, key: object) -> UnknownFact:
        return self._child(key)

    def get(self, key: object, default: Any = None) -> UnknownFact:
        return self._child(key)

    def _decide(self, *_args: Any) -> NoReturn:
        raise FactsUnknown(self._host, self._name or "facts")

    __bool__ = __len__ = __iter__ = __contains__ = _decide
    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = _decide
    __int__ = __float__ = __index__ = __hash__ = _decide
    keys = items = values = _decide

    def __str__(self) -> str:
        return f"(fact {self._name or 'facts'} of {self._host or 'this machine'})"

    def __format__(self, spec: str) -> str:
        return str(self)

    def __repr__(self) -> str:
        return f"<unknown {self}>"

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise TypeError("facts are read-only")


def facts_of(source: FactsSource | None, host: str | None) -> Facts | UnknownFact:
    """The facts of ``host`` from ``source``: :class:`UnknownFact` when there is no source
    (``validate``). Raises :class:`FactsNeeded` when the source has not gathered them yet,
    :class:`FactsUnknown` when they could not be read (an unreachable host)."""
    if source is None:
        return UnknownFact(host)
    found = source.facts(host)
    if found is None:
        raise FactsNeeded(host)
    if not found:
        # an unreachable host: what its role declares is left out of the plan anyway, so
        # the role stops here (a fact it would carry into a template could not render)
        raise FactsUnknown(host, "facts")
    return Facts(found)
