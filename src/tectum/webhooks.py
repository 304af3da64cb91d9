"""Webhooks: signed JSON notifications of unattended runs (failure, drift, pending approval).

``tectum agent`` calls :meth:`Notifier.notify` when a run fails, finds drift or waits for an
approval; a background thread per hook POSTs the event to each subscribed URL. A run is never
blocked or failed by a webhook: :meth:`Notifier.notify` only queues, and nothing raises into the
caller — problems go to the ``tectum.webhooks`` logger.

Configured in the agent's hooks file (``tectum agent --webhooks FILE``;
:meth:`Webhook.from_table`)::

    [[webhooks]]
    url = "https://hooks.example/tectum"
    secret_env = "TECTUM_WEBHOOK_SECRET"   # the HMAC key is read from this variable
    events = ["failed", "drift"]            # default: all of EVENTS
    timeout = 5                             # seconds per attempt, connect to last byte
    attempts = 4                            # at most this many tries per delivery

The request (see ``docs/webhooks.md``)::

    POST <url>
    Content-Type: application/json
    X-Tectum-Event: drift
    X-Tectum-Delivery: 7f0c...           (a UUID per delivery, the same on each retry)
    X-Tectum-Timestamp: 1765100000       (epoch seconds of this attempt)
    X-Tectum-Signature: sha256=<hex HMAC-SHA256(secret, f"{timestamp}.".encode() + body)>

    {"event":"drift","id":"7f0c...","run":{...},"timestamp":1765099990}

The signature is GitHub's ``X-Hub-Signature-256`` (``sha256=`` and the hex HMAC-SHA256 of the
body with a shared secret) over Stripe's timestamped payload (``Stripe-Signature``'s
``t=...``: the timestamp is signed with the body, so a captured request cannot be replayed
later): a receiver checks it with :func:`verify`. The body's ``timestamp`` is when the event
happened; the header's is when this attempt was sent (a retry or a spooled delivery is signed
afresh, so it still verifies within the tolerance).

Delivery is at least once: a receiver that must not act twice deduplicates on
``X-Tectum-Delivery``. Retries follow the usual webhook conventions (GitHub, Stripe): a
connection error, a timeout, 408, 429 and 5xx are retried with exponential backoff and jitter
(0.5 s, doubling, at most 8 s; a ``Retry-After`` of up to 8 s is honoured); any other status
from 300 up (redirects are not followed) is final, and so is a TLS certificate that does not
verify. With a ``spool_dir``, a delivery that used up its attempts, or was still queued when
:meth:`Notifier.close` gave up, is written there and sent again by the next :class:`Notifier`
on the same directory.

Every string of the payload (and its keys) is masked with :data:`tectum.masking.REDACTOR`
before it is signed: a run's error messages can quote a secret. The hook's secret is
registered there too, and a log line names a hook by its scheme, host and port only (a URL's
path often holds a token, as Slack's do).
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import http.client
import json
import logging
import math
import os
import random
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tectum import __version__
from tectum.diagnostics import Diagnostic, DiagnosticError
from tectum.masking import MIN_LENGTH, REDACTOR

log = logging.getLogger("tectum.webhooks")

#: the events a hook can subscribe to
EVENTS = frozenset({"failed", "drift", "pending-approval"})
#: deliveries queued per hook; when full the oldest is dropped (and counted in ``dropped``)
QUEUE_SIZE = 1000
#: first retry delay and its cap, seconds (doubling in between, with jitter)
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 8.0
#: a shorter HMAC key is refused by :meth:`Webhook.from_table` (easy to guess)
MIN_SECRET_LENGTH = 16
#: bounds on ``attempts`` and ``timeout`` in the hooks file
MAX_ATTEMPTS = 10
MAX_TIMEOUT = 60.0
#: a spooled delivery older than this (seconds) is given up: 3 days, as Stripe retries
SPOOL_MAX_AGE = 3 * 86400
#: response bytes read (and discarded) from a hook
_MAX_RESPONSE = 64 * 1024

_SETTINGS = ("url", "secret_env", "events", "timeout", "attempts")


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``X-Tectum-Signature`` value: ``"sha256=" + hex HMAC-SHA256`` keyed with ``secret``
    (UTF-8) over ``f"{timestamp}.".encode() + body`` (GitHub's ``X-Hub-Signature-256`` format
    over Stripe's timestamped payload)."""
    mac = hmac.new(secret.encode("utf-8"), f"{int(timestamp)}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, body: bytes, timestamp: int, signature: str, *,
           tolerance: float = 300, now: float | None = None) -> bool:
    """Whether ``signature`` (the ``X-Tectum-Signature`` header, ``sha256=<hex>``) is
    :func:`sign` of ``body`` at ``timestamp`` (the ``X-Tectum-Timestamp`` header, epoch
    seconds) with ``secret``, and ``timestamp`` is within ``tolerance`` seconds of ``now``
    (default: the clock) either way — a replayed request is refused (Stripe's default
    tolerance is 5 minutes too). Constant-time (:func:`hmac.compare_digest`); never raises
    for a malformed signature or timestamp (returns False)."""
    try:
        ts = int(timestamp)
    except (TypeError, ValueError):
        return False
    current = time.time() if now is None else now
    if not math.isfinite(current) or abs(current - ts) > tolerance:
        return False
    if not isinstance(signature, str):
        return False
    expected = sign(secret, body, ts).encode()
    return hmac.compare_digest(expected, signature.strip().encode("utf-8", "surrogateescape"))


