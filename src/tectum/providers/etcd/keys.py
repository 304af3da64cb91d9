"""``etcd_key`` and ``etcd_key_prefix``: keys tectum writes in etcd.

``etcd_key`` (one key; the shape of Terraform's ``consul_keys``/``etcd`` community providers)

* ``key`` (identity, forces a new key): any non-empty text without NUL;
* ``value``: text. It is sensitive when it holds a ``secret()`` or refers to a sensitive
  attribute (a generated password in a DSN): masked in every output (a value found changed by
  hand too), sealed in state;
* ``lease_ttl`` (seconds, optional): the key is put with a lease of that TTL, granted by the
  apply and **not kept alive** — tectum is no daemon. When the lease expires etcd deletes the
  key; the next plan reads it as deleted (drift) and puts it again with a new lease. So a
  leased key lives ``lease_ttl`` seconds after each apply that writes it (a registration that
  vanishes when nothing applies it any more). Changing the value or the TTL puts the key with
  a new lease and revokes tectum's previous one; removing ``lease_ttl`` puts it without one
  (and revokes tectum's). Destroying revokes tectum's lease. tectum's lease ids are derived
  from the key (:func:`~tectum.providers.etcd.client.lease_ids`), so the journal knows them
  before the grant: a grant whose put failed is revoked at once, one left by a killed run is
  revoked by the next run (:meth:`KeyType.sweep_interrupted`). A key found with a lease tectum
  did not grant reads as ``lease_ttl = 0`` (its TTL unknown); such a lease is never revoked;
* computed: ``create_revision``, ``mod_revision`` (etcd's revisions of the key) and
  ``lease_id`` (0: none).

``etcd_key_prefix`` (every key under a prefix; Terraform's ``consul_key_prefix``)

* ``prefix`` (identity, forces a new resource): non-empty text, usually ending in ``/``;
* ``values``: ``{SUBKEY: VALUE}``, the keys ``PREFIX + SUBKEY``. **Authoritative**: a key under
  the prefix that ``values`` does not name is drift, shown in the plan (the ``values`` change
  lists it, and ``deletes`` names it even when the values are sensitive) and deleted by the
  apply — only the keys the plan showed, in one transaction with the puts (by their raw bytes:
  a key that is not UTF-8 too);
* computed ``created``: the subkeys tectum created (absent before it put them). Destroying
  deletes those only, as the plan says; keys that were there before tectum, or written later
  by others, are left. A prefix imported (``tectum import``) is only forgotten.

Values are sensitive when one of them holds a secret: every value is then masked, in what is
read too (a value changed by hand).

Reads: every ``etcd_key`` by its exact key and every prefix by its range, in transactions of
128 reads sent together — one round trip, however many keys. Nested management is refused
when the stack is declared (:mod:`tectum.etcd`): an ``etcd_key`` under the prefix of an
``etcd_key_prefix``, or one prefix under another (each apply would undo the other).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tectum.masking import REDACTOR
from tectum.plans.plan import Action, AttrChange, ResourceChange
from tectum.providers.base import ApplyError, ImplicitKey, ReadError, ReadItem, ResourceType
from tectum.providers.etcd.client import KV, EtcdClient, EtcdError, lease_ids, text
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
    if not exc.unreachable:  # (refused: trying again will not help)
        return ApplyError(f"{exc} (state keeps what was done)")
    return ApplyError(f"{exc} (state keeps what was done; run tectum apply again once etcd "
                      "answers)")


def _holds_secret(*values: Any) -> bool:
    for value in values:
        if isinstance(value, dict):
            if _holds_secret(*value.values()):
                return True
        elif isinstance(value, str) and REDACTOR.holds_secret(value):
            return True
    return False


def own_lease(prior: dict[str, Any] | None) -> int:
    """The lease tectum granted the key recorded as ``prior`` (0: none): a lease recorded
    with the TTL tectum asked for (a lease it did not grant records ``lease_ttl`` 0)."""
    if not prior or not prior.get("lease_ttl"):
        return 0
    lease = prior.get("lease_id")
    return int(lease) if isinstance(lease, int) and lease > 0 else 0


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

    def journal_identity(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """The key, and the ids of the leases tectum may grant it (:func:`lease_ids`): known
        before the grant, so :meth:`sweep_interrupted` finds a lease a killed run left."""
        key = attrs.get("key")
        leases = list(lease_ids(key)) if isinstance(key, str) else []
        return {"key": key, "leases": leases}

    def sweep_interrupted(self, target: EtcdClient,
                          identities: Sequence[dict[str, Any]]) -> None:
        """Revoke each of tectum's leases of an interrupted change that holds no key (granted,
        and the run killed before the put, or the key moved to the next lease); a lease
        holding the key is left (the next plan reads the key). Raises :class:`EtcdError`."""
        for identity in identities:
            for lease in identity.get("leases") or ():
                if isinstance(lease, int) and target.lease_keys(lease) == []:
                    target.revoke(lease)

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
            if _holds_secret((item.desired or {}).get("value"),
                             (item.prior or {}).get("value")):
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
        """DELETE: delete the key (exactly it, never a range) and revoke tectum's lease of it.
        CREATE / UPDATE: put it (with a new lease of tectum's when ``lease_ttl`` is set,
        granted and put in one call), then revoke tectum's previous lease. REPLACE (the key
        changed): delete the old key and revoke its lease, put the new one. Raises
        :class:`ApplyError`."""
        prior = change.prior
        old_lease = own_lease(prior)
        try:
            if change.action in (Action.DELETE, Action.REPLACE):
                old = prior or change.before or {}
                if isinstance(old.get("key"), str):
                    target.delete_keys([str(old["key"])])
                if old_lease:
                    target.revoke(old_lease)
                    old_lease = 0
                if change.action is Action.DELETE:
                    return None
            after = dict(change.after or {})
            key, ttl = str(after["key"]), after.get("lease_ttl")
            if ttl:
                first, second = lease_ids(key)
                lease = second if old_lease == first else first
                kv = target.put_leased(key, str(after["value"]), int(ttl), lease)
            else:
                kv = target.put(key, str(after["value"]))
            if old_lease and old_lease != kv.lease:
                target.revoke(old_lease)  # (the key left it: nothing else goes with it)
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
        "created": Attr(list, computed=True,
                        description="the subkeys tectum created (destroy deletes those)"),
    })
    stored_computed = ("created",)
    #: (what tectum created is its own record, not something etcd holds)
    unobserved = frozenset({"created"})

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

    def takes_over_as_created(self, found: dict[str, Any] | None,
                              desired: dict[str, Any]) -> bool:
        """Always: what tectum "created" is told apart per key (``created``), so destroying
        a prefix that had keys before deletes only the ones tectum made."""
        return True

    def read(self, target: EtcdClient, items: Sequence[ReadItem]
             ) -> list[dict[str, Any] | None]:
        """Every prefix in one round trip (:meth:`EtcdClient.get_prefixes`). Per item:
        ``{"prefix", "values", "created"}`` with every key under the prefix (the ones tectum
        did not write too: drift; ``created`` as state records it); None when no key is under
        it and state records none. A prefix whose values hold a secret is read as sensitive
        (``_sensitive``: every value read is masked)."""
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
            if item.prior is not None and isinstance(item.prior.get("created"), list):
                obs["created"] = list(item.prior["created"])
            if _holds_secret((item.desired or {}).get("values"),
                             (item.prior or {}).get("values")):
                obs["_sensitive"] = True
            out.append(obs)
        return out

    def masked_observed(self, observed: dict[str, Any], holds_secret: Any) -> list[str]:
        """A prefix whose configured values hold a secret: every value read is masked (one
        changed by hand, or written by someone else, may hold another)."""
        values = observed.get("values")
        if observed.get("_sensitive") and isinstance(values, dict):
            return [v for v in values.values() if isinstance(v, str)]
        return []

    def masked_values(self, attrs: dict[str, Any], sensitive: set[str]) -> list[str]:
        values = attrs.get("values")
        if "values" not in sensitive or not isinstance(values, dict):
            return []
        return [v for v in values.values() if isinstance(v, str) and is_known(v)]

    def exists(self, observed: dict[str, Any]) -> bool:
        return bool(observed.get("values"))

    def plan(self, desired: dict[str, Any], observed: dict[str, Any] | None,
             prior: dict[str, Any] | None) -> tuple[Action, list[AttrChange]]:
        """As the default, plus a ``deletes`` line naming the subkeys the apply deletes
        (under the prefix, not in ``values``): shown even when the values are sensitive."""
        action, changes = super().plan(desired, observed, prior)
        extra = _extras(observed, desired)
        if extra and action is not Action.NOOP:
            changes = [*changes, AttrChange("deletes", None, extra)]
        return action, changes

    def delete_summary(self, prior: dict[str, Any]) -> str | None:
        subs = _created(prior)
        shown = ", ".join(subs[:10]) + (" ..." if len(subs) > 10 else "")
        return (f"deletes the {len(subs)} key(s) it created under {prior.get('prefix')}"
                + (f" ({shown})" if subs else "") + "; other keys under the prefix are left")

    def warnings(self, change: ResourceChange) -> list[str]:
        """The keys under the prefix that ``values`` does not name: the apply deletes them
        (what they held is not kept)."""
        if change.action is Action.DELETE:
            return []
        extra = _extras(change.before, change.after)
        if not extra:
            return []
        shown = ", ".join(extra[:10]) + (" ..." if len(extra) > 10 else "")
        return [f"deletes {len(extra)} key(s) under {(change.after or {}).get('prefix')} that "
                f"values does not name ({shown}); their values are not kept"]

    def apply(self, target: EtcdClient, change: ResourceChange) -> dict[str, Any] | None:
        """CREATE / UPDATE: one transaction deleting the keys under the prefix the plan found
        and ``values`` does not name, and putting the values that differ. DELETE: delete the
        keys tectum created (``created``, only those). REPLACE (the prefix changed): both.
        Raises :class:`ApplyError`."""
        gone: set[str] = set()
        try:
            if change.action in (Action.DELETE, Action.REPLACE):
                old = change.prior or {}
                prefix = old.get("prefix")
                if isinstance(prefix, str):
                    target.delete_keys([prefix + s for s in _created(old)])
                    gone = {prefix + s for s in _created(old)}
                if change.action is Action.DELETE:
                    return None
            after = dict(change.after or {})
            prefix = str(after["prefix"])
            want: dict[str, str] = dict(after.get("values") or {})
            before = change.before or {}
            seen: dict[str, str] = {}
            if before.get("prefix") == prefix:  # (what the plan read under this prefix)
                seen = {s: v for s, v in (before.get("values") or {}).items()
                        if prefix + s not in gone}
            extra = _extras(before, after)
            deletes: list[str | bytes] = [prefix + s for s in extra]
            if any("\\" in s for s in extra):
                # (a key that is not UTF-8 was shown escaped: delete it by its bytes)
                shown = set(extra)
                raw = [k for k in target.raw_keys(prefix)
                       if text(k)[len(prefix):] in shown]
                deletes = [k for k in deletes if isinstance(k, str)
                           and k.encode() in raw] + raw
                deletes = list(dict.fromkeys(deletes))
            puts = {prefix + s: v for s, v in sorted(want.items()) if seen.get(s) != v}
            target.commit(puts, deletes)
        except EtcdError as exc:
            raise _fail(exc) from None
        had = set(_created(change.prior)) if change.prior and change.action is not \
            Action.REPLACE else set()
        created = sorted((had & set(want)) | (set(want) - set(seen)))
        return self.stored({"prefix": prefix, "values": want, "created": created})


def _created(prior: dict[str, Any] | None) -> list[str]:
    """The subkeys tectum created under the prefix recorded as ``prior`` (a record without
    ``created``, of an earlier version: every subkey of its values)."""
    if not prior:
        return []
    created = prior.get("created")
    if isinstance(created, list):
        return sorted(str(s) for s in created)
    return sorted(prior.get("values") or {})


def _extras(found: dict[str, Any] | None, want: dict[str, Any] | None) -> list[str]:
    """The subkeys ``found`` under ``want``'s prefix that ``want``'s values do not name."""
    if not found or not want or found.get("prefix") != want.get("prefix"):
        return []
    seen, values = found.get("values"), want.get("values")
    if not isinstance(seen, dict) or not isinstance(values, dict):
        return []
    return sorted(set(seen) - set(values))
