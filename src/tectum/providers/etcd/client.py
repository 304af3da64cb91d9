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

Reads never mutate: :meth:`get_keys` reads exactly the keys asked for (one range read per
key, never a range over other keys: a user whose etcd role covers only those keys may read
them), :data:`MAX_TXN_OPS` per transaction, the transactions sent together
(:func:`asyncio.gather`): one round trip of the client, however many keys. Each transaction is
atomic; several are not read at one revision. :meth:`get_prefixes` reads every key under
several prefixes the same way, and :meth:`prefetch` both at once — the whole refresh of a
plan in one round trip. Replies may be larger than gRPC's default 4 MB
(:data:`MAX_MESSAGE`).

An endpoint list that did not answer is remembered (:attr:`EtcdClient.unreachable`, what
:meth:`EtcdProvider.down` reports): for ``timeout`` seconds afterwards every call fails at once
with the same reason instead of waiting out its timeout again; a call after that tries again,
and one that succeeds clears it. An auth token etcd no longer takes ("invalid auth token": the
simple tokens live ``--auth-token-ttl`` seconds, 300 by default) makes the client connect
again, authenticating anew, and retry the call once. Changes are :meth:`put`, :meth:`delete_keys`,
:meth:`commit` (puts and deletes in one transaction), :meth:`grant` and :meth:`revoke` of
leases.
"""

from __future__ import annotations

import hashlib
import importlib
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import CancelledError
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

if TYPE_CHECKING:  # (asyncio, with ssl and socket, costs every tectum process ~12 ms: it is
    import asyncio  # imported where a client runs its loop, not when the provider loads)

#: etcd's default limit of operations in one transaction (``--max-txn-ops``)
MAX_TXN_OPS = 128
#: the largest reply a channel takes (bytes): gRPC's default of 4 MB is less than a few
#: prefixes of large values (etcd's own limit on a reply is its ``--max-recv-bytes``, 2 GB)
MAX_MESSAGE = 2**31 - 1

R = TypeVar("R")


class EtcdError(Exception):
    """An etcd call failed; the message is a sentence for the user (never a value).
    ``unreachable``: no endpoint answered (trying again later may work); else etcd answered
    and refused (permission, size, credentials)."""

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


class KV(NamedTuple):
    """One key as etcd holds it (``mvccpb.KeyValue``); ``key`` and ``value`` as text,
    ``raw`` the key's bytes (a key that is not UTF-8 is deleted by them)."""

    key: str
    value: str
    create_revision: int
    mod_revision: int
    version: int
    lease: int
    raw: bytes = b""


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


def _kv(kv: Any) -> KV:
    return KV(text(kv.key), text(kv.value), int(kv.create_revision), int(kv.mod_revision),
              int(kv.version), int(kv.lease), bytes(kv.key))


