"""Let a test host (tests.harness.fleet) use this machine's pip configuration.

A test host reaches only the bridge address, and this machine's pip configuration may name
remote indexes (HTTPS, through a certificate bundle of this machine), local ``file://``
indexes and ``find-links`` directories, and a constraints file -- none of which a host can use
as they are. ``PipRelay`` is a small HTTP server on the bridge address that

* tunnels ``CONNECT`` requests (pip's HTTPS through a proxy, ``PIP_PROXY``) and forwards
  plain ``http://`` requests made to it as a proxy: the host's pip talks to the same remote
  indexes, resolved and reached from this machine;
* serves the local directories that the configuration names (and nothing else of this machine's
  file system) over HTTP, each at its own path: ``file:///opt/pypi/simple`` becomes
  ``http://BRIDGE:PORT/opt/pypi/simple``, so relative links in index pages still resolve.

``host_settings(DIR)`` then gives the ``PIP_*`` environment for the host (the machine's settings,
read from ``pip config list`` at run time -- environment over the ``install`` section over
``global`` -- with local locations rewritten to the relay, and the relay trusted and set as the
proxy) and the files to copy into the host under DIR (certificate bundle, constraints): no
index's host name is written anywhere. A ``proxy`` the machine's configuration sets is not
used: the relay connects directly.

    with PipRelay("169.254.77.1") as relay:
        env, files = relay.host_settings("/var/tmp/tectum-pip")
"""

from __future__ import annotations

import ast
import contextlib
import http.client
import os
import selectors
import socket
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from collections.abc import Mapping
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

#: settings whose value is a list of index URLs, file:// URLs or paths (space separated)
LOCATION_KEYS = frozenset({"index-url", "extra-index-url", "find-links"})
#: settings whose value is a file of this machine that pip reads: copied into the host
FILE_KEYS = frozenset({"cert", "client-cert", "constraint", "requirement"})
#: settings that name places on this machine or would bypass the relay: not passed on
DROPPED_KEYS = frozenset({"proxy", "cache-dir", "log", "log-file", "target", "prefix", "root",
                          "src", "config-file", "trusted-host"})
#: precedence of ``pip config list`` sections, lowest first (pip's own order for ``install``)
SECTIONS = ("global", "install", ":env:")

_HOP_HEADERS = frozenset({"connection", "keep-alive", "proxy-authenticate",
                          "proxy-authorization", "proxy-connection", "te", "trailers",
                          "transfer-encoding", "upgrade"})


class PipRelayError(RuntimeError):
    """The machine's pip configuration could not be read."""


