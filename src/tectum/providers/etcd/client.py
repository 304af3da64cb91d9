"""The target of the ``etcd`` provider: an etcd v3 cluster, reached with ``aetcd``.

``aetcd`` is asyncio-based (gRPC's ``grpc.aio``); tectum's resource types are synchronous and
called from the engine's worker threads. :class:`EtcdClient` therefore runs one event loop in a
dedicated thread (``tectum-etcd``) for the whole session: every call is a coroutine submitted
to that loop (:func:`asyncio.run_coroutine_threadsafe`) and waited on for ``timeout`` seconds
(plus a margin); :meth:`EtcdClient.close` closes the gRPC channel and stops the loop. gRPC
objects never leave the loop's thread.

Endpoints are tried in order: the first one that answers is used until it fails to answer,
then the next ones are tried (etcd's own clients balance over the endpoints; one answering
member is all tectum needs, since every member serves linearizable reads and writes).
When none answers, the call raises :class:`EtcdError` naming every endpoint.

Reads never mutate: :meth:`get_keys` finds any number of keys in one transaction of range
reads (keys grouped by their directory, see :func:`read_ranges`), :meth:`get_prefixes` every
key under several prefixes in one transaction, and :meth:`prefetch` both at once — the whole
refresh of a plan in one round trip. Changes are :meth:`put`, :meth:`delete_keys`,
:meth:`commit` (puts and deletes in one transaction), :meth:`grant` and :meth:`revoke` of
leases.
"""

from __future__ import annotations

import asyncio
import importlib
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, NamedTuple, TypeVar

#: etcd's default limit of operations in one transaction (``--max-txn-ops``)
MAX_TXN_OPS = 128

R = TypeVar("R")


class EtcdError(Exception):
    """An etcd call failed; the message is a sentence for the user (never a value)."""


class KV(NamedTuple):
    """One key as etcd holds it (``mvccpb.KeyValue``); ``key`` and ``value`` as text."""

    key: str
    value: str
    create_revision: int
    mod_revision: int
    version: int
    lease: int


def text(data: bytes) -> str:
    """A key or value read from etcd as text (UTF-8; bytes that are not UTF-8 are escaped as
    ``\\xNN``, so such a value never equals a configured one and is rewritten)."""
    return data.decode("utf-8", "backslashreplace")


def prefix_end(prefix: bytes) -> bytes:
    """The end of the range of every key starting with ``prefix`` (etcd's
    ``GetPrefixRangeEnd``): the prefix with its last byte below 0xff incremented; ``\\0``
    (every key) when there is none."""
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[:i + 1])
    return b"\0"


def read_ranges(keys: Sequence[str]) -> list[tuple[str, bool]]:
    """The range reads that find every key of ``keys`` at once: ``(start, is_prefix)`` pairs.
    Keys are grouped by their directory (the text up to their last ``/``), and one prefix
    range covers a directory and every directory below it; a key without a directory (no
    ``/``, or only a leading one) is read alone, so a read never scans the whole key space."""
    dirs: set[str] = set()
    singles: set[str] = set()
    for key in keys:
        cut = key.rfind("/")
        directory = key[:cut + 1] if cut > 0 else ""
        if directory.strip("/"):
            dirs.add(directory)
        else:
            singles.add(key)
    kept: list[str] = []
    for d in sorted(dirs):  # (a directory sorts right after a directory above it)
        if kept and d.startswith(kept[-1]):
            continue
        kept.append(d)
    out = [(d, True) for d in kept]
    out += [(k, False) for k in sorted(singles)
            if not any(k.startswith(d) for d in kept)]
    return out


def _kv(kv: Any) -> KV:
    return KV(text(kv.key), text(kv.value), int(kv.create_revision), int(kv.mod_revision),
              int(kv.version), int(kv.lease))


