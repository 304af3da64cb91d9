"""``MockProvider``: an in-memory provider for tests of the engine and of tools built on it.

Provider ``mock`` offers one resource type, ``mock_key``: a key with a ``name`` (its
identity), a ``value``, and an ``id`` the "server" assigns when the key is created (as a
cloud API assigns an instance id) — so it exercises the paths a natural-key host type does not:
:meth:`~tectum.providers.base.ResourceType.read` finding objects by the id in the prior state
record, a journal identity that carries the id, import by id.

The "server" is a :class:`MockStore`: a dict of objects that records every call made on it
(:attr:`MockStore.calls`, :attr:`MockStore.mutations`), so a test can assert that a no-op plan
and apply made no mutating call. Stores outlive provider instances (a server outlives its
clients): :func:`mock_store` returns the store named by the provider setting ``store``, the
same one across sessions of one process, until :func:`reset_mock_stores`.

Register the provider without an entry point for the duration of a test::

    with registered(MockProvider):          # or the fixture in docs/providers.md
        ...                                 # registry.get("mock_key") works here
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any

from tectum.plans.plan import Action, ResourceChange
from tectum.providers.base import (
    ApplyError,
    Provider,
    ReadError,
    ReadItem,
    ResourceType,
)
from tectum.schema import Attr, Schema
from tectum.testing.recording import Call, CallLog

if TYPE_CHECKING:
    from tectum.config.inventory import Inventory

__all__ = ["MockError", "MockKeyType", "MockProvider", "MockStore", "mock_store",
           "reset_mock_stores"]


class MockError(Exception):
    """A failure the :class:`MockStore` was told to raise (:meth:`MockStore.fail_on`), or a
    call on an object it does not hold."""


class MockStore(CallLog):
    """The in-memory "server" of the mock provider: objects by id, each
    ``{"id", "name", "value"}``.

    Read-only calls: :meth:`list`, :meth:`get`. Mutating calls: :meth:`create`,
    :meth:`update`, :meth:`delete`. Every call is recorded in :attr:`calls`. Tests change
    objects "by hand" (drift) through :attr:`objects` directly, which records nothing.
    Thread-safe."""

    def __init__(self, name: str = "default") -> None:
        self.name = name
        #: the objects by id; edit directly to simulate a change made outside tectum
        self.objects: dict[str, dict[str, Any]] = {}
        self._calls: list[Call] = []
        self._fail: dict[str, str] = {}
        self._lock = threading.RLock()

    # -- recording (calls, mutations: CallLog) ---------------------------------------------
    def fail_on(self, method: str, message: str = "injected failure") -> None:
        """Make the next call of ``method`` raise :class:`MockError` with ``message``."""
        with self._lock:
            self._fail[method] = message

    def _record(self, method: str, mutating: bool, *args: Any) -> None:
        self._calls.append(Call(method, args, {}, mutating))
        message = self._fail.pop(method, None)
        if message is not None:
            raise MockError(f"{method}: {message}")

    # -- the API -------------------------------------------------------------------------
    def list(self) -> list[dict[str, Any]]:
        """Every object (copies), in creation order: one call, as a List/Describe API."""
        with self._lock:
            self._record("list", False)
            return [dict(o) for o in self.objects.values()]

    def get(self, object_id: str) -> dict[str, Any] | None:
        """The object ``object_id`` (a copy), or None."""
        with self._lock:
            self._record("get", False, object_id)
            found = self.objects.get(object_id)
            return dict(found) if found is not None else None

    def create(self, name: str, value: str) -> dict[str, Any]:
        """Make an object; the store assigns its id (``mk-`` and 12 hex digits). Raises
        :class:`MockError` when an object of that name exists (names are unique)."""
        with self._lock:
            self._record("create", True, name, value)
            if any(o["name"] == name for o in self.objects.values()):
                raise MockError(f"create: a key named {name!r} exists already")
            object_id = f"mk-{secrets.token_hex(6)}"
            self.objects[object_id] = {"id": object_id, "name": name, "value": value}
            return dict(self.objects[object_id])

    def update(self, object_id: str, value: str) -> dict[str, Any]:
        """Set the value of ``object_id``. Raises :class:`MockError` when there is none."""
        with self._lock:
            self._record("update", True, object_id, value)
            found = self.objects.get(object_id)
            if found is None:
                raise MockError(f"update: no key has id {object_id!r}")
            found["value"] = value
            return dict(found)

    def delete(self, object_id: str) -> None:
        """Delete ``object_id``; an id that is gone already is no error (idempotent, as
        cloud APIs' deletes usually are)."""
        with self._lock:
            self._record("delete", True, object_id)
            self.objects.pop(object_id, None)

    def __repr__(self) -> str:
        return f"MockStore({self.name!r}, {len(self.objects)} objects)"


_STORES: dict[str, MockStore] = {}
_STORES_LOCK = threading.Lock()


def mock_store(name: str = "default") -> MockStore:
    """The store ``name`` (made on first use): what a mock provider configured with
    ``store = NAME`` talks to."""
    with _STORES_LOCK:
        found = _STORES.get(name)
        if found is None:
            found = _STORES[name] = MockStore(name)
        return found


def reset_mock_stores() -> None:
    """Forget every store (the next :func:`mock_store` call makes a new, empty one)."""
    with _STORES_LOCK:
        _STORES.clear()


class MockKeyType(ResourceType[MockStore]):
    """``mock_key``: ``{"name": str, "value": str}`` desired; stored adds the server-assigned
    ``id``. ``name`` finds the object before it has an id and forces a replace when changed
    (``force_new``); ``value`` is updated in place.

    :meth:`read` makes one ``list`` call for all objects and matches each by the prior
    record's ``id`` when it has one (the object tectum made, even if someone renamed it),
    else by name (an object not yet in state, or a crash-recovery identity from before the
    id was known)."""

    name = "mock_key"
    schema = Schema({
        "name": Attr(str, required=True, identity=True, force_new=True,
                     description="the key's unique name"),
        "value": Attr(str, default="", description="the key's value"),
        "id": Attr(str, computed=True, description="assigned by the store on create"),
    })
    stored_computed = ("id",)

    def journal_identity(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """The name, and the id once the store assigned one."""
        return {"name": attrs.get("name"), "id": attrs.get("id")}

    def import_item(self, import_id: str) -> ReadItem:
        """Import by the store's id (``tectum import mock_key.x mk-...``)."""
        return ReadItem(None, {"id": import_id})

    def read(self, target: MockStore, items: Sequence[ReadItem]
             ) -> list[dict[str, Any] | None]:
        try:
            everything = target.list()
        except MockError as exc:
            raise ReadError(str(exc)) from None
        by_id = {o["id"]: o for o in everything}
        by_name = {o["name"]: o for o in everything}
        out: list[dict[str, Any] | None] = []
        for item in items:
            known_id = (item.prior or {}).get("id")
            if known_id is not None:
                out.append(by_id.get(known_id))
            else:
                out.append(by_name.get(item.attrs.get("name")))
        return out

    def apply(self, target: MockStore, change: ResourceChange) -> dict[str, Any] | None:
        old_id = (change.before or change.prior or {}).get("id")
        try:
            if change.action is Action.DELETE:
                if old_id is not None:
                    target.delete(old_id)
                return None
            after = change.after or {}
            name, value = str(after["name"]), str(after.get("value") or "")
            if change.action is Action.REPLACE and old_id is not None:
                target.delete(old_id)
            if change.action in (Action.CREATE, Action.REPLACE):
                made = target.create(name, value)
            elif old_id is None:
                raise ApplyError(f"{change.address}: no id to update (the key was never made)")
            else:
                made = target.update(old_id, value)
        except MockError as exc:
            raise ApplyError(str(exc)) from None
        return self.stored(made)


class MockProvider(Provider):
    """Provider ``mock``. Settings: ``store`` (which :func:`mock_store` to talk to, default
    ``"default"``), ``concurrency`` (operations at once, default 4). One target per provider,
    whatever the host (:meth:`target_key`)."""

    name = "mock"
    settings = Schema({
        "store": Attr(str, default="default", description="the name of the in-memory store"),
        "concurrency": Attr(int, default=4, description="operations at once on the store"),
    })
    resource_types = {"mock_key": "tectum.testing.mock:MockKeyType"}

    def target(self, host: str | None) -> MockStore:
        return mock_store(str(self.config.get("store") or "default"))

    def made(self, host: str | None) -> MockStore | None:
        return self.target(host)

    @classmethod
    def target_key(cls, host: str | None, inventory: Inventory) -> Hashable:
        """One store for every host: resources on any host share it."""
        return "mock"

    def concurrency(self, target: Any) -> int:
        return int(self.config.get("concurrency") or 4)
