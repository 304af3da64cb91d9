"""``etcd_key`` and ``etcd_key_prefix``: keys tectum writes in etcd.

``etcd_key`` (one key; the shape of Terraform's ``consul_keys``/``etcd`` community providers)

* ``key`` (identity, forces a new key): any non-empty text without NUL;
* ``value``: text. It is sensitive when it holds a ``secret()`` or refers to a sensitive
  attribute (a generated password in a DSN): masked in every output, sealed in state;
* ``lease_ttl`` (seconds, optional): the key is put with a lease of that TTL, granted by the
  apply and **not kept alive** — tectum is no daemon. When the lease expires etcd deletes the
  key; the next plan reads it as deleted (drift) and puts it again with a new lease. So a
  leased key lives ``lease_ttl`` seconds after each apply that writes it (a registration that
  vanishes when nothing applies it any more). Changing the value or the TTL puts the key with
  a new lease; removing ``lease_ttl`` puts it without one. A key found with a lease tectum did
  not grant reads as ``lease_ttl = 0`` (its TTL unknown). tectum never revokes a lease (a
  lease may hold other keys): a lease left without its key expires by itself;
* computed: ``create_revision``, ``mod_revision`` (etcd's revisions of the key) and
  ``lease_id`` (0: none).

``etcd_key_prefix`` (every key under a prefix; Terraform's ``consul_key_prefix``)

* ``prefix`` (identity, forces a new resource): non-empty text, usually ending in ``/``;
* ``values``: ``{SUBKEY: VALUE}``, the keys ``PREFIX + SUBKEY``. **Authoritative**: a key under
  the prefix that ``values`` does not name is drift, shown in the plan (the ``values`` change
  lists it) and deleted by the apply — only the keys the plan showed, in one transaction with
  the puts. Destroying deletes only the keys tectum wrote (those in state), as the plan says.

Reads: every ``etcd_key`` with one transaction of range reads (keys grouped by directory,
:func:`~tectum.providers.etcd.client.read_ranges`) and every prefix with one transaction of
prefix ranges — a constant number of round trips, however many keys. An ``etcd_key`` under the
prefix of an ``etcd_key_prefix`` in the same stack is refused (each apply would undo the other).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tectum.masking import REDACTOR
from tectum.plans.plan import Action, AttrChange, ResourceChange
from tectum.providers.base import ApplyError, ImplicitKey, ReadError, ReadItem, ResourceType
from tectum.providers.etcd.client import KV, EtcdClient, EtcdError
from tectum.schema import Attr, Schema
from tectum.values import is_known

#: the largest TTL etcd grants (``MaxLeaseTTL``, 9,000,000,000 s)
MAX_TTL = 9_000_000_000


def check_key(value: Any, what: str = "key") -> str | None:
    """Validator of a key or prefix: non-empty text without a NUL byte."""
    if not isinstance(value, str) or not is_known(value):
        return None
    if value == "":
        return f"an etcd {what} cannot be empty (write e.g. \"/app/config/port\")"
    if "\x00" in value:
        return f"an etcd {what} holds no NUL byte"
    return None


def _lease_ttl(value: Any) -> str | None:
    if isinstance(value, int) and not 2 <= value <= MAX_TTL:
        return f"must be 2 to {MAX_TTL} seconds (etcd's lease TTLs)"
    return None


def _values(value: Any) -> str | None:
    if not isinstance(value, dict):
        return None
    for sub, item in value.items():
        if not isinstance(sub, str) or not isinstance(item, str):
            return f"values are {{SUBKEY: VALUE}} strings: {sub!r} = {item!r} is not"
        if "\x00" in sub:
            return f"subkey {sub!r} holds a NUL byte"
    return None


def directory(key: str) -> str:
    """``key`` up to and including its last ``/`` (empty when it has none)."""
    return key[:key.rfind("/") + 1]


def _fail(exc: EtcdError) -> ApplyError:
    return ApplyError(f"{exc} (state keeps what was done; run tectum apply again once etcd "
                      "answers)")


class KeyType(ResourceType[EtcdClient]):
    """One key (see the module docstring): ``Key("port", key="/app/port", value="8080")``."""

    name = "etcd_key"
    schema = Schema({
        "key": Attr(str, required=True, identity=True, force_new=True, validate=check_key,
                    description="the key, e.g. \"/app/config/port\""),
        "value": Attr(str, required=True, description="the value (text)"),
        "lease_ttl": Attr(int, validate=_lease_ttl,
                          description="put the key with a lease of this many seconds (not "
                                      "kept alive: the key goes when it expires, and the "
                                      "next apply puts it again)"),
        "create_revision": Attr(int, computed=True, description="etcd's revision of its "
                                                                "creation"),
        "mod_revision": Attr(int, computed=True, description="etcd's revision of its last "
                                                             "change"),
        "lease_id": Attr(int, computed=True, description="the lease it is attached to (0: "
                                                         "none)"),
    })
    stored_computed = ("create_revision", "mod_revision", "lease_id")

    def prepare(self, attrs: dict[str, Any], base_dir: str) -> dict[str, Any]:
        out = super().prepare(attrs, base_dir)
        for name in ("key", "value", "lease_ttl"):
            if out.get(name) is not None:
                problem = self.schema.attrs[name].check(out[name])
                if problem is not None:
                    raise ValueError(f"Attribute {name!r}: {problem}")
        out.setdefault("lease_ttl", None)
        return out

    def identity_key(self, attrs: dict[str, Any]) -> tuple[Any, ...]:
        return ("etcd_key", attrs.get("key"))

    def part_of(self, attrs: dict[str, Any]) -> tuple[Any, ...] | None:
        """An ``etcd_key_prefix`` of the key's directory manages it whole (refused)."""
        key = attrs.get("key")
        if isinstance(key, str) and directory(key):
            return ("etcd_key_prefix", directory(key))
        return None

    def implicit_keys(self, attrs: dict[str, Any]) -> list[ImplicitKey]:
        key = attrs.get("key")
        return [("etcd_key", key)] if isinstance(key, str) else []

    def managed(self, desired: dict[str, Any]) -> list[str]:
        # (no lease_ttl configured means "no lease": a key found with one is put without it)
        return [k for k in ("key", "value", "lease_ttl")
                if desired.get(k) is not None or k == "lease_ttl"]

    def plan(self, desired: dict[str, Any], observed: dict[str, Any] | None,
             prior: dict[str, Any] | None) -> tuple[Action, list[AttrChange]]:
        action, changes = super().plan(desired, observed, prior)
        if action is Action.CREATE:  # (no lease: nothing to show)
            changes = [c for c in changes if c.after is not None]
        return action, changes

    # -- refresh -------------------------------------------------------------------------
    def read(self, target: EtcdClient, items: Sequence[ReadItem]
             ) -> list[dict[str, Any] | None]:
        """Every key in one transaction (:meth:`EtcdClient.get_keys`). Per item: ``{"key",
        "value", "lease_ttl", "create_revision", "mod_revision", "lease_id"}``, or None when
        the key does not exist (never made, deleted, or its lease expired). Raises
        :class:`ReadError` naming the endpoints when etcd does not answer."""
        keys = [str(i.attrs["key"]) for i in items if isinstance(i.attrs.get("key"), str)]
        try:
            found = target.get_keys(keys)
        except EtcdError as exc:
            raise ReadError(str(exc)) from None
        out: list[dict[str, Any] | None] = []
        for item in items:
            kv = found.get(str(item.attrs.get("key")))
            if kv is None:
                out.append(None)
                continue
            obs = _observed(kv, item.prior)
            if any(isinstance(v, str) and REDACTOR.holds_secret(v)
                   for v in ((item.desired or {}).get("value"),
                             (item.prior or {}).get("value"))):
                obs["_sensitive"] = True
            out.append(obs)
        return out

    def masked_observed(self, observed: dict[str, Any], holds_secret: Any) -> list[str]:
        """A key whose configured value holds a secret: what was read is masked too (a value
        changed by hand)."""
        value = observed.get("value")
        if observed.get("_sensitive") and isinstance(value, str):
            return [value]
        return []

    def masked_values(self, attrs: dict[str, Any], sensitive: set[str]) -> list[str]:
        value = attrs.get("value")
        return [value] if "value" in sensitive and isinstance(value, str) \
            and is_known(value) else []

    # -- apply ---------------------------------------------------------------------------
    def apply(self, target: EtcdClient, change: ResourceChange) -> dict[str, Any] | None:
        """DELETE: delete the key (exactly it, never a range). CREATE / UPDATE: put it (with
        a new lease when ``lease_ttl`` is set). REPLACE (the key changed): delete the old key,
        put the new one. Raises :class:`ApplyError`."""
        try:
            if change.action in (Action.DELETE, Action.REPLACE):
                old = change.prior or change.before or {}
                if isinstance(old.get("key"), str):
                    target.delete_keys([str(old["key"])])
                if change.action is Action.DELETE:
                    return None
            after = dict(change.after or {})
            ttl = after.get("lease_ttl")
            lease = target.grant(int(ttl)) if ttl else 0
            kv = target.put(str(after["key"]), str(after["value"]), lease)
        except EtcdError as exc:
            raise _fail(exc) from None
        return self.stored({**after, "lease_ttl": ttl or None,
                            "create_revision": kv.create_revision,
                            "mod_revision": kv.mod_revision, "lease_id": kv.lease})


