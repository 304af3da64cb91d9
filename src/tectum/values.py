"""References between resources, as values that record the dependency.

``site.path`` (an attribute of a declared resource) is a :class:`Ref`. Used alone as an argument
it stays a reference; inside an f-string, ``str()``, ``+`` or a template it becomes a *token* —
``${tectum:ADDRESS#ATTR}`` — that the planner resolves later (the approach AWS CDK takes with
its tokens, rather than Pulumi's ``Output`` objects that users must ``apply`` to build a string).

A value is *known* when no token is left in it. The planner replaces each token it can resolve;
tokens it cannot (an attribute computed by the provider of a resource that is about to change)
stay in the planned value, which the plan shows as "(known after apply)" and the applier resolves
once the upstream resource has been applied.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

TOKEN_RE = re.compile(r"\$\{tectum:([^}#]+)#([A-Za-z_][A-Za-z0-9_.-]*)\}")

#: the pseudo-addresses of secret values: ``${tectum:secret#NAME}`` is the value of ``NAME`` in
#: the workspace's secrets file; ``${tectum:var#NAME}`` a sensitive variable's value
SECRET = "secret"
SENSITIVE_VAR = "var"
SECRET_SOURCES = (SECRET, SENSITIVE_VAR)


def secrets_in(value: Any) -> set[tuple[str, str]]:
    """The secret tokens (``(source, name)``) inside ``value``: anything derived from one of
    them is sensitive (DESIGN decision 6: secrets are tainted values)."""
    return {(a, n) for a, n in refs_in(value) if a in SECRET_SOURCES}


class _Unknown:
    """The marker a lookup returns when a referenced value is not known yet."""

    _instance: _Unknown | None = None

    def __new__(cls) -> _Unknown:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Any = _Unknown()


def token(address: str, attr: str) -> str:
    return f"${{tectum:{address}#{attr}}}"


class Ref:
    """A reference to attribute ``attr`` of the resource at ``address`` (a string address).

    Formatting (f-strings, ``str()``) and ``+`` with a string give a token string; any other
    operation raises ``TypeError`` because the value is not known while the stack is evaluated.
    """

    __slots__ = ("address", "attr")

    def __init__(self, address: str, attr: str) -> None:
        self.address = address
        self.attr = attr

    def __str__(self) -> str:
        return token(self.address, self.attr)

    def __format__(self, spec: str) -> str:
        return str(self)

    def __repr__(self) -> str:
        return f"Ref({self.address}.{self.attr})"

    def __add__(self, other: object) -> str:
        if isinstance(other, str | Ref):
            return str(self) + str(other)
        return NotImplemented

    def __radd__(self, other: object) -> str:
        if isinstance(other, str):
            return other + str(self)
        return NotImplemented

    def __bool__(self) -> bool:
        raise TypeError(
            f"{self.address}.{self.attr} is a reference whose value is only known when the plan "
            "is made; it cannot be tested with if/and/or while the stack is evaluated"
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ref) and (self.address, self.attr) == (other.address, other.attr)

    def __hash__(self) -> int:
        return hash((self.address, self.attr))


def refs_in(value: Any) -> set[tuple[str, str]]:
    """Every (address, attr) referenced by tokens inside ``value``."""
    found: set[tuple[str, str]] = set()
    _collect(value, found)
    return found


def _collect(value: Any, found: set[tuple[str, str]]) -> None:
    if isinstance(value, str):
        if "${tectum:" in value:
            found.update(TOKEN_RE.findall(value))
    elif isinstance(value, list | tuple):
        for v in value:
            _collect(v, found)
    elif isinstance(value, dict):
        for v in value.values():
            _collect(v, found)
    elif isinstance(value, Ref):
        found.add((value.address, value.attr))


def is_known(value: Any) -> bool:
    """True when no token is left anywhere in ``value``."""
    if isinstance(value, str):
        # text that only looks like a token (``${tectum:-default}`` in a shell script) is data
        return "${tectum:" not in value or TOKEN_RE.search(value) is None
    if isinstance(value, list | tuple):
        return all(is_known(v) for v in value)
    if isinstance(value, dict):
        return all(is_known(v) for v in value.values())
    return True


def _stringify(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def resolve(value: Any, lookup: Callable[[str, str], Any]) -> Any:
    """Replace tokens with ``lookup(address, attr)``; tokens whose lookup is UNKNOWN stay.

    A string that is exactly one token becomes the referenced value itself (keeping its type);
    a token inside a longer string is replaced by the value's text (``true``/``false`` for bools).
    """
    if isinstance(value, str):
        if "${tectum:" not in value:
            return value
        whole = TOKEN_RE.fullmatch(value)
        if whole:
            got = lookup(whole[1], whole[2])
            return value if got is UNKNOWN else got

        def sub(m: re.Match[str]) -> str:
            got = lookup(m[1], m[2])
            return m[0] if got is UNKNOWN else _stringify(got)

        return TOKEN_RE.sub(sub, value)
    if isinstance(value, list | tuple):
        return [resolve(v, lookup) for v in value]
    if isinstance(value, dict):
        return {k: resolve(v, lookup) for k, v in value.items()}
    return value
