"""Conformance cases of the etcd provider's types, on the test process's etcd server
(``tests.harness.etcd.shared_etcd``), each under a key prefix of its own that is emptied
afterwards.

``etcd_key`` and ``etcd_key_prefix`` run every step. The read-only ``etcd_data_key`` and
``etcd_data_key_prefix`` (data sources) read a key the case puts first: they have no object
of their own, so the create step's "absent before the create" read must find exactly what the
case put and counts as "nothing recorded yet" (:func:`first_read_absent`); a value changed in
etcd is drift, there is nothing to import, and they are never deleted (only forgotten)."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tectum.providers.etcd.client import EtcdClient
from tectum.testing import Case
from tectum.testing.recording import Recorder
from tests.harness.etcd import etcd_space

#: the client's methods that only read
READS = frozenset({"get_keys", "get_prefixes", "prefetch", "forget", "status", "where"})


def record(target: EtcdClient) -> Recorder:
    return Recorder(target, read_only=READS)


def first_read_absent(attr: str, seeded: Any) -> Callable[[dict[str, Any] | None], bool]:
    """``Case.gone`` of a data source, which has no object of its own to create: the first
    read (the create step's "nothing there yet") must find exactly what the case put in etcd
    (``attr`` = ``seeded``; else the check fails, naming what it found) and then counts as
    "nothing recorded yet"; every later read is absent only when it found nothing."""
    calls = [0]

    def gone(observed: dict[str, Any] | None) -> bool:
        calls[0] += 1
        if calls[0] == 1:
            found = None if observed is None else observed.get(attr)
            assert found == seeded, f"the first read found {found!r}, not {seeded!r}"
            return True
        return observed is None

    return gone


@contextmanager
def key_case(tmp: Path) -> Iterator[Case]:
    with etcd_space() as space:
        key = space.key("app/port")

        def tamper(client: EtcdClient, _record: dict[str, Any]) -> None:
            client.put(key, "changed by hand")

        yield Case("etcd_key", {"key": key, "value": "8080"}, update={"value": "8081"},
                   tamper=tamper, drift="value", import_id=key, settings=space.settings,
                   root=str(tmp), record=record)


@contextmanager
def prefix_case(tmp: Path) -> Iterator[Case]:
    with etcd_space() as space:
        prefix = space.key("cfg/")

        def tamper(client: EtcdClient, _record: dict[str, Any]) -> None:
            client.put(prefix + "extra", "written by hand")  # unknown under the prefix

        yield Case("etcd_key_prefix", {"prefix": prefix, "values": {"a": "1", "b": "2"}},
                   update={"values": {"a": "1", "c": "3"}}, tamper=tamper, drift="values",
                   import_id=prefix, settings=space.settings, root=str(tmp), record=record)


@contextmanager
def data_key_case(tmp: Path) -> Iterator[Case]:
    with etcd_space() as space:
        key = space.key("read/dsn")
        first = f"first-{secrets.token_hex(4)}"
        space.server.put(key, first)

        def tamper(client: EtcdClient, _record: dict[str, Any]) -> None:
            client.put(key, f"changed-{secrets.token_hex(4)}")

        yield Case("etcd_data_key", {"key": key}, update={"sensitive": True},
                   gone=first_read_absent("value", first), tamper=tamper,
                   drift="value", settings=space.settings, root=str(tmp), record=record,
                   skip={"import": "a data source is read from its configuration: there "
                                   "is nothing to import"})


@contextmanager
def data_prefix_case(tmp: Path) -> Iterator[Case]:
    with etcd_space() as space:
        prefix = space.key("read/cfg/")
        one = f"one-{secrets.token_hex(4)}"
        space.server.put(prefix + "a", one)

        def tamper(client: EtcdClient, _record: dict[str, Any]) -> None:
            client.put(prefix + "b", f"two-{secrets.token_hex(4)}")

        yield Case("etcd_data_key_prefix", {"prefix": prefix}, update={"sensitive": True},
                   gone=first_read_absent("values", {"a": one}), tamper=tamper,
                   drift="values", settings=space.settings, root=str(tmp), record=record,
                   skip={"import": "a data source is read from its configuration: there "
                                   "is nothing to import"})


BUILDERS = {"etcd_key": key_case, "etcd_key_prefix": prefix_case,
            "etcd_data_key": data_key_case, "etcd_data_key_prefix": data_prefix_case}
MARKS = {name: [pytest.mark.etcd] for name in BUILDERS}