def _observed(kv: KV, prior: dict[str, Any] | None) -> dict[str, Any]:
    ttl: int | None = None
    if kv.lease:
        # tectum's own lease (recorded when it put the key) has the TTL it asked for; a lease
        # it did not grant reads as 0 (its TTL is unknown without one more call per lease)
        mine = prior is not None and prior.get("lease_id") == kv.lease
        ttl = int(prior.get("lease_ttl") or 0) if mine and prior is not None else 0
    return {"key": kv.key, "value": kv.value, "lease_ttl": ttl,
            "create_revision": kv.create_revision, "mod_revision": kv.mod_revision,
            "lease_id": kv.lease}


class KeyPrefixType(ResourceType[EtcdClient]):
    """Every key under a prefix (see the module docstring): ``KeyPrefix("app",
    prefix="/app/", values={"port": "8080", "dsn": dsn})``."""

    name = "etcd_key_prefix"
    schema = Schema({
        "prefix": Attr(str, required=True, identity=True, force_new=True,
                       validate=lambda v: check_key(v, "prefix"),
                       description="the prefix, e.g. \"/app/config/\""),
        "values": Attr(dict, required=True, validate=_values,
                       description="{SUBKEY: VALUE}: the keys PREFIX+SUBKEY; any other key "
                                   "under the prefix is deleted"),
    })

    def prepare(self, attrs: dict[str, Any], base_dir: str) -> dict[str, Any]:
        out = super().prepare(attrs, base_dir)
        for name in ("prefix", "values"):
            if out.get(name) is not None:
                problem = self.schema.attrs[name].check(out[name])
                if problem is not None:
                    raise ValueError(f"Attribute {name!r}: {problem}")
        return out

    def identity_key(self, attrs: dict[str, Any]) -> tuple[Any, ...]:
        return ("etcd_key_prefix", attrs.get("prefix"))

    def implicit_keys(self, attrs: dict[str, Any]) -> list[ImplicitKey]:
        prefix, values = attrs.get("prefix"), attrs.get("values")
        if not isinstance(prefix, str):
            return []
        subs = [s for s in values if isinstance(s, str)] if isinstance(values, dict) else []
        out: list[ImplicitKey] = [("etcd_prefix", prefix)]
        return out + [("etcd_key", prefix + s) for s in subs]

    def read(self, target: EtcdClient, items: Sequence[ReadItem]
             ) -> list[dict[str, Any] | None]:
        """Every prefix in one transaction (:meth:`EtcdClient.get_prefixes`). Per item:
        ``{"prefix", "values"}`` with every key under the prefix (the ones tectum did not
        write too: drift); None when no key is under it and state records none."""
        prefixes = [str(i.attrs["prefix"]) for i in items
                    if isinstance(i.attrs.get("prefix"), str)]
        try:
            found = target.get_prefixes(prefixes)
        except EtcdError as exc:
            raise ReadError(str(exc)) from None
        out: list[dict[str, Any] | None] = []
        for item in items:
            prefix = str(item.attrs.get("prefix"))
            kvs = found.get(prefix, {})
            if not kvs and item.prior is None:
                out.append(None)
                continue
            obs: dict[str, Any] = {"prefix": prefix, "values": {
                k[len(prefix):]: kv.value for k, kv in sorted(kvs.items())}}
            out.append(obs)
        return out

    def exists(self, observed: dict[str, Any]) -> bool:
        return bool(observed.get("values"))

    def delete_summary(self, prior: dict[str, Any]) -> str | None:
        subs = sorted(prior.get("values") or {})
        shown = ", ".join(subs[:10]) + (" ..." if len(subs) > 10 else "")
        return (f"deletes the {len(subs)} key(s) it wrote under {prior.get('prefix')}"
                + (f" ({shown})" if subs else "") + "; other keys under the prefix are left")

    def warnings(self, change: ResourceChange) -> list[str]:
        """The keys under the prefix that ``values`` does not name: the apply deletes them
        (what they held is not kept)."""
        if change.action not in (Action.CREATE, Action.UPDATE) or change.before is None:
            return []
        want = (change.after or {}).get("values")
        seen = change.before.get("values") or {}
        if not isinstance(want, dict):
            return []
        extra = sorted(set(seen) - set(want))
        if not extra:
            return []
        shown = ", ".join(extra[:10]) + (" ..." if len(extra) > 10 else "")
        return [f"deletes {len(extra)} key(s) under {change.before.get('prefix')} that values "
                f"does not name ({shown}); their values are not kept"]

    def apply(self, target: EtcdClient, change: ResourceChange) -> dict[str, Any] | None:
        """CREATE / UPDATE: one transaction deleting the keys under the prefix the plan found
        and ``values`` does not name, and putting the values that differ. DELETE: delete the
        keys state records (only those). REPLACE (the prefix changed): both. Raises
        :class:`ApplyError`."""
        try:
            if change.action in (Action.DELETE, Action.REPLACE):
                old = change.prior or {}
                prefix = old.get("prefix")
                if isinstance(prefix, str):
                    target.delete_keys([prefix + s for s in sorted(old.get("values") or {})])
                if change.action is Action.DELETE:
                    return None
            after = dict(change.after or {})
            prefix = str(after["prefix"])
            want: dict[str, str] = dict(after.get("values") or {})
            seen: dict[str, str] = {}
            if change.action is not Action.REPLACE and change.before is not None:
                seen = dict(change.before.get("values") or {})
            extra = [prefix + s for s in sorted(set(seen) - set(want))]
            puts = {prefix + s: v for s, v in sorted(want.items()) if seen.get(s) != v}
            target.commit(puts, extra)
        except EtcdError as exc:
            raise _fail(exc) from None
        return self.stored({"prefix": prefix, "values": want})