def _problem(summary: str, where: str, detail: str) -> DiagnosticError:
    return DiagnosticError(Diagnostic.error(summary, f"{where}: {detail}"))


@dataclass(frozen=True)
class Webhook:
    """One hook: POST signed JSON to ``url`` for each of ``events``.

    ``url``: ``http://`` or ``https://`` (certificates are checked against the system's CA
    store; proxies from ``https_proxy``/``http_proxy``/``no_proxy`` are used). ``secret``: the
    HMAC key (kept out of ``repr`` and registered for masking). ``timeout``: seconds per
    attempt, from connecting to the last byte of the response (a hook that trickles bytes is
    cut too). ``attempts``: tries per delivery (>= 1). Raises :class:`ValueError` for a value
    out of these bounds; :meth:`from_table` reports bad configuration as diagnostics."""

    url: str
    secret: str = field(repr=False)
    events: frozenset[str] = EVENTS
    timeout: float = 5.0
    attempts: int = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "events", frozenset(self.events))
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"webhook URL must be http:// or https:// with a host: {self.url!r}")
        if not self.secret:
            raise ValueError("webhook secret must not be empty")
        unknown = self.events - EVENTS
        if unknown:
            raise ValueError(f"unknown webhook events {sorted(unknown)}; known: {sorted(EVENTS)}")
        if not self.timeout > 0 or not math.isfinite(self.timeout):
            raise ValueError(f"webhook timeout must be > 0 seconds: {self.timeout!r}")
        if self.attempts < 1:
            raise ValueError(f"webhook attempts must be >= 1: {self.attempts!r}")
        REDACTOR.add(self.secret)

    @property
    def origin(self) -> str:
        """``scheme://host[:port]``: how logs name this hook (never its path or query)."""
        parts = urllib.parse.urlsplit(self.url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")

    @classmethod
    def from_table(cls, table: Mapping[str, Any], where: str, *,
                   environ: Mapping[str, str] | None = None) -> Webhook:
        """A hook from one ``[[webhooks]]`` table of the hooks file: ``url`` (required),
        ``secret_env`` (required: the name of the environment variable — in ``environ``,
        default :data:`os.environ` — that holds the HMAC key, at least
        :data:`MIN_SECRET_LENGTH` characters; a ``secret`` written in the file is refused),
        ``events`` (a non-empty list of :data:`EVENTS`; default all), ``timeout`` (seconds,
        0 < t <= :data:`MAX_TIMEOUT`; default 5) and ``attempts`` (1 to :data:`MAX_ATTEMPTS`;
        default 4). ``where`` names the table in messages ("hooks.toml [[webhooks]]
        #1"). Raises :class:`DiagnosticError` saying what is wrong and what to write."""
        env = os.environ if environ is None else environ
        if not isinstance(table, Mapping):
            raise _problem("Invalid webhook", where, "a webhook must be a table with url and "
                           "secret_env ([[webhooks]]).")
        if "secret" in table:
            raise _problem(
                "Webhook secret in the project file", where,
                "the secret is written in the file; secrets never go in the hooks file. Remove "
                "it, put it in an environment variable and name that variable: "
                'secret_env = "TECTUM_WEBHOOK_SECRET" (use secret_env).')
        unknown = sorted(str(k) for k in table if k not in _SETTINGS)
        if unknown:
            raise _problem("Unknown webhook setting", where,
                           f"unknown setting(s) {', '.join(unknown)}; a webhook takes "
                           f"{', '.join(_SETTINGS)}.")
        url = table.get("url")
        if url is None:
            raise _problem("Missing webhook URL", where,
                           'url is required: url = "https://hooks.example/tectum".')
        if not isinstance(url, str):
            raise _problem("Invalid webhook URL", where,
                           f"url must be a string, not {type(url).__name__}.")
        parts = urllib.parse.urlsplit(url)
        try:
            parts.port  # noqa: B018 (raises ValueError for a port out of range or not a number)
        except ValueError:
            raise _problem("Invalid webhook URL", where,
                           f"{_origin_text(url)} has an invalid port.") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise _problem("Invalid webhook URL", where,
                           f"url must start with http:// or https:// and name a host; got "
                           f"{_origin_text(url)}.")
        if parts.username is not None or parts.password is not None:
            raise _problem("Invalid webhook URL", where,
                           "url holds credentials (user:password@); they are not sent and "
                           "must not be in the hooks file. The receiver authenticates requests by "
                           "their signature (X-Tectum-Signature).")
        name = table.get("secret_env")
        if name is None:
            raise _problem("Missing webhook secret", where,
                           'secret_env is required: the name of an environment variable that '
                           'holds the signing key, e.g. secret_env = "TECTUM_WEBHOOK_SECRET".')
        if not isinstance(name, str) or not name:
            raise _problem("Invalid webhook secret_env", where,
                           "secret_env must be the name of an environment variable (a string).")
        secret = env.get(name)
        if not secret:
            raise _problem("Webhook secret not set", where,
                           f"the environment variable {name} (secret_env) is not set or is "
                           "empty. Set it to the key the receiver verifies signatures with.")
        if len(secret) < max(MIN_SECRET_LENGTH, MIN_LENGTH):
            raise _problem("Webhook secret too short", where,
                           f"the secret in {name} has {len(secret)} characters; use at least "
                           f"{MIN_SECRET_LENGTH} random ones (python3 -c 'import secrets; "
                           "print(secrets.token_hex(32))').")
        events_value = table.get("events", sorted(EVENTS))
        if (not isinstance(events_value, list) or not events_value
                or not all(isinstance(e, str) for e in events_value)):
            raise _problem("Invalid webhook events", where,
                           f"events must be a non-empty list of event names "
                           f"({', '.join(sorted(EVENTS))}).")
        bad = sorted(set(events_value) - EVENTS)
        if bad:
            raise _problem("Unknown webhook event", where,
                           f"unknown event(s) {', '.join(bad)}; known events are "
                           f"{', '.join(sorted(EVENTS))}.")
        timeout = table.get("timeout", 5.0)
        if (isinstance(timeout, bool) or not isinstance(timeout, int | float)
                or not 0 < timeout <= MAX_TIMEOUT):
            raise _problem("Invalid webhook timeout", where,
                           f"timeout must be a number of seconds, more than 0 and at most "
                           f"{MAX_TIMEOUT:g}; got {timeout!r}.")
        attempts = table.get("attempts", 4)
        if (isinstance(attempts, bool) or not isinstance(attempts, int)
                or not 1 <= attempts <= MAX_ATTEMPTS):
            raise _problem("Invalid webhook attempts", where,
                           f"attempts must be a whole number from 1 to {MAX_ATTEMPTS}; got "
                           f"{attempts!r}.")
        return cls(url=url, secret=secret, events=frozenset(events_value),
                   timeout=float(timeout), attempts=attempts)


def _origin_text(url: str) -> str:
    """``url`` without its path, query and credentials (which may hold a token), for a
    message."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme and parts.netloc:
        return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/... (path not shown)"
    return f"{url.split('/', 1)[0]!r}... (path not shown)"


def _masked(value: Any) -> Any:
    """``value`` as JSON-ready data with every string (keys too) masked by ``REDACTOR``;
    other objects become their masked ``str``."""
    if isinstance(value, str):
        return REDACTOR.redact(value)
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return {REDACTOR.redact(str(k)): _masked(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [_masked(v) for v in value]
        return items if isinstance(value, list | tuple) else sorted(items, key=repr)
    return REDACTOR.redact(str(value))


def body(event: str, delivery_id: str, timestamp: int, payload: Mapping[str, Any]) -> bytes:
    """The request body: ``{"event", "id", "timestamp", "run": payload}`` as compact JSON with
    sorted keys (ASCII), every string of ``payload`` masked."""
    document = {"event": event, "id": delivery_id, "timestamp": int(timestamp),
                "run": _masked(payload)}
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


@dataclass
class _Delivery:
    hook: int  # index into Notifier.hooks
    event: str
    id: str
    body: bytes
    done: bool = False  # delivered or given up for good (its spool file must go)


class _Result:
    """One attempt's outcome: ``ok``, ``retry`` (worth another try; ``after`` = Retry-After)
    and what happened (for the log)."""

    __slots__ = ("ok", "retry", "after", "what")

    def __init__(self, ok: bool, retry: bool, what: str, after: float = 0.0) -> None:
        self.ok, self.retry, self.what, self.after = ok, retry, what, after


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are not followed (the response is final): a POST redirected would be resent
    as a GET without its body, or to a host nobody configured."""

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str,
                         headers: Any, newurl: str) -> None:
        return None