class EtcdClient:
    """A session's connection to one etcd cluster (see the module docstring).

    ``endpoints``: ``host:port`` strings (an IPv6 address in brackets, ``[::1]:2379``);
    ``timeout``: seconds per call; ``username`` and ``password``: etcd authentication (both or
    neither); ``ca_cert``, ``cert``, ``key``: paths of PEM files for TLS (``ca_cert`` alone:
    server authentication; with ``cert`` and ``key``: client certificates too)."""

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
        self._closed = False
        #: ``(kind, reason)`` after no endpoint answered (see :meth:`EtcdProvider.down`);
        #: cleared by the next call that succeeds
        self.unreachable: tuple[str, str] | None = None
        self._unreachable_at = 0.0
        #: round trips made (reads and changes), for tests and benchmarks
        self.round_trips = 0
        #: transactions sent (several may go in one round trip), for tests and benchmarks
        self.transactions = 0
        #: reconnections after etcd refused an expired auth token
        self.reauthentications = 0
        # what prefetch read, for every begin_read not yet ended (reads of several hosts
        # may overlap): (keys, prefixes, found, open reads)
        self._snapshot: tuple[frozenset[str], frozenset[str], dict[str, KV], int] | None = None

    @property
    def where(self) -> str:
        """The endpoints, for messages: ``127.0.0.1:2379, 127.0.0.1:22379``."""
        return ", ".join(self.endpoints)

    # -- the loop thread ------------------------------------------------------------------
    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        import asyncio

        with self._lock:
            if self._closed:
                raise EtcdError(f"the etcd client of {self.where} is closed")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="tectum-etcd",
                                          daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def _run(self, make: Callable[[], Awaitable[R]]) -> R:
        import asyncio

        loop = self._ensure_loop()

        async def call() -> R:
            return await make()

        try:
            future = asyncio.run_coroutine_threadsafe(call(), loop)
        except RuntimeError:  # (the loop was closed meanwhile)
            raise EtcdError(f"the etcd client of {self.where} is closed") from None
        # (each endpoint may take its timeout, and a connect its own)
        limit = self.timeout * (len(self.endpoints) + 2) + 5
        try:
            return future.result(limit)
        except FutureTimeout:
            if not loop.is_closed():
                future.cancel()
            raise EtcdError(f"etcd at {self.where} did not answer within {limit:g} s",
                            unreachable=True) from None
        except CancelledError:  # (close() cancelled it)
            raise EtcdError(f"the etcd client of {self.where} was closed during the call"
                            ) from None

    def _client(self, endpoint: str) -> Any:
        """The aetcd client of ``endpoint`` (made in the loop's thread, on first use). The
        host keeps its brackets (``[::1]``): gRPC's target is ``HOST:PORT``."""
        found = self._clients.get(endpoint)
        if found is None:
            host, _, port = endpoint.rpartition(":")
            found = _make_client(host, int(port), self.timeout, self._username,
                                 self._password, self._tls)
            self._clients[endpoint] = found
        return found

    def call(self, what: str, op: Callable[[Any], Awaitable[R]]) -> R:
        """Run ``op(client)`` on the first endpoint that answers (the one that answered last
        first): one round trip. Raises :class:`EtcdError` naming ``what`` and the endpoints;
        at once, with the same reason, within ``timeout`` seconds of finding every endpoint
        unreachable."""
        import aetcd.exceptions as errors

        down = self.unreachable
        if down is not None and time.monotonic() - self._unreachable_at < self.timeout:
            raise EtcdError(down[1], unreachable=True)

        async def attempt() -> R:
            order = list(range(self._current, len(self.endpoints))) + \
                list(range(self._current))
            failures: list[str] = []
            for i in order:
                endpoint = self.endpoints[i]
                try:
                    try:
                        result = await op(self._client(endpoint))
                    except errors.UnauthenticatedError as exc:
                        if "invalid auth token" not in str(exc):
                            raise
                        # (the token expired: authenticate again, once)
                        self.reauthentications += 1
                        await self._drop(endpoint)
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
            self._unreachable_at = time.monotonic()
            raise EtcdError(reason, unreachable=True)

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
        """Close every channel and stop the loop thread (idempotent). Calls still running
        are cancelled (they raise :class:`EtcdError`); a call after it raises
        :class:`EtcdError` too."""
        with self._lock:
            self._closed = True
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None:
            return
        import asyncio

        async def shut() -> None:
            me = asyncio.current_task()
            others = [t for t in asyncio.all_tasks() if t is not me]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)
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
        """Read ``keys`` and every key under ``prefixes`` in one round trip (the plan's
        refresh of every etcd resource: :meth:`EtcdProvider.begin_read`); until the matching
        :meth:`forget`, :meth:`get_keys` and :meth:`get_prefixes` of those are answered from
        it without a round trip. Overlapping prefetches add up; each :meth:`forget` ends
        one."""
        unique = sorted(set(prefixes))
        ranges = [(k, False) for k in sorted(set(keys))] + [(p, True) for p in unique]
        found = self._ranges(ranges, "read keys") if ranges else {}
        with self._lock:
            old = self._snapshot
            if old is None:
                self._snapshot = (frozenset(keys), frozenset(unique), found, 1)
            else:
                self._snapshot = (old[0] | frozenset(keys), old[1] | frozenset(unique),
                                  {**old[2], **found}, old[3] + 1)

    def forget(self) -> None:
        """End one :meth:`prefetch`; what they read is dropped when none is open."""
        with self._lock:
            old = self._snapshot
            if old is not None and old[3] > 1:
                self._snapshot = (old[0], old[1], old[2], old[3] - 1)
            else:
                self._snapshot = None

    def get_keys(self, keys: Sequence[str]) -> dict[str, KV]:
        """Every key of ``keys`` that exists, by key: exactly those keys (one range read of
        each), in one round trip of transactions of :data:`MAX_TXN_OPS` reads, or from what
        :meth:`prefetch` read."""
        wanted = set(keys)
        if not wanted:
            return {}
        snapshot = self._snapshot
        if snapshot is not None and wanted <= snapshot[0]:
            found = snapshot[2]
        else:
            found = self._ranges([(k, False) for k in sorted(wanted)], "read keys")
        return {k: kv for k, kv in found.items() if k in wanted}

    def get_prefixes(self, prefixes: Sequence[str]) -> dict[str, dict[str, KV]]:
        """Every key under each prefix of ``prefixes`` (by prefix, then by key), in one round
        trip, or from what :meth:`prefetch` read."""
        unique = sorted(set(prefixes))
        if not unique:
            return {}
        snapshot = self._snapshot
        if snapshot is not None and set(unique) <= snapshot[1]:
            found = snapshot[2]
        else:
            found = self._ranges([(p, True) for p in unique], "read key prefixes")
        return {p: {k: kv for k, kv in found.items() if k.startswith(p)} for p in unique}

    def raw_keys(self, prefix: str) -> list[bytes]:
        """The keys under ``prefix`` as bytes (one range read of keys only)."""
        raw = prefix.encode()

        async def op(c: Any) -> list[bytes]:
            _ok, responses = await c.transaction(
                compare=[], failure=[], success=[c.transactions.get(raw, prefix_end(raw))])
            return [bytes(kv.key) for _value, kv in responses[0]]

        self.transactions += 1
        return self.call(f"read keys under {prefix!r}", op)

    def _ranges(self, ranges: Sequence[tuple[str, bool]], what: str) -> dict[str, KV]:
        """Read every ``(start, is_prefix)`` range: transactions of :data:`MAX_TXN_OPS`
        reads sent together, one round trip."""
        import asyncio

        chunks = [ranges[at:at + MAX_TXN_OPS] for at in range(0, len(ranges), MAX_TXN_OPS)]
        if not chunks:
            return {}

        async def one(c: Any, chunk: Sequence[tuple[str, bool]]) -> list[list[Any]]:
            gets = []
            for start, is_prefix in chunk:
                raw = start.encode()
                gets.append(c.transactions.get(raw, prefix_end(raw) if is_prefix else None))
            _ok, responses = await c.transaction(compare=[], success=gets, failure=[])
            return [[kv for _value, kv in r] for r in responses]

        async def op(c: Any) -> list[list[list[Any]]]:
            await c.connect()  # (once, before the transactions go out together)
            return list(await asyncio.gather(*(one(c, chunk) for chunk in chunks)))

        self.transactions += len(chunks)
        out: dict[str, KV] = {}
        for replies in self.call(what, op):
            for kvs in replies:
                for kv in kvs:
                    item = _kv(kv)
                    out[item.key] = item
        return out

    # -- changes ---------------------------------------------------------------------------
    def put(self, key: str, value: str, lease: int = 0) -> KV:
        """Put ``key`` = ``value`` (attached to ``lease``; 0: none) and read it back in the
        same transaction: the key as etcd now holds it."""
        async def op(c: Any) -> Any:
            return await _put(c, key, value, lease)
        self.transactions += 1
        return _kv(self.call(f"put key {key!r}", op))

    def put_leased(self, key: str, value: str, ttl: int, lease: int) -> KV:
        """Grant lease ``lease`` (an id of :func:`lease_ids`) of ``ttl`` seconds and put
        ``key`` = ``value`` with it, in one call: when the put fails the lease is revoked
        again (best effort), so a failed put leaves no lease. A lease of that id left by an
        interrupted run is revoked first."""
        import aetcd.exceptions as errors

        async def op(c: Any) -> Any:
            try:
                await c.lease(ttl, lease)
            except errors.DuplicateLeaseError:
                await c.revoke_lease(lease)
                await c.lease(ttl, lease)
            try:
                return await _put(c, key, value, lease)
            except BaseException:
                try:
                    await c.revoke_lease(lease)
                except Exception:  # noqa: BLE001 - the put's failure is what is reported
                    pass
                raise
        self.transactions += 2
        return _kv(self.call(f"put key {key!r} with a lease of {ttl} s", op))

    def commit(self, puts: Mapping[str, str], deletes: Sequence[str | bytes]) -> dict[str, KV]:
        """Delete ``deletes`` (text keys, or the raw bytes of keys read) and put ``puts`` in
        one transaction, then read the put keys back in the same transaction. Returns the put
        keys as etcd holds them. More than :data:`MAX_TXN_OPS` operations (a put counts two,
        with its read) take several transactions, one after the other: each is atomic, the
        whole is not."""
        ops: list[tuple[str, bytes, str | None]] = \
            [("delete", _raw(k), None) for k in deletes] + \
            [("put", k.encode(), v) for k, v in puts.items()]
        out: dict[str, KV] = {}
        # (each put is read back in its transaction: half the room for puts)
        size = MAX_TXN_OPS // 2
        for at in range(0, len(ops), size):
            chunk = ops[at:at + size]

            async def op(c: Any, chunk: list[tuple[str, bytes, str | None]] = chunk
                         ) -> list[Any]:
                steps = []
                for kind, k, v in chunk:
                    if kind == "delete":
                        steps.append(c.transactions.delete(k))
                    else:
                        steps.append(c.transactions.put(k, (v or "").encode()))
                steps += [c.transactions.get(k) for kind, k, _ in chunk if kind == "put"]
                _ok, responses = await c.transaction(compare=[], success=steps, failure=[])
                return [r for r in responses if isinstance(r, list)]

            self.transactions += 1
            for kvs in self.call("write keys", op):
                for _value, kv in kvs:
                    item = _kv(kv)
                    out[item.key] = item
        return out

    def delete_keys(self, keys: Sequence[str | bytes]) -> int:
        """Delete ``keys`` (exact keys, never a range; text or raw bytes) in one transaction
        per :data:`MAX_TXN_OPS`; returns how many existed."""
        if not keys:
            return 0
        total = 0
        for at in range(0, len(keys), MAX_TXN_OPS):
            chunk = [_raw(k) for k in keys[at:at + MAX_TXN_OPS]]

            async def op(c: Any, chunk: list[bytes] = chunk) -> int:
                _ok, responses = await c.transaction(
                    compare=[], failure=[],
                    success=[c.transactions.delete(k) for k in chunk])
                return sum(int(r.response_delete_range.deleted) for r in responses)

            self.transactions += 1
            total += self.call("delete keys", op)
        return total

    def grant(self, ttl: int, lease: int | None = None) -> int:
        """Grant a lease of ``ttl`` seconds (id ``lease``, else one etcd picks); returns its
        id."""
        async def op(c: Any) -> int:
            return int((await c.lease(ttl, lease)).id)
        return self.call(f"grant a lease of {ttl} s", op)

    def revoke(self, lease: int) -> bool:
        """Revoke lease ``lease`` (its keys go with it); a lease that expired (or never was)
        is no error. Returns whether it existed."""
        import aetcd.exceptions as errors

        async def op(c: Any) -> bool:
            try:
                await c.revoke_lease(lease)
            except errors.ClientError as exc:
                if "not found" not in str(exc):
                    raise
                return False
            return True
        return self.call(f"revoke lease {lease:x}", op)

    def lease_keys(self, lease: int) -> list[str] | None:
        """The keys attached to lease ``lease``; None when it does not exist (expired)."""
        from aetcd import rpc

        async def op(c: Any) -> list[str] | None:
            await c.connect()
            resp = await _rpc(c.leasestub.LeaseTimeToLive(
                rpc.LeaseTimeToLiveRequest(ID=lease, keys=True), timeout=c._timeout,
                metadata=c.metadata))
            if int(resp.TTL) == -1:
                return None
            return [text(k) for k in resp.keys]
        return self.call(f"read lease {lease:x}", op)

    def leases(self) -> list[int]:
        """Every lease etcd holds (their ids)."""
        from aetcd import rpc

        async def op(c: Any) -> list[int]:
            await c.connect()
            resp = await _rpc(c.leasestub.LeaseLeases(
                rpc.LeaseLeasesRequest(), timeout=c._timeout, metadata=c.metadata))
            return [int(item.ID) for item in resp.leases]
        return self.call("list leases", op)