def machine_pip_settings(python: str = sys.executable) -> dict[str, str]:
    """This machine's effective pip settings for ``pip install``: ``{key: value}`` from
    ``PYTHON -m pip config list`` (files and ``PIP_*`` environment), environment over the
    ``install`` section over ``global``. Raises PipRelayError when pip cannot be run."""
    proc = subprocess.run([python, "-m", "pip", "config", "list"], capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise PipRelayError(f"{python} -m pip config list failed: {proc.stderr.strip()}")
    found: dict[str, dict[str, str]] = {section: {} for section in SECTIONS}
    for line in proc.stdout.splitlines():
        name, sep, raw = line.partition("=")
        section, dot, key = name.rpartition(".")
        if not sep or not dot or section not in found:
            continue
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        found[section][key] = str(value)
    settings: dict[str, str] = {}
    for section in SECTIONS:
        settings.update(found[section])
    return settings


def _local_path(item: str) -> Path | None:
    """The local path a pip location names (a file:// URL or a path), or None for a URL."""
    parts = urllib.parse.urlsplit(item)
    if parts.scheme == "file":
        return Path(urllib.request.url2pathname(parts.path))
    if parts.scheme in ("http", "https"):
        return None
    return Path(item).absolute()


class _Handler(SimpleHTTPRequestHandler):
    relay: PipRelay

    def __init__(self, *args: Any, relay: PipRelay, **kwargs: Any) -> None:
        self.relay = relay
        super().__init__(*args, directory="/", **kwargs)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        self.relay.note(f"{self.address_string()} {format % args}")

    # -- proxying ---------------------------------------------------------------------------

    def do_CONNECT(self) -> None:
        host, _, port = self.path.rpartition(":")
        try:
            upstream = socket.create_connection((host.strip("[]"), int(port)), timeout=30)
        except (OSError, ValueError) as exc:
            self.send_error(502, f"cannot reach {self.path}: {exc}")
            return
        self.send_response(200, "Connection established")
        self.end_headers()
        self.close_connection = True
        self.relay.tunnel(self.connection, upstream)

    def _local_request(self) -> bool:
        """Make an absolute URI that names the relay itself a path; False if it is a request
        to forward."""
        if not self.path.startswith(("http://", "https://")):
            return True
        parts = urllib.parse.urlsplit(self.path)
        if parts.netloc != self.relay.netloc:
            return False
        self.path = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
        return True

    def _forward(self) -> None:
        parts = urllib.parse.urlsplit(self.path)
        if parts.scheme != "http" or not parts.hostname:
            self.send_error(400, "only http:// URIs are forwarded; use CONNECT for https")
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
        target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
        conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=60)
        try:
            conn.request(self.command, target, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
        except OSError as exc:
            self.send_error(502, f"cannot reach {parts.netloc}: {exc}")
            return
        finally:
            conn.close()
        self.send_response(resp.status, resp.reason)
        for key, value in resp.getheaders():
            if key.lower() not in _HOP_HEADERS and key.lower() != "content-length":
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        if self._local_request():
            super().do_GET()
        else:
            self._forward()

    def do_HEAD(self) -> None:
        if self._local_request():
            super().do_HEAD()
        else:
            self._forward()

    # -- local files --------------------------------------------------------------------------

    def send_head(self) -> Any:
        path = os.path.realpath(self.translate_path(self.path))
        if not self.relay.serves(path):
            self.send_error(404, "not a location of this machine's pip configuration")
            return None
        return super().send_head()


class PipRelay:
    """The relay on ADDRESS (a free port); a context manager. See the module docstring."""

    def __init__(self, address: str, settings: Mapping[str, str] | None = None) -> None:
        self.address = address
        self.settings = dict(machine_pip_settings() if settings is None else settings)
        self.roots: set[str] = set()
        self.log: list[str] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the relay is not started")
        return int(self._server.server_address[1])

    @property
    def netloc(self) -> str:
        return f"{self.address}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.netloc}"

    def start(self) -> PipRelay:
        server = ThreadingHTTPServer((self.address, 0), partial(_Handler, relay=self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="tectum-pip-relay", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every tunnel still open."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.close()
            self._open.clear()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> PipRelay:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def note(self, line: str) -> None:
        with self._lock:
            self.log.append(line)

    def serves(self, path: str) -> bool:
        """True if PATH (resolved) lies in a location the configuration names."""
        return any(path == root or path.startswith(root.rstrip("/") + "/") for root in self.roots)

    def tunnel(self, client: socket.socket, upstream: socket.socket) -> None:
        """Copy bytes both ways until either side closes (or the relay stops)."""
        with self._lock:
            self._open.update((client, upstream))
        peer = {client: upstream, upstream: client}
        try:
            with selectors.DefaultSelector() as sel:
                sel.register(client, selectors.EVENT_READ)
                sel.register(upstream, selectors.EVENT_READ)
                while not self._stopping.is_set():
                    for key, _ in sel.select(timeout=0.5):
                        sock: socket.socket = key.fileobj  # type: ignore[assignment]
                        data = sock.recv(65536)
                        if not data:
                            return
                        peer[sock].sendall(data)
        except OSError:
            return
        finally:
            with self._lock:
                self._open.difference_update((client, upstream))
            with contextlib.suppress(OSError):
                upstream.close()

    def _relay_location(self, item: str, *, index: bool) -> str:
        path = _local_path(item)
        if path is None:
            return item  # a remote URL: reached through the relay as a proxy
        real = Path(os.path.realpath(path))
        # an index page links to its files relative to itself (../../files/x.whl): serve the
        # index's parent too
        self.roots.add(str(real.parent if index else real))
        quoted = urllib.parse.quote(str(real))
        return f"{self.url}{quoted}/" if real.is_dir() else f"{self.url}{quoted}"

    def host_settings(self, files_dir: str) -> tuple[dict[str, str], dict[str, bytes]]:
        """The ``PIP_*`` environment for a host's pip, and the files to put in the host first
        (``{path in the host: content}``, under FILES_DIR). Call after start()."""
        env: dict[str, str] = {}
        files: dict[str, bytes] = {}
        for key, value in sorted(self.settings.items()):
            if key in DROPPED_KEYS:
                continue
            if key in LOCATION_KEYS:
                value = " ".join(self._relay_location(item, index=key != "find-links")
                                 for item in value.split())
            elif key in FILE_KEYS:
                source = Path(value).expanduser()
                if not source.is_file():
                    continue
                target = f"{files_dir.rstrip('/')}/{len(files)}-{source.name}"
                files[target] = source.read_bytes()
                value = target
            env["PIP_" + key.upper().replace("-", "_")] = value
        trusted = self.settings.get("trusted-host", "").split()
        env["PIP_TRUSTED_HOST"] = " ".join([*trusted, self.netloc])
        env["PIP_PROXY"] = self.url
        return env, files
