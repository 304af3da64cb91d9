"""An etcd server (``/usr/bin/etcd``, Debian's ``etcd-server`` 3.4) for the etcd provider's tests.

``running_etcd(tmp)``: ``etcd`` on two free 127.0.0.1 ports (client and peer) with a data
directory under ``tmp``, as a child of the test process; waited on until ``/health`` answers;
stopped by its pid (SIGTERM, then SIGKILL) at the end; it runs in a process group of its own
and is SIGKILLed by the kernel when the test process dies (``PR_SET_PDEATHSIG``), so a killed
pytest leaves no etcd running. :class:`Etcd` can also be killed
(``kill()``, SIGKILL: etcd down mid-apply) and started again on the same ports and data
(``start()``).

``shared_etcd()``: one server for the whole test process, started on first use (conformance
case builders have no fixtures) and stopped at exit; the session fixture ``etcd_server``
yields it. ``etcd`` (per test): an :class:`EtcdSpace` — a unique key prefix on that server
(``/tectum-test/<random>/``) and the provider settings that reach it; every key under the
prefix is deleted after the test. Tests that stop the server use a server of their own
(``running_etcd``), never the shared one.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tectum.providers.etcd.client import EtcdClient, prefix_end

ETCD = "/usr/bin/etcd"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _free_ports(n: int) -> list[int]:
    """``n`` distinct free ports, all bound at once while chosen (so they differ); another
    process may still take one before etcd binds it: :meth:`Etcd.start` then tries new
    ports."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _die_with_parent() -> None:
    """In the child before exec: its own process group, and SIGKILL when the test process
    dies (Linux ``prctl(PR_SET_PDEATHSIG)``), so a killed pytest leaves no etcd behind."""
    import ctypes

    os.setpgrp()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # (1: PR_SET_PDEATHSIG)


class Etcd:
    """One etcd server: :attr:`endpoint` (``127.0.0.1:PORT``), :attr:`settings` (the
    ``[providers.etcd]`` table reaching it)."""

    def __init__(self, data: Path, tls: tuple[Path, Path, Path] | None = None,
                 args: tuple[str, ...] = ()) -> None:
        self.data = data
        #: (CA, server certificate, server key): clients must show a certificate of the CA
        self.tls = tls
        #: more etcd flags (``--auth-token-ttl 2``)
        self.args = args
        self.port, self.peer = _free_ports(2)
        self.endpoint = f"127.0.0.1:{self.port}"
        self.log = data.parent / f"etcd-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = False
        self._client: EtcdClient | None = None

    @property
    def settings(self) -> dict[str, Any]:
        return {"endpoints": [self.endpoint], "timeout": 5}

    def toml(self) -> str:
        """The ``[providers.etcd]`` table of a project reaching this server."""
        return f'[providers.etcd]\nendpoints = ["{self.endpoint}"]\ntimeout = 3\n'

    def start(self) -> None:
        """Start (or start again, same ports and data) and wait until it answers. A first
        start whose ports were taken meanwhile tries new ones (twice more)."""
        for attempt in range(3):
            try:
                self._start()
                self.started = True
                return
            except RuntimeError:
                if attempt == 2 or self.proc is None or self.proc.poll() is None \
                        or "address already in use" not in self.log.read_text(errors="replace"):
                    raise
                if self.started:
                    raise  # (a restart keeps its ports: its data names them)
                shutil.rmtree(self.data, ignore_errors=True)
                self.port, self.peer = _free_ports(2)
                self.endpoint = f"127.0.0.1:{self.port}"
                self.log.write_bytes(b"")

    def _start(self) -> None:
        name = f"t{self.port}"
        peer = f"http://127.0.0.1:{self.peer}"
        client = f"{'https' if self.tls else 'http'}://{self.endpoint}"
        tls: list[str] = []
        context = None
        if self.tls is not None:
            ca, cert, key = self.tls
            tls = ["--cert-file", str(cert), "--key-file", str(key), "--trusted-ca-file",
                   str(ca), "--client-cert-auth"]
            context = ssl.create_default_context(cafile=str(ca))
            context.load_cert_chain(str(cert), str(key))
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [ETCD, "--name", name, "--data-dir", str(self.data),
                 "--listen-client-urls", client, "--advertise-client-urls", client,
                 "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                 "--initial-cluster", f"{name}={peer}", "--log-level", "warn",
                 "--logger", "zap", *tls, *self.args],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent)  # noqa: PLW1509 - only prctl, setpgrp
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited ({self.proc.returncode}):\n"
                                   + self.log.read_text(errors="replace")[-2000:])
            try:
                with urllib.request.urlopen(f"{client}/health", timeout=2,
                                            context=context) as resp:
                    if b"true" in resp.read():
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("etcd did not answer within 60 s:\n"
                                   + self.log.read_text(errors="replace")[-2000:])
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL the server (by its pid) and wait for it."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s; close the test's client."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def client(self) -> EtcdClient:
        """A client of the test's own (for checks and changes made "by hand")."""
        if self._client is None:
            self._client = EtcdClient([self.endpoint], timeout=5)
        return self._client

    def delete_prefix(self, prefix: str) -> None:
        raw = prefix.encode()
        self.client().call("delete a prefix", lambda c: c.delete_range(raw, prefix_end(raw)))

    def keys(self, prefix: str) -> dict[str, str]:
        """Every key under ``prefix`` with its value."""
        found = self.client().get_prefixes([prefix]).get(prefix, {})
        return {k: kv.value for k, kv in found.items()}

    def put(self, key: str, value: str) -> None:
        self.client().put(key, value)


