"""Webhooks (tectum.webhooks) against real HTTP servers on 127.0.0.1 (stdlib http.server in a
thread): signatures that verify, retries on 5xx/429 with one delivery id, a hung hook cut by
its timeout without blocking the caller, no retry on 4xx, event filters, masking, the spool,
a full queue, and hooks-file errors as diagnostics."""

from __future__ import annotations

import http.server
import ipaddress
import json
import logging
import os
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tectum import webhooks
from tectum.diagnostics import DiagnosticError
from tectum.masking import MASK, REDACTOR
from tectum.webhooks import Notifier, Webhook, sign, verify

HANG = "hang"
TRICKLE = "trickle"


class Received:
    """One request a hook got: its headers and body."""

    def __init__(self, path: str, headers: dict[str, str], body: bytes) -> None:
        self.path = path
        self.headers = headers
        self.body = body

    @property
    def document(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data

    def verifies(self, secret: str) -> bool:
        return verify(secret, self.body, int(self.headers["X-Tectum-Timestamp"]),
                      self.headers["X-Tectum-Signature"])


class HookServer:
    """A webhook receiver answering POSTs from ``script`` (a status, ``(status, headers)``,
    :data:`HANG`: no answer until the test ends, or :data:`TRICKLE`: an answer that never
    ends), then 200."""

    def __init__(self, script: Sequence[Any] = (), tls: ssl.SSLContext | None = None) -> None:
        self.scheme = "http" if tls is None else "https"
        self.script = list(script)
        self.requests: list[Received] = []
        self.release = threading.Event()
        self.lock = threading.Condition()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers.get("Content-Length", "0"))
                data = self.rfile.read(length)
                with server.lock:
                    server.requests.append(Received(self.path, dict(self.headers.items()),
                                                    data))
                    action = server.script.pop(0) if server.script else 200
                    server.lock.notify_all()
                if action == HANG:
                    server.release.wait(30)
                    return
                if action == TRICKLE:  # a header line every 0.1 s: no socket read times out
                    try:
                        self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                        while not server.release.wait(0.1):
                            self.wfile.write(b"X-Slow: 1\r\n")
                            self.wfile.flush()
                    except OSError:
                        pass
                    return
                status, headers = action if isinstance(action, tuple) else (action, {})
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False  # type: ignore[attr-defined]
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()
        self.token = uuid.uuid4().hex  # a path secret, as in Slack's hook URLs

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.httpd.server_address[1]}/hooks/{self.token}"

    def wait_for(self, count: int, timeout: float = 10) -> None:
        with self.lock:
            assert self.lock.wait_for(lambda: len(self.requests) >= count, timeout), (
                f"{len(self.requests)} requests, expected {count}")

    def stop(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def hook_server() -> Iterator[type[HookServer]]:
    made: list[HookServer] = []

    class Made(HookServer):
        def __init__(self, script: Sequence[Any] = (), tls: ssl.SSLContext | None = None) -> None:
            super().__init__(script, tls)
            made.append(self)

    yield Made
    for server in made:
        server.stop()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY",
                 "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)


def new_secret() -> str:
    return "whsec-" + uuid.uuid4().hex


def report(**extra: Any) -> dict[str, Any]:
    return {"workspace": "default", "host": "web-1", "commit": "3f2a9c1", "mode": "remediate",
            "status": "failed", "errors": ["apply failed"], **extra}


# signing -------------------------------------------------------------------------------------

def test_signature_verifies_and_tampering_fails(hook_server: type[HookServer]) -> None:
    secret = new_secret()
    server = hook_server()
    notifier = Notifier([Webhook(server.url, secret)])
    notifier.notify("drift", report(status="drift-found", drifted=["host.file.motd"]))
    notifier.close(10)
    assert notifier.delivered == 1 and notifier.failed == 0
    [got] = server.requests
    ts = int(got.headers["X-Tectum-Timestamp"])
    assert abs(ts - time.time()) < 30
    assert got.headers["X-Tectum-Signature"] == sign(secret, got.body, ts)
    assert got.verifies(secret)
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["X-Tectum-Event"] == "drift"
    doc = got.document
    assert sorted(doc) == ["event", "id", "run", "timestamp"]
    assert doc["event"] == "drift" and doc["id"] == got.headers["X-Tectum-Delivery"]
    assert str(uuid.UUID(doc["id"])) == doc["id"]
    assert doc["run"]["drifted"] == ["host.file.motd"]
    assert got.body == json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    signature = got.headers["X-Tectum-Signature"]
    assert not verify(secret, got.body.replace(b"drift", b"fails", 1), ts, signature)
    assert not verify(new_secret(), got.body, ts, signature)
    assert not verify(secret, got.body, ts, signature, now=ts + 301)  # stale: a replay
    assert not verify(secret, got.body, ts, signature, now=ts - 301)  # from the future
    assert verify(secret, got.body, ts, signature, now=ts + 299)
    assert not verify(secret, got.body, ts + 1, signature, now=ts)  # timestamp is signed
    assert not verify(secret, got.body, ts, signature.removeprefix("sha256="), now=ts)
    assert not verify(secret, got.body, ts, "sha256=\u00e9" + signature[8:], now=ts)


# retries -------------------------------------------------------------------------------------

def test_500_twice_then_200_is_one_delivery_in_three_attempts(
        hook_server: type[HookServer], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tectum.webhooks")
    secret = new_secret()
    server = hook_server([500, 500, 200])
    notifier = Notifier([Webhook(server.url, secret, attempts=4)])
    notifier.notify("failed", report())
    notifier.close(15)
    assert (notifier.delivered, notifier.failed) == (1, 0)
    assert len(server.requests) == 3
    assert len({r.headers["X-Tectum-Delivery"] for r in server.requests}) == 1
    assert len({r.body for r in server.requests}) == 1
    assert all(r.verifies(secret) for r in server.requests)
    assert "HTTP 500" in caplog.text and "retrying" in caplog.text
    assert server.token not in caplog.text and secret not in caplog.text  # origin only


def test_429_is_retried_and_400_or_a_redirect_is_not(hook_server: type[HookServer]) -> None:
    busy = hook_server([(429, {"Retry-After": "0"}), 200])
    bad = hook_server([400])
    moved = hook_server([(302, {"Location": "http://127.0.0.1:9/elsewhere"})])
    notifier = Notifier([Webhook(s.url, new_secret(), attempts=4) for s in (busy, bad, moved)])
    notifier.notify("pending-approval", report(status="pending", run_id="r-1"))
    notifier.close(15)
    assert (len(busy.requests), len(bad.requests), len(moved.requests)) == (2, 1, 1)
    assert (notifier.delivered, notifier.failed) == (1, 2)


def test_a_hung_hook_never_blocks_the_caller(hook_server: type[HookServer]) -> None:
    server = hook_server([HANG] * 10)
    notifier = Notifier([Webhook(server.url, new_secret(), timeout=2.0, attempts=2)])
    notifier.notify("failed", report())
    # returned while the delivery still hangs (a blocking notify would return only after
    # both attempts of 2 s had failed): no wall-clock bound, which a loaded machine breaks
    assert (notifier.delivered, notifier.failed) == (0, 0)
    start = time.monotonic()
    notifier.close(15)  # two attempts of 2 s and a backoff of 0.25..0.5 s
    assert time.monotonic() - start < 10
    assert (notifier.delivered, notifier.failed) == (0, 1)
    assert len(server.requests) == 2
    assert server.requests[0].headers["X-Tectum-Delivery"] == \
        server.requests[1].headers["X-Tectum-Delivery"]

    # the timeout bounds the whole attempt, not each read
    trickle = hook_server([TRICKLE])
    cut = Notifier([Webhook(trickle.url, new_secret(), timeout=0.5, attempts=1)])
    cut.notify("failed", report())
    start = time.monotonic()
    cut.close(10)
    assert time.monotonic() - start < 4  # (0.5 s, with room for a loaded machine)
    assert (cut.delivered, cut.failed) == (0, 1)

    # close() gives up within its own timeout, whatever the hook's
    slow = Notifier([Webhook(server.url, new_secret(), timeout=5, attempts=4)])
    slow.notify("failed", report())
    slow.notify("drift", report())
    server.wait_for(3)
    start = time.monotonic()
    slow.close(0.3)
    assert time.monotonic() - start < 2.5  # (not the hook's 5 s × 4 attempts)
    assert slow.delivered == 0 and slow.failed >= 1  # the queued one; the one in flight later
    slow.notify("failed", report())  # after close: ignored, no raise
    time.sleep(0.1)
    assert len(server.requests) == 3


# events, masking, bad calls -----------------------------------------------------------------

def test_a_hook_gets_only_its_events(hook_server: type[HookServer]) -> None:
    failures, everything = hook_server(), hook_server()
    notifier = Notifier([Webhook(failures.url, new_secret(), events=frozenset({"failed"})),
                         Webhook(everything.url, new_secret())])
    notifier.notify("drift", report(status="drift-found"))
    notifier.notify("failed", report())
    notifier.notify("pending-approval", report(status="pending"))
    notifier.close(10)
    assert [r.headers["X-Tectum-Event"] for r in failures.requests] == ["failed"]
    assert sorted(r.document["event"] for r in everything.requests) == \
        ["drift", "failed", "pending-approval"]
    assert notifier.delivered == 4
    ids = [r.headers["X-Tectum-Delivery"] for r in failures.requests + everything.requests]
    assert len(set(ids)) == 4  # one id per delivery


def test_secrets_in_the_payload_are_masked(hook_server: type[HookServer],
                                           caplog: pytest.LogCaptureFixture) -> None:
    password = "pw-" + uuid.uuid4().hex
    REDACTOR.add(password)  # as secret("DB_PASSWORD") registers it
    secret = new_secret()
    server = hook_server()
    notifier = Notifier([Webhook(server.url, secret)])
    notifier.notify("failed", report(
        errors=[f"postgresql.role.app: FATAL: password authentication failed ({password})"],
        details={f"conn {password}": {"dsn": f"postgresql://app:{password}@db/app",
                                      "again": (password, 3, None, True, 1.5)}},
        hook_secret=secret))
    notifier.close(10)
    [got] = server.requests
    assert got.verifies(secret)
    text = got.body.decode()
    assert password not in text and secret not in text
    assert MASK in got.document["run"]["errors"][0]
    assert got.document["run"]["details"][f"conn {MASK}"]["again"] == [MASK, 3, None, True, 1.5]
    assert got.document["run"]["hook_secret"] == MASK
    assert password not in caplog.text and secret not in caplog.text


def test_notify_never_raises(hook_server: type[HookServer],
                             caplog: pytest.LogCaptureFixture) -> None:
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no")

    server = hook_server()
    notifier = Notifier([Webhook(server.url, new_secret())])
    notifier.notify("no-such-event", report())
    notifier.notify("failed", {"x": Unprintable()})
    notifier.notify("failed", report(when=Path("/tmp"), ratio=float("nan")))  # str()-ed
    notifier.close(10)
    assert len(server.requests) == 1
    assert server.requests[0].document["run"]["when"] == "/tmp"
    assert server.requests[0].document["run"]["ratio"] == "nan"
    assert "no-such-event" in caplog.text and "not queued" in caplog.text
    Notifier([]).notify("failed", report())  # no hooks: nothing to do


def test_a_full_queue_drops_the_oldest(hook_server: type[HookServer]) -> None:
    server = hook_server([HANG])
    notifier = Notifier([Webhook(server.url, new_secret(), timeout=5, attempts=1)])
    notifier.notify("failed", report(n=-1))
    server.wait_for(1)  # in flight: the queue is empty
    start = time.monotonic()
    for n in range(webhooks.QUEUE_SIZE + 3):
        notifier.notify("failed", report(n=n))
    assert time.monotonic() - start < 30  # (never waiting on the hung hook's 5 s each)
    assert notifier.dropped == 3
    notifier.close(0.2)
    assert notifier.failed == webhooks.QUEUE_SIZE and notifier.delivered == 0


# the spool -----------------------------------------------------------------------------------

def test_undelivered_is_spooled_and_sent_by_the_next_notifier(
        hook_server: type[HookServer], tmp_path: Path) -> None:
    secret = new_secret()
    server = hook_server([503])
    spool = tmp_path / "spool"
    first = Notifier([Webhook(server.url, secret, attempts=1)], spool_dir=str(spool))
    first.notify("failed", report(errors=["boom"]))
    first.close(10)
    assert (first.delivered, first.failed, first.spooled) == (0, 1, 1)
    [kept] = list(spool.iterdir())
    assert oct(kept.stat().st_mode & 0o777) == oct(0o600)
    assert secret not in kept.read_text()
    delivery_id = server.requests[0].headers["X-Tectum-Delivery"]
    assert kept.name == f"{delivery_id}.json"

    # a hook no longer configured leaves the file alone
    other = hook_server()
    unrelated = Notifier([Webhook(other.url, secret)], spool_dir=str(spool))
    unrelated.close(5)
    assert other.requests == [] and kept.exists()

    second = Notifier([Webhook(server.url, secret, attempts=1)], spool_dir=str(spool))
    second.close(10)
    assert (second.delivered, second.failed) == (1, 0)
    assert len(server.requests) == 2
    again = server.requests[1]
    assert again.headers["X-Tectum-Delivery"] == delivery_id and again.verifies(secret)
    assert again.body == server.requests[0].body
    assert list(spool.iterdir()) == []

    # a delivery kept longer than SPOOL_MAX_AGE is given up, not sent days late
    third = Notifier([Webhook(server.url, secret, attempts=1)], spool_dir=str(spool))
    server.script.append(503)
    third.notify("failed", report())
    third.close(10)
    [old] = list(spool.iterdir())
    long_ago = time.time() - webhooks.SPOOL_MAX_AGE - 60
    os.utime(old, (long_ago, long_ago))
    Notifier([Webhook(server.url, secret, attempts=1)], spool_dir=str(spool)).close(10)
    assert len(server.requests) == 3 and list(spool.iterdir()) == []


def test_a_proxy_from_the_environment_is_used(hook_server: type[HookServer],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    target, proxy = hook_server(), hook_server()
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{proxy.httpd.server_address[1]}")
    via = Notifier([Webhook(target.url, new_secret())])
    via.notify("failed", report())
    via.close(10)
    assert [r.path for r in proxy.requests] == [target.url] and target.requests == []
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    direct = Notifier([Webhook(target.url, new_secret())])
    direct.notify("failed", report())
    direct.close(10)
    assert len(target.requests) == 1 and len(proxy.requests) == 1


# https ---------------------------------------------------------------------------------------

def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (and its key), its own issuer."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tectum webhook test")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def test_https_checks_the_certificate(hook_server: type[HookServer], tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch,
                                      caplog: pytest.LogCaptureFixture) -> None:
    cert_file, key_file = self_signed(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert_file, key_file)
    server = hook_server(tls=tls)
    secret = new_secret()

    untrusted = Notifier([Webhook(server.url, secret)])
    untrusted.notify("failed", report())
    untrusted.close(10)
    assert (untrusted.delivered, untrusted.failed) == (0, 1)  # not retried: 1 attempt
    assert "TLS certificate not accepted" in caplog.text and server.requests == []

    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))  # trusted as a private CA would be
    trusted = Notifier([Webhook(server.url, secret)])
    trusted.notify("failed", report())
    trusted.close(10)
    assert (trusted.delivered, trusted.failed) == (1, 0)
    [got] = server.requests
    assert got.verifies(secret)


