"""Typed, immutable addresses with a stable string form.

``ResourceAddress`` names one resource instance: ``TYPE.NAME`` for the local machine
(``file.site``) or ``host["web-1"].TYPE.NAME`` on an inventory host. ``parse()`` and ``str()``
round-trip (Terraform's ``addrs`` package has the same contract).
"""

from __future__ import annotations

import re
from typing import NamedTuple

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_ADDR_RE = re.compile(
    r'^(?:host\["(?P<host>[^"\\]+)"\]\.)?(?P<type>[a-z][a-z0-9_]*)\.(?P<name>[A-Za-z_][A-Za-z0-9_-]*)$'
)


class AddressError(ValueError):
    """A string is not a valid address; the message says which form is expected."""


class ResourceAddress(NamedTuple):
    type: str
    name: str
    host: str | None = None

    def __str__(self) -> str:
        base = f"{self.type}.{self.name}"
        return f'host["{self.host}"].{base}' if self.host else base

    @classmethod
    def parse(cls, text: str) -> ResourceAddress:
        """Parse ``TYPE.NAME`` or ``host["H"].TYPE.NAME``; raises :class:`AddressError`."""
        m = _ADDR_RE.match(text.strip())
        if not m:
            raise AddressError(
                f"{text!r} is not a resource address; expected TYPE.NAME (e.g. file.site) "
                'or host["HOST"].TYPE.NAME'
            )
        return cls(m["type"], m["name"], m["host"])


def valid_name(name: str) -> bool:
    """A resource name: a letter or ``_`` first, then letters, digits, ``_`` or ``-``."""
    return bool(NAME_RE.match(name))