class _DeadlineHTTP(http.client.HTTPConnection):
    """A connection that refuses to go on once the attempt's deadline (``fired``) passed while
    it was connecting (the deadline's shutdown found no socket yet to cut)."""

    fired: threading.Event

    def connect(self) -> None:
        super().connect()
        if self.fired.is_set():
            raise TimeoutError("the deadline passed while connecting")


class _DeadlineHTTPS(http.client.HTTPSConnection):
    fired: threading.Event

    def connect(self) -> None:
        super().connect()
        if self.fired.is_set():
            raise TimeoutError("the deadline passed while connecting")


def _tracking(conns: list[http.client.HTTPConnection], fired: threading.Event,
              cls: type[_DeadlineHTTP] | type[_DeadlineHTTPS],
              ) -> Callable[..., http.client.HTTPConnection]:
    def make(host: str, **kwargs: Any) -> http.client.HTTPConnection:
        conn = cls(host, **kwargs)
        conn.fired = fired
        conns.append(conn)
        return conn
    return make


class _HTTP(urllib.request.HTTPHandler):
    def __init__(self, conns: list[http.client.HTTPConnection], fired: threading.Event) -> None:
        super().__init__()
        self._conns, self._fired = conns, fired

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_tracking(self._conns, self._fired, _DeadlineHTTP), req)