def lease_ids(key: str) -> tuple[int, int]:
    """The two lease ids tectum grants ``key`` (in turn: a new lease is granted before the old
    one is revoked), derived from the key, so the journal knows them before the grant and a
    run killed between the grant and the put leaves a lease :meth:`KeyType.sweep_interrupted`
    finds. Positive 63-bit ids, never 0."""
    digest = hashlib.sha256(b"tectum-etcd-lease\0" + key.encode()).digest()
    base = (int.from_bytes(digest[:8], "big") & 0x3FFF_FFFF_FFFF_FFFE) | 0x4000_0000_0000_0000
    return base, base | 1


async def _put(c: Any, key: str, value: str, lease: int) -> Any:
    raw = key.encode()
    _ok, responses = await c.transaction(
        compare=[], failure=[],
        success=[c.transactions.put(raw, value.encode(), lease=lease or None),
                 c.transactions.get(raw)])
    return responses[-1][0][1]


async def _rpc(call: Awaitable[Any]) -> Any:
    """A raw gRPC call's reply, its failure as aetcd's exceptions."""
    from aetcd import exceptions, rpc

    try:
        return await call
    except rpc.AioRpcError as exc:
        exceptions._handle_exception(exc)
        raise


def _raw(key: str | bytes) -> bytes:
    return key if isinstance(key, bytes) else key.encode()


