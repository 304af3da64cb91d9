"""The ``jsonkeys`` provider and its ``jsonkeys_key`` resource type.

A tectum provider written as a third party writes one: it imports only tectum's public
provider contract (:mod:`tectum.providers.base`, :mod:`tectum.schema`,
:mod:`tectum.plans.plan`) and is found through its entry point
(``tectum.providers: jsonkeys = tectum_jsonkeys.provider:JsonKeysProvider``). Walked through
in ``docs/providers.md``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any

from tectum.diagnostics import Diagnostic, DiagnosticError, SourceLocation
from tectum.plans.plan import Action, ResourceChange
from tectum.providers.base import (
    ApplyError,
    Provider,
    ProviderContext,
    ReadError,
    ReadItem,
    ResourceType,
)
from tectum.schema import Attr, Schema
from tectum_jsonkeys.client import JsonKeysClient, JsonKeysError

if TYPE_CHECKING:
    from tectum.config.inventory import Inventory


def _name(value: Any) -> str | None:
    if isinstance(value, str) and (not value or "\x00" in value):
        return "must be a non-empty name without NUL bytes"
    return None


class KeyType(ResourceType[JsonKeysClient]):
    """``jsonkeys_key``: desired ``{"name": str, "value": str}``; the state record adds the
    ``id`` the server assigned. ``name`` finds a key not yet in state (and replaces it when
    changed); ``value`` is updated in place.

    Schema version 1: version 0 records called the name ``key`` (:meth:`upgrade_state`)."""

    name = "jsonkeys_key"
    schema = Schema({
        "name": Attr(str, required=True, identity=True, force_new=True, validate=_name,
                     description="the key's unique name"),
        "value": Attr(str, default="", description="the key's value"),
        "id": Attr(str, computed=True, description="assigned by the server on create"),
    })
    stored_computed = ("id",)
    schema_version = 1

    def describe(self, attrs: dict[str, Any]) -> str:
        return str(attrs.get("name", ""))

    # -- crash recovery and import -------------------------------------------------------
    def journal_identity(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """The name, and the id once the server assigned one: before a create the journal
        holds the name alone, and recovery finds the key by name."""
        return {"name": attrs.get("name"), "id": attrs.get("id")}

    def import_item(self, import_id: str) -> ReadItem:
        """``tectum import jsonkeys_key.api ID`` takes the server's id."""
        return ReadItem(None, {"id": import_id})

    def upgrade_state(self, version: int, attrs: dict[str, Any]) -> dict[str, Any]:
        out = dict(attrs)
        if version < 1 and "key" in out:
            out["name"] = out.pop("key")
        return out

    # -- read, in one call for every key -------------------------------------------------
    def read(self, target: JsonKeysClient, items: Sequence[ReadItem]
             ) -> list[dict[str, Any] | None]:
        """One ``list_keys`` call; each item is found by the ``id`` its prior record holds
        (the key tectum made, even when renamed by hand), else by name."""
        try:
            keys = target.list_keys()
        except JsonKeysError as exc:
            raise ReadError(str(exc)) from None
        by_name = {k["name"]: k for k in keys.values()}
        out: list[dict[str, Any] | None] = []
        for item in items:
            key_id = (item.prior or {}).get("id")
            found = keys.get(key_id) if key_id is not None \
                else by_name.get(item.attrs.get("name"))
            out.append(dict(found) if found is not None else None)
        return out

    # -- apply ---------------------------------------------------------------------------
    def apply(self, target: JsonKeysClient, change: ResourceChange) -> dict[str, Any] | None:
        old_id = (change.before or change.prior or {}).get("id")
        try:
            if change.action is Action.DELETE:
                if old_id is not None:
                    target.delete_key(old_id)
                return None
            after = change.after or {}
            name, value = str(after["name"]), str(after.get("value") or "")
            if change.action is Action.REPLACE and old_id is not None:
                target.delete_key(old_id)
            if change.action in (Action.CREATE, Action.REPLACE):
                made = target.create_key(name, value)
            elif old_id is None:
                raise ApplyError(f"{change.address}: no id to update")
            else:
                made = target.update_key(old_id, value)
        except JsonKeysError as exc:
            raise ApplyError(str(exc)) from None
        return self.stored(made)


class JsonKeysProvider(Provider):
    """Provider ``jsonkeys``. Settings (``[providers.jsonkeys]``, or
    ``TECTUM_PROVIDER_JSONKEYS_PATH``): ``path``, the JSON file (relative to the project).
    One target for every host: the file."""

    name = "jsonkeys"
    settings = Schema({
        "path": Attr(str, required=True, description="the JSON file the keys live in"),
    })
    resource_types = {"jsonkeys_key": "tectum_jsonkeys.provider:KeyType"}

    def __init__(self) -> None:
        super().__init__()
        self._client: JsonKeysClient | None = None
        self._lock = threading.Lock()

    def configure(self, config: dict[str, Any], context: ProviderContext) -> None:
        """Resolve ``path`` against the project; its directory must exist."""
        super().configure(config, context)
        path = os.path.join(context.root, str(config["path"]))
        if not os.path.isdir(os.path.dirname(path) or "."):
            raise DiagnosticError(Diagnostic.error(
                "Invalid provider settings",
                f"Provider 'jsonkeys': the directory of path {config['path']!r} does not "
                "exist.", address="providers.jsonkeys",
                source=SourceLocation(os.path.join(context.root, "tectum.toml"))))
        self.config["path"] = path

    def target(self, host: str | None) -> JsonKeysClient:
        with self._lock:
            if self._client is None:
                self._client = JsonKeysClient(str(self.config["path"]))
            return self._client

    def made(self, host: str | None) -> JsonKeysClient | None:
        return self._client

    @classmethod
    def target_key(cls, host: str | None, inventory: Inventory) -> Hashable:
        """Keys declared on any host live in the one file."""
        return "jsonkeys"

    def concurrency(self, target: Any) -> int:
        """One operation at a time: every call locks the whole file anyway."""
        return 1
