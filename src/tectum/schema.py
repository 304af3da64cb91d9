"""Attribute schemas of resource types.

Each resource type declares its attributes with :class:`Attr` flags, following Terraform's
provider schema: ``required`` / optional (with a ``default``), ``computed`` (set by the provider,
never by the user), ``sensitive`` (masked in output), ``force_new`` (a change replaces the object:
Terraform's ``RequiresReplace``) and ``identity`` (the attributes that find the object in the world:
a path, a package or user name).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from tectum.values import TOKEN_RE

MISSING: Any = object()

# A validator returns None when the value is acceptable, else a sentence saying what is wrong.
Validator = Callable[[Any], "str | None"]


class Attr(NamedTuple):
    type: type | tuple[type, ...] = str
    required: bool = False
    default: Any = MISSING
    computed: bool = False
    sensitive: bool = False
    force_new: bool = False
    identity: bool = False
    choices: tuple[Any, ...] | None = None
    validate: Validator | None = None
    description: str = ""

    @property
    def type_name(self) -> str:
        types = self.type if isinstance(self.type, tuple) else (self.type,)
        return " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)

    def check(self, value: Any) -> str | None:
        """Return None if ``value`` fits this attribute, else what is wrong (a sentence part).

        Token strings (references) are accepted for any type: they are checked once resolved.
        """
        if isinstance(value, str) and "${tectum:" in value and TOKEN_RE.search(value):
            # holds references: checked again once resolved at plan time
            if str in (self.type if isinstance(self.type, tuple) else (self.type,)):
                return None
            if value.startswith("${tectum:") and value.endswith("}"):
                return None
        types = self.type if isinstance(self.type, tuple) else (self.type,)
        ok = isinstance(value, types) and not (
            isinstance(value, bool) and bool not in types and int in types
        )
        if not ok:
            return f"expected {self.type_name}, got {_describe(value)}"
        if self.choices is not None and value not in self.choices:
            allowed = ", ".join(repr(c) for c in self.choices)
            return f"expected one of {allowed}, got {value!r}"
        if self.validate is not None:
            return self.validate(value)
        return None


_TYPE_NAMES = {str: "string", int: "integer", bool: "boolean", float: "number", list: "list",
               dict: "mapping"}


def _describe(value: Any) -> str:
    name = _TYPE_NAMES.get(type(value), type(value).__name__)
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{name} {text}"


class Schema:
    """The attributes of a resource type, by name; ``identity``, ``settable`` (not computed)
    and ``sensitive`` name subsets of them."""

    __slots__ = ("attrs", "identity", "settable", "sensitive")

    def __init__(self, attrs: Mapping[str, Attr] | None = None) -> None:
        self.attrs: Mapping[str, Attr] = dict(attrs or {})
        self.identity = tuple(k for k, a in self.attrs.items() if a.identity)
        self.settable = tuple(k for k, a in self.attrs.items() if not a.computed)
        self.sensitive = frozenset(k for k, a in self.attrs.items() if a.sensitive)
