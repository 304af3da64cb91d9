"""``random_password``: a password generated once, at the first apply, and kept in state.

Shapes: desired ``{"length": int, "special": bool, "keepers": dict | None}``; stored adds
``result`` (the password: computed, **sensitive** — masked in every output, encrypted at rest,
see :mod:`tectum.secrets.seal`). Changing ``length``, ``special`` or ``keepers`` makes a new
password (Terraform's ``random_password``: every argument forces replacement). Nothing is read
from a host: the object lives in state alone.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Sequence
from typing import Any

from tectum.masking import REDACTOR
from tectum.plans.plan import Action, AttrChange, ResourceChange
from tectum.providers.base import ReadItem, ResourceType
from tectum.schema import Attr, Schema

#: the punctuation a password may hold with ``special`` (shell- and URL-unsafe ones left out)
SPECIAL = "!#%*+,-.:=?@^_~"


def _length(value: Any) -> str | None:
    return None if isinstance(value, int) and 8 <= value <= 1024 else "must be 8 to 1024"


class PasswordType(ResourceType[Any]):
    """A random password (``secrets.choice`` over letters, digits and, with ``special``,
    :data:`SPECIAL`; at least one of each class)."""

    name = "random_password"
    schema = Schema({
        "length": Attr(int, default=24, force_new=True, validate=_length,
                       description="number of characters (8 to 1024)"),
        "special": Attr(bool, default=True, force_new=True,
                        description="include punctuation"),
        "keepers": Attr(dict, force_new=True,
                        description="arbitrary values; a change makes a new password"),
        "result": Attr(str, computed=True, sensitive=True, description="the password"),
    })
    stored_computed = ("result",)

    def read(self, target: Any, items: Sequence[ReadItem]) -> list[dict[str, Any] | None]:
        """Nothing to read: the object is the record in state (see :meth:`plan`), so each item
        reads as its prior record, and as absent when state has none."""
        return [dict(i.prior) if i.prior is not None else None for i in items]

    def plan(self, desired: dict[str, Any], observed: dict[str, Any] | None,
             prior: dict[str, Any] | None) -> tuple[Action, list[AttrChange]]:
        if prior is None or not prior.get("result"):
            return Action.CREATE, [AttrChange("result", None, "(known after apply)",
                                              sensitive=True)]
        changes = [AttrChange(k, prior.get(k), desired.get(k), force_new=True)
                   for k in ("length", "special", "keepers") if prior.get(k) != desired.get(k)]
        return (Action.REPLACE if changes else Action.NOOP), changes

    def apply(self, target: Any, change: ResourceChange) -> dict[str, Any] | None:
        if change.action is Action.DELETE:
            return None
        after = dict(change.after or {})
        length = int(after.get("length") or 24)
        classes = [string.ascii_lowercase, string.ascii_uppercase, string.digits]
        if after.get("special", True):
            classes.append(SPECIAL)
        alphabet = "".join(classes)
        while True:
            value = "".join(secrets.choice(alphabet) for _ in range(length))
            if all(any(ch in cls for ch in value) for cls in classes):
                break
        REDACTOR.add(value)
        return {"length": length, "special": bool(after.get("special", True)),
                "keepers": after.get("keepers"), "result": value}