class _HTTPS(urllib.request.HTTPSHandler):
    def __init__(self, conns: list[http.client.HTTPConnection], fired: threading.Event) -> None:
        super().__init__(context=ssl.create_default_context())
        self._conns, self._fired = conns, fired

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_tracking(self._conns, self._fired, _DeadlineHTTPS), req,
                            context=self._context)  # type: ignore[attr-defined]


def _cut(conns: list[http.client.HTTPConnection], fired: threading.Event) -> None:
    """The deadline: shut the attempt's sockets down, which wakes a blocked read at once."""
    fired.set()
    for conn in list(conns):
        sock = conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _retry_after(headers: Any) -> float:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else 0.0
    except ValueError:
        return 0.0  # (an HTTP date: the backoff decides)


def _attempt(hook: Webhook, delivery: _Delivery) -> _Result:
    """POST ``delivery`` to ``hook`` once, within ``hook.timeout`` seconds in all."""
    timestamp = int(time.time())
    request = urllib.request.Request(hook.url, data=delivery.body, method="POST", headers={
        "Content-Type": "application/json",
        "User-Agent": f"tectum-webhooks/{__version__}",
        "X-Tectum-Event": delivery.event,
        "X-Tectum-Delivery": delivery.id,
        "X-Tectum-Timestamp": str(timestamp),
        "X-Tectum-Signature": sign(hook.secret, delivery.body, timestamp),
    })
    conns: list[http.client.HTTPConnection] = []
    fired = threading.Event()
    opener = urllib.request.build_opener(_HTTP(conns, fired), _HTTPS(conns, fired),
                                         _NoRedirect())
    timer = threading.Timer(hook.timeout, _cut, (conns, fired))
    timer.daemon = True
    timer.start()
    try:
        with opener.open(request, timeout=hook.timeout) as response:
            response.read(_MAX_RESPONSE)
            status = response.status
        if fired.is_set():  # (cut mid-response: what was read may look complete)
            return _Result(False, True, f"no complete response within {hook.timeout:g} s")
        return _Result(True, False, f"HTTP {status}")
    except urllib.error.HTTPError as exc:
        status = exc.code
        after = _retry_after(exc.headers)
        exc.close()
        if fired.is_set():
            return _Result(False, True, f"no complete response within {hook.timeout:g} s")
        retry = status in (408, 429) or 500 <= status <= 599
        what = f"HTTP {status}" + (" (redirects are not followed: configure the final URL)"
                                   if 300 <= status <= 399 else "")
        return _Result(False, retry, what, after)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if fired.is_set() or isinstance(exc, TimeoutError | socket.timeout):
            return _Result(False, True, f"no response within {hook.timeout:g} s")
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        if isinstance(reason, ssl.SSLCertVerificationError):  # (a retry will not fix it)
            return _Result(False, False, REDACTOR.redact(
                f"TLS certificate not accepted: {reason.verify_message or reason}"))
        return _Result(False, True, REDACTOR.redact(f"{type(reason).__name__}: {reason}"))
    finally:
        timer.cancel()
        for conn in conns:
            conn.close()


