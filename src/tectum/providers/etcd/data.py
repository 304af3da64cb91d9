"""``etcd_data_key`` and ``etcd_data_key_prefix``: keys a stack *reads* (Terraform's data
sources, ``data "consul_keys"`` / ``data "consul_key_prefix"``), for service configuration kept
in etcd and used by other resources (a file's template, a container's environment).

They are resource types that never change etcd: their read supplies computed attributes —
``value`` (``values`` for a prefix) — that other resources refer to like any attribute
(``f"dsn={dsn.value}"``, ``vars={"cfg": cfg.values}``), and state keeps what was read.

How a value reaches a dependant, with the engine as it is (no data-source phase of its own;
see ``docs/etcd.md``):

* the first plan (the data key not in state yet) plans it as a **create**: the apply reads the
  key — after every resource of the plan that writes it — and its dependants, shown with
  "(known after apply)", get the value read;
* later plans: a dependant gets the value state holds at once; when the read finds it
  unchanged the data key is a no-op, so 10 plans in a row show no change;
* when the value changed in etcd, the data key plans an **update** of ``value`` (reported as
  drift: it changed outside tectum) to "(known after apply)", and its dependants re-render:
  the apply reads the key again and gives them the value etcd holds then;
* a data key reads again in every apply that changes a ``Key``/``KeyPrefix`` of the stack
  writing what it reads (``tectum.etcd`` links them with ``run_on``), so a dependant never
  keeps the value from before that apply;
* a key that does not exist is a plan error naming it — unless ``default`` is set, or a
  resource of the stack writes it (the data key then depends on it).

``sensitive = True`` makes what is read secret: masked in every output (also inside the
contents built from it) and sealed in state. Values shorter than 4 characters cannot be
masked (``tectum.masking``). A data key is never deleted: when it leaves the configuration it
is only forgotten.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tectum.masking import REDACTOR
from tectum.plans.plan import Action, AttrChange, ResourceChange
from tectum.providers.base import (
    ApplyError,
    ImplicitKey,
    ReadError,
    ReadItem,
    ResourceType,
)
from tectum.providers.etcd.client import EtcdClient, EtcdError
from tectum.providers.etcd.keys import check_key
from tectum.schema import Attr, Schema
from tectum.values import token

#: the planned value of an attribute read at apply time: a reference token, which the plan
#: views show as "(known after apply)"
KNOWN_AFTER_APPLY = token("etcd", "read")


class _ReadOnly(ResourceType[EtcdClient]):
    """What both data types share: a plan that only follows what was read, never deleting."""

    deletable = False
    drift_attrs = frozenset({"value", "values"})
    #: what and how to read is configuration, not something etcd holds
    unobserved = frozenset({"key", "prefix", "default", "sensitive"})
    #: the computed attribute holding what was read
    read_attr = "value"
    #: the attribute saying what is read (not an identity: several data keys may read one
    #: key, and reading another key is an update of the read, not a new object)
    where = "key"

    def prepare(self, attrs: dict[str, Any], base_dir: str) -> dict[str, Any]:
        out = super().prepare(attrs, base_dir)
        for name, spec in self.schema.attrs.items():
            if not spec.computed and out.get(name) is not None:
                problem = spec.check(out[name])
                if problem is not None:
                    raise ValueError(f"Attribute {name!r}: {problem}")
        return out

    def plan(self, desired: dict[str, Any], observed: dict[str, Any] | None,
             prior: dict[str, Any] | None) -> tuple[Action, list[AttrChange]]:
        """Not in state: CREATE (the apply reads the key, after the resources of the plan that
        write it). Absent but in state (a key deleted, to be written again by a resource of
        the stack): UPDATE, the value known after apply. Found and in state: an UPDATE when
        the configuration or what was read changed (read again by the apply), else a
        no-op."""
        hidden = bool(desired.get("sensitive"))
        attr = self.read_attr
        if observed is None or prior is None:
            # (the first read is made by the apply, after what the plan writes before it)
            change = AttrChange(attr, (prior or {}).get(attr), KNOWN_AFTER_APPLY,
                                sensitive=hidden)
            return (Action.CREATE if prior is None else Action.UPDATE), [change]
        if prior is not None and prior.get(self.where) != desired.get(self.where):
            # (another key to read: read by the apply)
            return Action.UPDATE, [
                AttrChange(self.where, prior.get(self.where), desired.get(self.where)),
                AttrChange(attr, prior.get(attr), KNOWN_AFTER_APPLY, sensitive=hidden)]
        changes: list[AttrChange] = []
        if prior is not None:
            # (the configuration of a read is not in etcd: compared with what state holds)
            changes = [AttrChange(k, prior.get(k), desired.get(k))
                       for k in self.schema.settable
                       if prior.get(k) != desired.get(k)]
        if prior is not None and prior.get(attr) != observed.get(attr):
            # (the apply reads again, after what this plan writes: its value is known then)
            changes.append(AttrChange(attr, prior.get(attr), KNOWN_AFTER_APPLY,
                                      sensitive=hidden or bool(prior.get("sensitive"))))
        return (Action.UPDATE if changes else Action.NOOP), changes

    def _repointed(self, item: ReadItem, observed: dict[str, Any] | None
                   ) -> dict[str, Any] | None:
        """A read whose configuration now names another key (prefix) than state recorded:
        what it finds is no change of the old one (not drift), so only its configuration is
        reported; the plan reads it anew."""
        if observed is None or item.prior is None or item.desired is None \
                or item.prior.get(self.where) == item.desired.get(self.where):
            return observed
        return {k: v for k, v in observed.items() if not self.schema.attrs[k].computed}

    def journal_identity(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """What the read reads (a data source has no identity: several may read one key)."""
        return {self.where: attrs.get(self.where)}

    def describe(self, attrs: dict[str, Any]) -> str:
        return str(attrs.get(self.where) or "")

    def takes_over_as_created(self, found: dict[str, Any] | None,
                              desired: dict[str, Any]) -> bool:
        """Always: what a data source "makes" is its record (it is only ever forgotten)."""
        return True

    def masked_observed(self, observed: dict[str, Any], holds_secret: Any) -> list[str]:
        return _secrets(observed, self.read_attr)

    def masked_values(self, attrs: dict[str, Any], sensitive: set[str]) -> list[str]:
        return _secrets(attrs, self.read_attr)

    def delete_summary(self, prior: dict[str, Any]) -> str | None:
        return "a read-only data source: etcd is not changed"


def _secrets(attrs: dict[str, Any], attr: str) -> list[str]:
    if not attrs.get("sensitive"):
        return []
    value = attrs.get(attr)
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [v for v in value.values() if isinstance(v, str)]
    return []


def _register(attrs: dict[str, Any], attr: str) -> None:
    for value in _secrets(attrs, attr):
        REDACTOR.add(value)


class DataKeyType(_ReadOnly):
    """One key read (see the module docstring): ``DataKey("dsn", key="/app/dsn",
    sensitive=True)``; refer to ``dsn.value``."""

    name = "etcd_data_key"
    schema = Schema({
        "key": Attr(str, required=True, validate=check_key, description="the key to read"),
        "default": Attr(str, description="the value when the key does not exist (else "
                                         "a missing key is an error)"),
        "sensitive": Attr(bool, default=False,
                          description="what is read is secret: masked, sealed in state"),
        "value": Attr(str, computed=True, description="the value read"),
        "found": Attr(bool, computed=True, description="whether the key exists (false: "
                                                       "value is the default)"),
        "mod_revision": Attr(int, computed=True, description="etcd's revision of the "
                                                             "key's last change (0: none)"),
    })
    stored_computed = ("value", "found", "mod_revision")

    def implicit_needs(self, attrs: dict[str, Any]) -> list[list[ImplicitKey]]:
        key = attrs.get("key")
        return [[("etcd_key", key)]] if isinstance(key, str) else []

    def read(self, target: EtcdClient, items: Sequence[ReadItem]
             ) -> list[dict[str, Any] | None]:
        """Every key in one transaction. Per item ``{"key", "default", "sensitive", "value",
        "found", "mod_revision"}``; a missing key reads as its ``default`` (``found``
        false), or None without one."""
        keys = [str(i.attrs["key"]) for i in items if isinstance(i.attrs.get("key"), str)]
        try:
            found = target.get_keys(keys)
        except EtcdError as exc:
            raise ReadError(str(exc)) from None
        return [self._repointed(item, self._observed(item.attrs,
                                                     found.get(str(item.attrs.get("key")))))
                for item in items]

    def _observed(self, attrs: dict[str, Any], kv: Any) -> dict[str, Any] | None:
        base = {"key": attrs.get("key"), "default": attrs.get("default"),
                "sensitive": bool(attrs.get("sensitive"))}
        if kv is not None:
            return {**base, "value": kv.value, "found": True, "mod_revision": kv.mod_revision}
        if attrs.get("default") is not None:
            return {**base, "value": attrs["default"], "found": False, "mod_revision": 0}
        return None

    def missing(self, target: EtcdClient, items: Sequence[ReadItem]
                ) -> list[list[tuple[ImplicitKey | None, str]]]:
        """A key that does not exist and has no ``default``: a plan error, unless a resource
        of the stack writes it (``("etcd_key", KEY)``)."""
        keys = [str(i.desired["key"]) for i in items
                if i.desired is not None and isinstance(i.desired.get("key"), str)]
        try:
            found = target.get_keys(keys)  # (what begin_read fetched: no round trip)
        except EtcdError:
            return [[] for _ in items]
        out: list[list[tuple[ImplicitKey | None, str]]] = []
        for item in items:
            want = item.desired
            if want is None or want.get("default") is not None \
                    or str(want.get("key")) in found:
                out.append([])
                continue
            key = str(want.get("key"))
            out.append([(("etcd_key", key),
                         f"etcd has no key {key!r} to read: write it first, declare it "
                         "(etcd_key), or give the data key a default")])
        return out

    def apply(self, target: EtcdClient, change: ResourceChange) -> dict[str, Any] | None:
        """Read the key again (the value etcd holds when the apply runs) and return it;
        nothing in etcd changes. Raises :class:`ApplyError` when it does not exist and has no
        default."""
        if change.action is Action.DELETE:
            return None
        after = dict(change.after or {})
        try:
            kv = target.get_keys([str(after["key"])]).get(str(after["key"]))
        except EtcdError as exc:
            raise ApplyError(str(exc)) from None
        obs = self._observed(after, kv)
        if obs is None:
            raise ApplyError(f"etcd has no key {after['key']!r} to read: write it first, "
                             "declare it (etcd_key), or give the data key a default")
        _register(obs, "value")
        return self.stored(obs)


class DataKeyPrefixType(_ReadOnly):
    """Every key under a prefix, read (see the module docstring): ``DataKeyPrefix("cfg",
    prefix="/app/config/")``; ``cfg.values`` is ``{SUBKEY: VALUE}`` (empty when no key is
    under the prefix)."""

    name = "etcd_data_key_prefix"
    read_attr = "values"
    where = "prefix"
    schema = Schema({
        "prefix": Attr(str, required=True, validate=lambda v: check_key(v, "prefix"),
                       description="the prefix to read, e.g. \"/app/config/\""),
        "sensitive": Attr(bool, default=False,
                          description="what is read is secret: masked, sealed in state"),
        "values": Attr(dict, computed=True, description="{SUBKEY: VALUE} of every key "
                                                        "under the prefix"),
    })
    stored_computed = ("values",)

    def implicit_needs(self, attrs: dict[str, Any]) -> list[list[ImplicitKey]]:
        prefix = attrs.get("prefix")
        return [[("etcd_prefix", prefix)]] if isinstance(prefix, str) else []

    def read(self, target: EtcdClient, items: Sequence[ReadItem]
             ) -> list[dict[str, Any] | None]:
        """Every prefix in one transaction: per item ``{"prefix", "sensitive", "values"}``."""
        prefixes = [str(i.attrs["prefix"]) for i in items
                    if isinstance(i.attrs.get("prefix"), str)]
        try:
            found = target.get_prefixes(prefixes)
        except EtcdError as exc:
            raise ReadError(str(exc)) from None
        return [self._repointed(item, self._observed(
            item.attrs, found.get(str(item.attrs.get("prefix")), {}))) for item in items]

    @staticmethod
    def _observed(attrs: dict[str, Any], kvs: dict[str, Any]) -> dict[str, Any]:
        prefix = str(attrs.get("prefix"))
        return {"prefix": prefix, "sensitive": bool(attrs.get("sensitive")),
                "values": {k[len(prefix):]: kv.value for k, kv in sorted(kvs.items())}}

    def apply(self, target: EtcdClient, change: ResourceChange) -> dict[str, Any] | None:
        """Read the prefix again and return what it holds; nothing in etcd changes."""
        if change.action is Action.DELETE:
            return None
        after = dict(change.after or {})
        prefix = str(after["prefix"])
        try:
            kvs = target.get_prefixes([prefix]).get(prefix, {})
        except EtcdError as exc:
            raise ApplyError(str(exc)) from None
        obs = self._observed(after, kvs)
        _register(obs, "values")
        return self.stored(obs)