def _reason(exc: BaseException) -> str:
    text_ = str(exc).strip() or type(exc).__name__
    return text_.splitlines()[0][:300]


def _make_client(host: str, port: int, timeout: float, username: str | None,
                 password: str | None, tls: tuple[str | None, str | None, str | None] | None
                 ) -> Any:
    import aetcd

    options = {"grpc.max_receive_message_length": MAX_MESSAGE}
    if tls is None:
        return aetcd.Client(host=host, port=port, username=username, password=password,
                            timeout=timeout, options=options)
    return _TlsClient(host=host, port=port, username=username, password=password,
                      timeout=timeout, options=options, tls=tls)


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    with open(path, "rb") as f:
        return f.read()


def _tls_client_class() -> Any:
    import asyncio

    import aetcd
    from aetcd import exceptions, rpc, watcher

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
            if self._is_connecting:  # type: ignore[has-type]  # (another call connects)
                await asyncio.wait_for(self._connected.wait(), self._connect_wait_timeout)
                return
            self._is_connecting = True
            try:
                ca, cert, key = self._tls
                creds = grpc.ssl_channel_credentials(_read(ca), _read(key), _read(cert))
                self.channel = grpc.aio.secure_channel(f"{self._host}:{self._port}", creds,
                                                       options=list(self._options.items()))
                if self._username is not None and self._password is not None:
                    self.auth_stub = rpc.AuthStub(self.channel)
                    try:
                        resp = await self.auth_stub.Authenticate(rpc.AuthenticateRequest(
                            name=self._username, password=self._password),
                            timeout=self._timeout)
                    except rpc.AioRpcError as exc:
                        exceptions._handle_exception(exc)
                    self.metadata = (("token", resp.token),)
                self.kvstub = rpc.KVStub(self.channel)
                self.clusterstub = rpc.ClusterStub(self.channel)
                self.leasestub = rpc.LeaseStub(self.channel)
                self.maintenancestub = rpc.MaintenanceStub(self.channel)
                self._watcher = watcher.Watcher(rpc.WatchStub(self.channel),
                                                timeout=self._timeout, metadata=self.metadata)
                self._connected.set()
            finally:
                self._is_connecting = False

    return TlsClient


def _TlsClient(**kwargs: Any) -> Any:  # noqa: N802 - a class made on first use
    return _tls_client_class()(**kwargs)