def _backoff(retry: int) -> float:
    """The wait before retry ``retry`` (1 = after the first attempt): 0.5 s doubling up to 8 s,
    "equal jitter" (half fixed, half random) so that agents restarted together spread out."""
    delay: float = min(BACKOFF_MAX, BACKOFF_FIRST * 2.0 ** (retry - 1))
    return delay / 2 + random.uniform(0, delay / 2)


class Notifier:
    """Sends events to ``hooks`` from background threads (one per hook, so a hung hook delays
    no other); :meth:`notify` never blocks and nothing raises into the caller.

    ``spool_dir``: where deliveries that could not be made are kept (one ``<id>.json`` per
    delivery, mode 0600: URL, event, id and the masked body — never the secret) and from where
    they are queued again when a Notifier starts on the same directory. Without it they are
    logged and dropped.

    Counters (for tests and metrics): ``delivered``; ``failed`` (given up: rejected by the
    hook, out of attempts, or still queued when :meth:`close` gave up); ``dropped`` (pushed out
    of a full queue of :data:`QUEUE_SIZE`); ``spooled`` (written to ``spool_dir``)."""

    def __init__(self, hooks: Sequence[Webhook], *, spool_dir: str | None = None) -> None:
        self.hooks: tuple[Webhook, ...] = tuple(hooks)
        self.spool_dir = spool_dir
        self._cond = threading.Condition()  # queues, counters (never held for file I/O)
        self._spool_lock = threading.Lock()  # spool files and _Delivery.done
        self._queues: list[collections.deque[_Delivery]] = [collections.deque() for _ in
                                                            self.hooks]
        self._current: list[_Delivery | None] = [None for _ in self.hooks]
        self._closing = False
        self._stop = threading.Event()
        self._delivered = self._failed = self._dropped = self._spooled = 0
        if spool_dir is not None:
            self._load_spool(spool_dir)
        self._threads = [threading.Thread(target=self._work, args=(i,), daemon=True,
                                          name=f"tectum-webhook-{i}")
                         for i in range(len(self.hooks))]
        for thread in self._threads:
            thread.start()

    # counters ---------------------------------------------------------------------------

    @property
    def delivered(self) -> int:
        with self._cond:
            return self._delivered

    @property
    def failed(self) -> int:
        with self._cond:
            return self._failed

    @property
    def dropped(self) -> int:
        with self._cond:
            return self._dropped

    @property
    def spooled(self) -> int:
        with self._cond:
            return self._spooled

    # the caller's side --------------------------------------------------------------------

    def notify(self, event: str, payload: Mapping[str, Any]) -> None:
        """Queue ``event`` (one of :data:`EVENTS`) with ``payload`` (the run report: JSON-like
        data; other objects are sent as their ``str``) for every hook subscribed to it, and
        return at once. The body is built (and masked) now, so the caller may change
        ``payload`` afterwards. Never raises: an unknown event, a payload that cannot be
        encoded or a call after :meth:`close` is logged and ignored."""
        try:
            if event not in EVENTS:
                log.error("webhook event %r is not one of %s: not sent", event, sorted(EVENTS))
                return
            timestamp = int(time.time())
            for index, hook in enumerate(self.hooks):
                if event not in hook.events:
                    continue
                delivery_id = str(uuid.uuid4())
                self._enqueue(_Delivery(index, event, delivery_id,
                                        body(event, delivery_id, timestamp, payload)))
        except Exception as exc:  # never into the run
            log.error("webhook %s not queued: %s", event,
                      REDACTOR.redact(f"{type(exc).__name__}: {exc}"))

    def _enqueue(self, delivery: _Delivery) -> None:
        with self._cond:
            if self._closing:
                log.warning("webhook %s (%s) after close: not sent", delivery.event,
                            delivery.id)
                return
            queue = self._queues[delivery.hook]
            if len(queue) >= QUEUE_SIZE:
                old = queue.popleft()
                self._dropped += 1
                log.warning("webhook %s: queue full (%d); dropped delivery %s (%s)",
                            self.hooks[old.hook].origin, QUEUE_SIZE, old.id, old.event)
            queue.append(delivery)
            self._cond.notify_all()

    def close(self, timeout: float = 10.0) -> None:
        """Wait up to ``timeout`` seconds for the queued deliveries (with their retries), then
        give up on the rest: they are counted ``failed`` and spooled if there is a
        ``spool_dir`` (one in flight is spooled too, and counted when its attempt ends; its file
        is removed if it then succeeds, or else a receiver may see it again, with the same
        delivery id). The threads are daemons: an attempt still in flight does not keep the
        process alive. Never raises."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            self._closing = True
            while any(self._queues) or any(c is not None for c in self._current):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            self._stop.set()
            self._cond.notify_all()
            left = [d for q in self._queues for d in q]
            for queue in self._queues:
                queue.clear()
            in_flight = [d for d in self._current if d is not None]
            self._failed += len(left)
        for delivery in (*left, *in_flight):
            self._spool(delivery)
        if left or in_flight:
            log.warning("webhooks: %d deliveries not made within %g s%s", len(left) +
                        len(in_flight), timeout,
                        f" (kept in {self.spool_dir})" if self.spool_dir else "")

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # the threads' side --------------------------------------------------------------------

    def _work(self, index: int) -> None:
        hook = self.hooks[index]
        queue = self._queues[index]
        while True:
            with self._cond:
                while not queue and not self._stop.is_set():
                    self._cond.wait()
                if self._stop.is_set():
                    return
                delivery = queue.popleft()
                self._current[index] = delivery
            try:
                outcome = self._deliver(hook, delivery)
            except Exception as exc:  # (a bug here must not end the thread silently)
                log.error("webhook %s: delivery %s: %s", hook.origin, delivery.id,
                          REDACTOR.redact(f"{type(exc).__name__}: {exc}"))
                outcome = "failed"
            if outcome in ("delivered", "rejected"):
                self._finish(delivery)
            else:  # "failed", or "abandoned" (close() gave up on it and spooled it)
                self._spool(delivery)
            with self._cond:
                self._current[index] = None
                if outcome == "delivered":
                    self._delivered += 1
                else:
                    self._failed += 1
                self._cond.notify_all()

    def _deliver(self, hook: Webhook, delivery: _Delivery) -> str:
        """Try ``delivery`` up to ``hook.attempts`` times: "delivered", "rejected" (a final
        status), "failed" (out of attempts) or "abandoned" (close() gave up meanwhile)."""
        for attempt in range(1, hook.attempts + 1):
            result = _attempt(hook, delivery)
            if result.ok:
                log.info("webhook %s: delivered %s (%s), attempt %d", hook.origin,
                         delivery.id, delivery.event, attempt)
                return "delivered"
            if not result.retry:
                log.warning("webhook %s: delivery %s (%s) refused: %s; not retried",
                            hook.origin, delivery.id, delivery.event, result.what)
                return "rejected"
            if attempt == hook.attempts:
                log.warning("webhook %s: delivery %s (%s) failed after %d attempts: %s",
                            hook.origin, delivery.id, delivery.event, attempt, result.what)
                return "failed"
            wait = max(_backoff(attempt), min(result.after, BACKOFF_MAX))
            log.info("webhook %s: delivery %s (%s) attempt %d/%d: %s; retrying in %.1f s",
                     hook.origin, delivery.id, delivery.event, attempt, hook.attempts,
                     result.what, wait)
            if self._stop.wait(wait):
                return "abandoned"
        return "failed"  # (not reached: attempts >= 1)

    # the spool ------------------------------------------------------------------------------

    def _spool_path(self, delivery: _Delivery) -> str | None:
        if self.spool_dir is None:
            return None
        return os.path.join(self.spool_dir, f"{delivery.id}.json")

    def _spool(self, delivery: _Delivery) -> None:
        """Keep ``delivery`` in the spool (idempotent; not once it is done)."""
        path = self._spool_path(delivery)
        if path is None:
            return
        with self._spool_lock:
            if not delivery.done and not os.path.exists(path):
                self._write_spool(delivery, path)

    def _write_spool(self, delivery: _Delivery, path: str) -> None:
        record = {"url": self.hooks[delivery.hook].url, "event": delivery.event,
                  "id": delivery.id, "body": delivery.body.decode()}
        try:
            os.makedirs(self.spool_dir or ".", mode=0o700, exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(record, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            with self._cond:
                self._spooled += 1
        except OSError as exc:
            log.error("webhook delivery %s (%s) not kept in %s: %s", delivery.id,
                      delivery.event, self.spool_dir, exc)

    def _finish(self, delivery: _Delivery) -> None:
        """``delivery`` needs no more sending: remove its spool file."""
        path = self._spool_path(delivery)
        with self._spool_lock:
            delivery.done = True
            if path is None:
                return
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.error("webhook spool file %s not removed: %s", path, exc)

    def _load_spool(self, spool_dir: str) -> None:
        """Queue the deliveries kept in ``spool_dir`` (oldest first) for the hooks with their
        URL and event; files for a hook no longer configured are left alone, and deliveries
        kept longer than :data:`SPOOL_MAX_AGE` are given up (their files removed)."""
        try:
            names = [n for n in os.listdir(spool_dir) if n.endswith(".json")]
        except FileNotFoundError:
            return
        except OSError as exc:
            log.error("webhook spool %s not read: %s", spool_dir, exc)
            return
        records: list[tuple[float, _Delivery]] = []
        for name in names:
            path = os.path.join(spool_dir, name)
            try:
                with open(path, encoding="utf-8") as fh:
                    record = json.load(fh)
                url, event, delivery_id, text = (record["url"], record["event"], record["id"],
                                                 record["body"])
                mtime = os.path.getmtime(path)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("webhook spool file %s is not readable, left alone: %s", path, exc)
                continue
            if name != f"{delivery_id}.json":
                log.warning("webhook spool file %s: its id is %r; left alone", path,
                            delivery_id)
                continue
            if time.time() - mtime > SPOOL_MAX_AGE:
                log.warning("webhook delivery %s (%s) kept in %s since %s: older than %d days, "
                            "given up", delivery_id, event, spool_dir,
                            time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(mtime)),
                            SPOOL_MAX_AGE // 86400)
                try:
                    os.unlink(path)
                except OSError as exc:
                    log.error("webhook spool file %s not removed: %s", path, exc)
                continue
            index = next((i for i, h in enumerate(self.hooks)
                          if h.url == url and event in h.events), None)
            if index is None:
                log.info("webhook spool file %s: no configured hook for it; left alone", path)
                continue
            records.append((mtime, _Delivery(index, event, delivery_id, text.encode())))
        for _, delivery in sorted(records, key=lambda r: r[0]):
            self._enqueue(delivery)