@contextlib.contextmanager
def running_etcd(tmp: Path, tls: tuple[Path, Path, Path] | None = None,
                 args: tuple[str, ...] = ()) -> Iterator[Etcd]:
    """An etcd server for the block (see the module docstring); with ``tls`` (CA, server
    certificate, server key) it serves TLS only and wants client certificates; ``args``: more
    etcd flags."""
    server = Etcd(tmp / f"etcd-data-{secrets.token_hex(3)}", tls, args)
    try:
        server.start()
        yield server
    finally:
        server.stop()


_shared: list[Etcd] = []
_shared_lock = threading.Lock()


def shared_etcd() -> Etcd:
    """The test process's etcd server (started on first use, stopped at exit)."""
    with _shared_lock:
        if not _shared:
            if not os.path.exists(ETCD):
                pytest.skip(f"{ETCD} is not installed (apt-get install etcd-server)")
            tmp = Path(tempfile.mkdtemp(prefix="tectum-etcd-"))
            server = Etcd(tmp / "data")
            server.start()

            def stop() -> None:
                server.stop()
                shutil.rmtree(tmp, ignore_errors=True)

            atexit.register(stop)
            _shared.append(server)
        return _shared[0]


class EtcdSpace:
    """A test's own part of the shared server: every key it makes is under :attr:`prefix`."""

    def __init__(self, server: Etcd) -> None:
        self.server = server
        self.prefix = f"/tectum-test/{secrets.token_hex(5)}/"

    @property
    def settings(self) -> dict[str, Any]:
        return self.server.settings

    def key(self, name: str) -> str:
        return self.prefix + name

    def keys(self) -> dict[str, str]:
        """Every key of the test with its value."""
        return self.server.keys(self.prefix)

    def clean(self) -> None:
        self.server.delete_prefix(self.prefix)


@contextlib.contextmanager
def etcd_space() -> Iterator[EtcdSpace]:
    """A unique prefix on the shared server, emptied afterwards."""
    space = EtcdSpace(shared_etcd())
    try:
        yield space
    finally:
        space.clean()


@pytest.fixture(scope="session")
def etcd_server() -> Etcd:
    return shared_etcd()


@pytest.fixture
def etcd(etcd_server: Etcd) -> Iterator[EtcdSpace]:
    with etcd_space() as space:
        yield space
