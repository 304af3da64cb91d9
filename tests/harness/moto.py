"""A moto server (AWS faked locally) for the aws provider's and the S3 backend's tests.

``moto_server`` (session fixture): ``moto_server -H 127.0.0.1 -p PORT`` (the ``moto[server]``
package), started once per test session as a child of the test process, waited on until it
answers, and stopped (SIGTERM, then SIGKILL) when the session ends. Yields a :class:`Moto`.

``moto`` (per test): the same server, emptied first (``POST /moto-api/reset``), with the
environment a boto3 client needs to reach it (fake credentials, a region,
``AWS_ENDPOINT_URL``) set for the test and restored afterwards. A test that uses it talks to
moto through the same boto3 code path as to AWS.

What moto does not fake: instances never boot (their state is ``running`` at once), waiters pass
at once, any credentials pass, and IAM policies are not enforced. Never open a connection to an
address moto hands out for an instance.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

#: the region every test uses
REGION = "eu-west-1"
#: environment of a boto3 client talking to the test's moto server (credentials are fake:
#: moto accepts any)
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": REGION,
                    "AWS_REGION": REGION}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Moto:
    """A running moto server: :attr:`url` (``http://127.0.0.1:PORT``)."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log
        self.url = f"http://127.0.0.1:{port}"

    def reset(self) -> None:
        """Forget every object (moto's ``POST /moto-api/reset``)."""
        req = urllib.request.Request(f"{self.url}/moto-api/reset", data=b"", method="POST")
        with urllib.request.urlopen(req, timeout=30) as resp:
            resp.read()

    def env(self) -> dict[str, str]:
        """The environment of a process that should reach this server with boto3."""
        return {**FAKE_CREDENTIALS, "AWS_ENDPOINT_URL": self.url}

    def client(self, service: str) -> object:
        """A boto3 client of ``service`` on this server (for a test's own checks)."""
        import boto3

        return boto3.client(service, region_name=REGION, endpoint_url=self.url,
                            aws_access_key_id="testing", aws_secret_access_key="testing")


def _binary() -> list[str]:
    found = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    if found:
        return [found]
    return [sys.executable, "-m", "moto.server"]


@contextlib.contextmanager
def running_moto(tmp: Path) -> Iterator[Moto]:
    """A moto server on a free 127.0.0.1 port for the block (see the module docstring)."""
    port = _free_port()
    log = tmp / f"moto-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([*_binary(), "-H", "127.0.0.1", "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = Moto(proc, port, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"moto_server exited ({proc.returncode}):\n"
                                   + log.read_text(errors="replace")[-2000:])
            try:
                server.reset()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not answer within 60 s:\n"
                                       + log.read_text(errors="replace")[-2000:]) from None
                time.sleep(0.1)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moto]:
    with running_moto(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture
def moto(moto_server: Moto, monkeypatch: pytest.MonkeyPatch) -> Iterator[Moto]:
    moto_server.reset()
    for key, value in moto_server.env().items():
        monkeypatch.setenv(key, value)
    for key in list(os.environ):
        if key.startswith("AWS_ENDPOINT_URL_") or key in ("AWS_PROFILE",):
            monkeypatch.delenv(key)
    yield moto_server
    moto_server.reset()
