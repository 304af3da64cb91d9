"""etcd resources, as declared in a stack: ``from tectum.etcd import Key, KeyPrefix, DataKey,
DataKeyPrefix``.

=============  ===================================================================================
Key            key, value, lease_ttl; computed: create_revision, mod_revision, lease_id
KeyPrefix      prefix, values {SUBKEY: VALUE} — authoritative: other keys under the prefix are
               deleted (shown in the plan)
DataKey        key, default, sensitive; computed: value, found, mod_revision — a key *read*
               (Terraform's data sources): never changes etcd, its ``value`` is used by others
DataKeyPrefix  prefix, sensitive; computed: values {SUBKEY: VALUE} — every key under a prefix,
               read
=============  ===================================================================================

A value read from etcd, rendered into a file on a host::

    dsn = DataKey("dsn", key="/app/dsn", sensitive=True)
    File("conf", path="/etc/app.conf", template="app.conf.j2", vars={"dsn": dsn.value})

Declaring a ``Key`` under the prefix of a ``KeyPrefix`` (at any depth), or a ``KeyPrefix``
under another's prefix, is an error of the stack ("etcd keys managed twice"): the
authoritative prefix would delete the other's keys in every apply. A ``DataKey`` /
``DataKeyPrefix`` reads again in every apply that changes a ``Key``/``KeyPrefix`` writing what
it reads, on whatever host of a role either is declared (they reach one etcd).

The provider's settings are ``[providers.etcd]`` (``endpoints``, ``timeout``, ``username``
with ``TECTUM_PROVIDER_ETCD_PASSWORD``, TLS files); see ``docs/etcd.md``.
"""

from __future__ import annotations

from typing import Any

from tectum.config.declaration import Declaration, Resource
from tectum.values import is_known

__all__ = ["DataKey", "DataKeyPrefix", "Key", "KeyPrefix"]

_WRITERS = ("etcd_key", "etcd_key_prefix")
_READERS = ("etcd_data_key", "etcd_data_key_prefix")


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and is_known(value) else None


def _writes(writer: Declaration, reader: Declaration) -> bool:
    """Whether ``writer`` (an etcd_key or etcd_key_prefix) writes what ``reader`` (a data key
    or data key prefix) reads (keys whose text is known when the stack is evaluated)."""
    if writer.type == "etcd_key":
        key = _text(writer.attrs.get("key"))
        written: list[str] = [key] if key is not None else []
        under = None
    else:
        under = _text(writer.attrs.get("prefix"))
        written = []
    if reader.type == "etcd_data_key":
        wanted = _text(reader.attrs.get("key"))
        if wanted is None:
            return False
        return wanted in written or (under is not None and wanted.startswith(under))
    prefix = _text(reader.attrs.get("prefix"))
    if prefix is None:
        return False
    return any(k.startswith(prefix) for k in written) or (
        under is not None and (under.startswith(prefix) or prefix.startswith(under)))


def _nested(a: Declaration, b: Declaration) -> str | None:
    """Why writers ``a`` and ``b`` cannot both be declared (a key under an authoritative
    prefix, or a prefix under another: each apply would delete what the other writes), or
    None."""
    def where(d: Declaration) -> tuple[str | None, bool]:
        if d.type == "etcd_key":
            return _text(d.attrs.get("key")), False
        return _text(d.attrs.get("prefix")), True

    (ka, pa), (kb, pb) = where(a), where(b)
    if ka is None or kb is None or not (pa or pb):
        return None
    for (outer, p_outer, d_outer), (inner, d_inner) in (((ka, pa, a), (kb, b)),
                                                        ((kb, pb, b), (ka, a))):
        if p_outer and inner.startswith(outer) and d_inner is not d_outer:
            what = "key" if d_inner.type == "etcd_key" else "prefix"
            return (f"{d_inner.address} writes the {what} {inner!r}, under the prefix "
                    f"{outer!r} that {d_outer.address} manages authoritatively (it deletes "
                    f"every key there its values do not name): each apply would undo the "
                    f"other. Name the key in {d_outer.address}'s values instead, or use "
                    "prefixes that do not contain each other.")
    return None


def _link(made: Declaration) -> None:
    """A data key reads again in every apply that changes what it reads: it watches
    (``run_on``) each ``Key``/``KeyPrefix`` of the stack that writes its key, declared before
    or after it, on whatever host (every host reaches the same etcd) — so its dependants
    never get the value from before that apply. A writer nested under an authoritative
    prefix of another is a diagnostic (:func:`_nested`)."""
    from tectum.config.declaration import current_stack
    from tectum.diagnostics import Diagnostic

    stack = current_stack(str(made.address))
    for other in list(stack.resources.values()):
        if other is made:
            continue
        if made.type in _WRITERS and other.type in _WRITERS:
            if "etcd_key_prefix" not in (made.type, other.type):
                continue  # (two keys: the identity check finds the same key twice)
            why = _nested(made, other)
            if why is not None:
                stack.diagnostics.append(Diagnostic.error(
                    "etcd keys managed twice", why, address=str(made.address),
                    source=made.source))
            continue
        if made.type in _READERS and other.type in _WRITERS:
            reader, writer = made, other
        elif made.type in _WRITERS and other.type in _READERS:
            reader, writer = other, made
        else:
            continue
        if not _writes(writer, reader):
            continue
        watched = reader.watches.setdefault("run_on", [])
        if str(writer.address) not in watched:
            watched.append(str(writer.address))


class _Linked(Resource):
    __slots__ = ()

    def __init__(self, label: str, /, **kwargs: Any) -> None:
        super().__init__(label, **kwargs)
        decl = object.__getattribute__(self, "_decl")
        _link(decl)


class Key(_Linked):
    """One key: ``Key("port", key="/app/port", value="8080")``; ``lease_ttl=60`` puts it with
    a 60 s lease (not kept alive: it goes when the lease expires and the next apply puts it
    again)."""

    type_name = "etcd_key"
    __slots__ = ()


class KeyPrefix(_Linked):
    """Every key under a prefix: ``KeyPrefix("app", prefix="/app/", values={"port":
    "8080"})``; a key under ``/app/`` that ``values`` does not name is deleted."""

    type_name = "etcd_key_prefix"
    __slots__ = ()


class DataKey(_Linked):
    """A key read: ``DataKey("dsn", key="/app/dsn", sensitive=True)``; ``dsn.value`` is its
    value. A missing key is a plan error unless ``default=`` is given or the stack writes it.
    ``run_on=[resource, ...]``: read again in every apply that changes one of them (a
    ``Key``/``KeyPrefix`` of the stack writing the key is watched without being named)."""

    type_name = "etcd_data_key"
    watch_args = ("run_on",)
    __slots__ = ()


class DataKeyPrefix(_Linked):
    """Every key under a prefix, read: ``DataKeyPrefix("cfg", prefix="/app/")``;
    ``cfg.values`` is ``{SUBKEY: VALUE}``. ``run_on`` as for :class:`DataKey`."""

    type_name = "etcd_data_key_prefix"
    watch_args = ("run_on",)
    __slots__ = ()