# the hooks file ------------------------------------------------------------------------------

WHERE = "hooks.toml [[webhooks]] #1"


def test_from_table(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = new_secret()
    monkeypatch.setenv("TECTUM_TEST_WEBHOOK_SECRET", secret)
    hook = Webhook.from_table({"url": "https://hooks.example/t", "secret_env":
                               "TECTUM_TEST_WEBHOOK_SECRET", "events": ["failed"],
                               "timeout": 2, "attempts": 3}, WHERE)
    assert hook == Webhook("https://hooks.example/t", secret, frozenset({"failed"}), 2.0, 3)
    assert secret not in repr(hook) and REDACTOR.redact(secret) == MASK
    assert hook.origin == "https://hooks.example"
    default = Webhook.from_table({"url": "http://127.0.0.1:8080/x", "secret_env": "S"}, WHERE,
                                 environ={"S": secret})
    assert default.events == webhooks.EVENTS and (default.timeout, default.attempts) == (5, 4)


GOOD = {"url": "https://hooks.example/t", "secret_env": "S"}


@pytest.mark.parametrize(("table", "summary", "says"), [
    ({"secret_env": "S"}, "Missing webhook URL", "url is required"),
    ({**GOOD, "url": "ftp://hooks.example/tok-path"}, "Invalid webhook URL",
     "http:// or https://"),
    ({**GOOD, "url": "hooks.example/tok-path"}, "Invalid webhook URL", "http:// or https://"),
    ({**GOOD, "url": "https://u:p@hooks.example/t"}, "Invalid webhook URL", "credentials"),
    ({**GOOD, "url": "https://hooks.example:99999/tok-path"}, "Invalid webhook URL", "port"),
    ({**GOOD, "url": 5}, "Invalid webhook URL", "string"),
    ({**GOOD, "secret": "inline-secret-value-123"}, "Webhook secret in the project file",
     "use secret_env"),
    ({"url": GOOD["url"]}, "Missing webhook secret", "secret_env is required"),
    ({**GOOD, "secret_env": "UNSET_VAR"}, "Webhook secret not set", "UNSET_VAR"),
    ({**GOOD, "secret_env": "SHORT"}, "Webhook secret too short", "at least 16"),
    ({**GOOD, "events": ["failed", "drfit"]}, "Unknown webhook event", "drfit"),
    ({**GOOD, "events": []}, "Invalid webhook events", "non-empty list"),
    ({**GOOD, "events": "failed"}, "Invalid webhook events", "non-empty list"),
    ({**GOOD, "timeout": 0}, "Invalid webhook timeout", "more than 0"),
    ({**GOOD, "timeout": "5s"}, "Invalid webhook timeout", "number of seconds"),
    ({**GOOD, "attempts": 0}, "Invalid webhook attempts", "from 1 to 10"),
    ({**GOOD, "attempts": True}, "Invalid webhook attempts", "whole number"),
    ({**GOOD, "retries": 3}, "Unknown webhook setting", "retries"),
])
def test_from_table_errors(table: dict[str, Any], summary: str, says: str) -> None:
    env = {"S": new_secret(), "SHORT": "abc12345"}
    with pytest.raises(DiagnosticError) as raised:
        Webhook.from_table(table, WHERE, environ=env)
    [diag] = list(raised.value.diagnostics)
    assert diag.summary == summary
    assert says in diag.detail and diag.detail.startswith(WHERE)
    assert "inline-secret-value-123" not in diag.detail and env["S"] not in diag.detail
    assert "tok-path" not in diag.detail  # a URL's path may hold a token


def test_connection_refused_is_retried_then_given_up(
        caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as sock:  # a port nobody listens on (bound, not listening)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        notifier = Notifier([Webhook(f"http://127.0.0.1:{port}/x", new_secret(), attempts=2)])
        notifier.notify("failed", report())
        notifier.close(10)
    assert (notifier.delivered, notifier.failed, notifier.spooled) == (0, 1, 0)
    assert "failed after 2 attempts" in caplog.text and "ConnectionRefusedError" in caplog.text