class EtcdClient:
    """A session's connection to one etcd cluster (see the module docstring).

    ``endpoints``: ``host:port`` strings; ``timeout``: seconds per call; ``username`` and
    ``password``: etcd authentication (both or neither); ``ca_cert``, ``cert``, ``key``:
    paths of PEM files for TLS (``ca_cert`` alone: server authentication; with ``cert`` and
    ``key``: client certificates too)."""

    def __init__(self, endpoints: Sequence[str], *, timeout: float = 5.0,
                 username: str | None = None, password: str | None = None,
                 ca_cert: str | None = None, cert: str | None = None,
                 key: str | None = None) -> None:
        self.endpoints = list(endpoints)
        self.timeout = float(timeout)
        self._username = username
        self._password = password
        self._tls = (ca_cert, cert, key) if (ca_cert or cert or key) else None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._clients: dict[str, Any] = {}
        self._current = 0
        self._lock = threading.Lock()
        #: ``(kind, reason)`` after no endpoint answered (see :meth:`EtcdProvider.down`)
        self.unreachable: tuple[str, str] | None = None
        #: round trips made (reads and changes), for tests and benchmarks
        self.round_trips = 0
        self._snapshot: tuple[frozenset[str], frozenset[str], dict[str, KV]] | None = None

    @property
    def where(self) -> str:
        """The endpoints, for messages: ``127.0.0.1:2379, 127.0.0.1:22379``."""
        return ", ".join(self.endpoints)

    # -- the loop thread ------------------------------------------------------------------
    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="tectum-etcd",
                                          daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def _run(self, make: Callable[[], Awaitable[R]]) -> R:
        loop = self._ensure_loop()

        async def call() -> R:
            return await make()

        future = asyncio.run_coroutine_threadsafe(call(), loop)
        # (each endpoint may take its timeout, and a connect its own)
        limit = self.timeout * (len(self.endpoints) + 2) + 5
        try:
            return future.result(limit)
        except FutureTimeout:
            future.cancel()
            raise EtcdError(f"etcd at {self.where} did not answer within {limit:g} s"
                            ) from None

    def _client(self, endpoint: str) -> Any:
        """The aetcd client of ``endpoint`` (made in the loop's thread, on first use)."""
        found = self._clients.get(endpoint)
        if found is None:
            host, _, port = endpoint.rpartition(":")
            found = _make_client(host.strip("[]"), int(port), self.timeout, self._username,
                                 self._password, self._tls)
            self._clients[endpoint] = found
        return found

    def call(self, what: str, op: Callable[[Any], Awaitable[R]]) -> R:
        """Run ``op(client)`` on the first endpoint that answers (the one that answered last
        first). Raises :class:`EtcdError` naming ``what`` and the endpoints."""
        import aetcd.exceptions as errors

        async def attempt() -> R:
            order = list(range(self._current, len(self.endpoints))) + \
                list(range(self._current))
            failures: list[str] = []
            for i in order:
                endpoint = self.endpoints[i]
                try:
                    result = await op(self._client(endpoint))
                except (errors.ConnectionFailedError, errors.ConnectionTimeoutError) as exc:
                    failures.append(f"{endpoint}: {_reason(exc)}")
                    await self._drop(endpoint)
                    continue
                except errors.UnauthenticatedError as exc:
                    raise EtcdError(f"etcd at {endpoint} refused the credentials "
                                    f"({_reason(exc)}): check [providers.etcd] username and "
                                    "TECTUM_PROVIDER_ETCD_PASSWORD") from None
                except errors.ClientError as exc:
                    if "permission denied" in str(exc):
                        raise EtcdError(
                            f"etcd at {endpoint} refused to {what}: {_reason(exc)} (grant the "
                            "user a role with access to these keys)") from None
                    if "authentication failed" in str(exc):
                        raise EtcdError(
                            f"etcd at {endpoint} refused the credentials ({_reason(exc)}): "
                            "check [providers.etcd] username and "
                            "TECTUM_PROVIDER_ETCD_PASSWORD") from None
                    raise EtcdError(f"etcd at {endpoint}: {what} failed: {_reason(exc)}"
                                    ) from None
                self._current = i
                self.unreachable = None
                return result
            reason = (f"etcd is unreachable at {self.where} ({'; '.join(failures)}) while "
                      f"trying to {what}: start it, or fix [providers.etcd] endpoints")
            self.unreachable = ("unreachable", reason)
            raise EtcdError(reason)

        self.round_trips += 1
        return self._run(attempt)

    async def _drop(self, endpoint: str) -> None:
        client = self._clients.pop(endpoint, None)
        if client is not None:
            try:
                await client.close()
            except Exception:  # noqa: BLE001 - a broken channel closes as it can
                pass

    def close(self) -> None:
        """Close every channel and stop the loop thread (idempotent)."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None:
            return

        async def shut() -> None:
            for endpoint in list(self._clients):
                await self._drop(endpoint)

        try:
            asyncio.run_coroutine_threadsafe(shut(), loop).result(10)
        except Exception:  # noqa: BLE001 - closing never fails the run
            pass
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(10)
        loop.close()

    # -- reads (never mutating) ------------------------------------------------------------
    def status(self) -> str:
        """The version of the etcd that answers (one Status call)."""
        async def op(c: Any) -> str:
            return str((await c.status()).version)
        return self.call("read the server's status", op)

    def prefetch(self, keys: Sequence[str], prefixes: Sequence[str]) -> None:
        """Read ``keys`` and every key under ``prefixes`` in one transaction of range reads
        (the plan's refresh of every etcd resource: :meth:`EtcdProvider.begin_read`); until
        :meth:`forget`, :meth:`get_keys` and :meth:`get_prefixes` of those are answered from
        it without a round trip."""
        unique = sorted(set(prefixes))
        ranges = read_ranges(sorted(set(keys))) + [(p, True) for p in unique]
        found = self._ranges(ranges, "read keys") if ranges else {}
        self._snapshot = (frozenset(keys), frozenset(unique), found)

    def forget(self) -> None:
        """Drop what :meth:`prefetch` read."""
        self._snapshot = None

    def get_keys(self, keys: Sequence[str]) -> dict[str, KV]:
        """Every key of ``keys`` that exists, by key, read in one transaction of range reads
        (:func:`read_ranges`; more than :data:`MAX_TXN_OPS` ranges take one transaction per
        that many), or from what :meth:`prefetch` read. Keys found under a range but not asked
        for are left out."""
        wanted = set(keys)
        if not wanted:
            return {}
        snapshot = self._snapshot
        if snapshot is not None and wanted <= snapshot[0]:
            found = snapshot[2]
        else:
            found = self._ranges(read_ranges(sorted(wanted)), "read keys")
        return {k: kv for k, kv in found.items() if k in wanted}

    def get_prefixes(self, prefixes: Sequence[str]) -> dict[str, dict[str, KV]]:
        """Every key under each prefix of ``prefixes`` (by prefix, then by key), in one
        transaction of range reads, or from what :meth:`prefetch` read."""
        unique = sorted(set(prefixes))
        if not unique:
            return {}
        snapshot = self._snapshot
        if snapshot is not None and set(unique) <= snapshot[1]:
            found = snapshot[2]
        else:
            found = self._ranges([(p, True) for p in unique], "read key prefixes")
        return {p: {k: kv for k, kv in found.items() if k.startswith(p)} for p in unique}

    def _ranges(self, ranges: Sequence[tuple[str, bool]], what: str) -> dict[str, KV]:
        out: dict[str, KV] = {}
        for at in range(0, len(ranges), MAX_TXN_OPS):
            chunk = ranges[at:at + MAX_TXN_OPS]

            async def op(c: Any, chunk: Sequence[tuple[str, bool]] = chunk
                         ) -> list[list[Any]]:
                gets = []
                for start, is_prefix in chunk:
                    raw = start.encode()
                    gets.append(c.transactions.get(raw, prefix_end(raw) if is_prefix
                                                   else None))
                _ok, responses = await c.transaction(compare=[], success=gets, failure=[])
                return [[kv for _value, kv in r] for r in responses]

            for kvs in self.call(what, op):
                for kv in kvs:
                    item = _kv(kv)
                    out[item.key] = item
        return out

    # -- changes ---------------------------------------------------------------------------
    def put(self, key: str, value: str, lease: int = 0) -> KV:
        """Put ``key`` = ``value`` (attached to ``lease``; 0: none) and read it back in the
        same transaction: the key as etcd now holds it."""
        async def op(c: Any) -> Any:
            raw = key.encode()
            _ok, responses = await c.transaction(
                compare=[], failure=[],
                success=[c.transactions.put(raw, value.encode(), lease=lease or None),
                         c.transactions.get(raw)])
            return responses[-1][0][1]
        return _kv(self.call(f"put key {key!r}", op))

    def commit(self, puts: Mapping[str, str], deletes: Sequence[str]) -> dict[str, KV]:
        """Delete ``deletes`` and put ``puts`` in one transaction (more than
        :data:`MAX_TXN_OPS` operations take several), then read the put keys back in the same
        transaction. Returns the put keys as etcd holds them."""
        ops: list[tuple[str, str, str | None]] = \
            [("delete", k, None) for k in deletes] + [("put", k, v) for k, v in puts.items()]
        out: dict[str, KV] = {}
        # (each put is read back in its transaction: half the room for puts)
        size = MAX_TXN_OPS // 2
        for at in range(0, len(ops), size):
            chunk = ops[at:at + size]

            async def op(c: Any, chunk: list[tuple[str, str, str | None]] = chunk
                         ) -> list[Any]:
                steps = []
                for kind, k, v in chunk:
                    if kind == "delete":
                        steps.append(c.transactions.delete(k.encode()))
                    else:
                        steps.append(c.transactions.put(k.encode(), (v or "").encode()))
                steps += [c.transactions.get(k.encode()) for kind, k, _ in chunk
                          if kind == "put"]
                _ok, responses = await c.transaction(compare=[], success=steps, failure=[])
                return [r for r in responses if isinstance(r, list)]

            for kvs in self.call("write keys", op):
                for _value, kv in kvs:
                    item = _kv(kv)
                    out[item.key] = item
        return out

    def delete_keys(self, keys: Sequence[str]) -> int:
        """Delete ``keys`` (exact keys, never a range) in one transaction; returns how many
        existed."""
        if not keys:
            return 0
        total = 0
        for at in range(0, len(keys), MAX_TXN_OPS):
            chunk = list(keys[at:at + MAX_TXN_OPS])

            async def op(c: Any, chunk: list[str] = chunk) -> int:
                _ok, responses = await c.transaction(
                    compare=[], failure=[],
                    success=[c.transactions.delete(k.encode()) for k in chunk])
                return sum(int(r.response_delete_range.deleted) for r in responses)

            total += self.call("delete keys", op)
        return total

    def grant(self, ttl: int) -> int:
        """Grant a lease of ``ttl`` seconds; returns its id."""
        async def op(c: Any) -> int:
            return int((await c.lease(ttl)).id)
        return self.call(f"grant a lease of {ttl} s", op)

    def revoke(self, lease: int) -> None:
        """Revoke lease ``lease`` (its keys go with it); a lease that expired is no error."""
        import aetcd.exceptions as errors

        async def op(c: Any) -> None:
            try:
                await c.revoke_lease(lease)
            except errors.ClientError as exc:
                if "not found" not in str(exc):
                    raise
        self.call(f"revoke lease {lease:x}", op)


def _reason(exc: BaseException) -> str:
    text_ = str(exc).strip() or type(exc).__name__
    return text_.splitlines()[0][:300]


def _make_client(host: str, port: int, timeout: float, username: str | None,
                 password: str | None, tls: tuple[str | None, str | None, str | None] | None
                 ) -> Any:
    import aetcd

    if tls is None:
        return aetcd.Client(host=host, port=port, username=username, password=password,
                            timeout=timeout)
    return _TlsClient(host=host, port=port, username=username, password=password,
                      timeout=timeout, tls=tls)


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    with open(path, "rb") as f:
        return f.read()


def _tls_client_class() -> Any:
    import aetcd
    from aetcd import rpc, watcher

    class TlsClient(aetcd.Client):  # type: ignore[misc]
        """aetcd's client over a TLS channel (aetcd itself opens only plain ones)."""

        def __init__(self, *, tls: tuple[str | None, str | None, str | None],
                     **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._tls = tls

        async def connect(self) -> None:
            grpc = importlib.import_module("grpc")  # (untyped)

            if self._connected.is_set():
                return
            ca, cert, key = self._tls
            creds = grpc.ssl_channel_credentials(_read(ca), _read(key), _read(cert))
            self.channel = grpc.aio.secure_channel(f"{self._host}:{self._port}", creds,
                                                   options=list(self._options.items()))
            if self._username is not None and self._password is not None:
                self.auth_stub = rpc.AuthStub(self.channel)
                resp = await self.auth_stub.Authenticate(rpc.AuthenticateRequest(
                    name=self._username, password=self._password), timeout=self._timeout)
                self.metadata = (("token", resp.token),)
            self.kvstub = rpc.KVStub(self.channel)
            self.clusterstub = rpc.ClusterStub(self.channel)
            self.leasestub = rpc.LeaseStub(self.channel)
            self.maintenancestub = rpc.MaintenanceStub(self.channel)
            self._watcher = watcher.Watcher(rpc.WatchStub(self.channel),
                                            timeout=self._timeout, metadata=self.metadata)
            self._connected.set()

    return TlsClient


def _TlsClient(**kwargs: Any) -> Any:  # noqa: N802 - a class made on first use
    return _tls_client_class()(**kwargs)
