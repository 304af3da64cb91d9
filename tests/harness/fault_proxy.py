"""An HTTP proxy in front of a moto server that injects the faults AWS shows, and counts API
calls: set its :attr:`FaultProxy.url` as the endpoint (``endpoint_url`` /
``AWS_ENDPOINT_URL``) and every boto3 request goes through it.

Faults (each a rate from 0 to 1, drawn from one ``random.Random(seed)``, so a run is
reproducible given the same request order):

``throttle``    the request is refused as throttled, without reaching moto: EC2's
                ``400 RequestLimitExceeded``, IAM's ``400 Throttling``, DynamoDB's
                ``400 ThrottlingException``, S3's ``503 SlowDown``
``error``       ``500 InternalError`` (DynamoDB: ``InternalServerError``), without reaching moto
``reset``       the connection is reset (RST) before the request is forwarded
``lost``        a create (EC2 ``Create*`` but ``CreateTags``, ``RunInstances``,
                ``AuthorizeSecurityGroup*``, IAM ``CreateRole``, DynamoDB ``CreateTable``,
                S3 ``PUT /bucket``) is forwarded and made by moto, but its answer is lost:
                the connection is reset instead. The client cannot tell whether the object
                was made; botocore's own retries would make a second one. At ``lost=1.0``
                every attempt of every create is made and its answer lost.
``not_found``   eventual consistency: for the ``window`` requests after a create, a request
                (not a create or delete) that names one object (EC2 ``VpcId``,
                ``SubnetId``, ``GroupId``, ``InstanceId`` parameters, IAM ``RoleName``, an S3
                bucket path, DynamoDB ``TableName``) is answered
                with the service's "no such object" error
                (``InvalidVpcID.NotFound``..., ``NoSuchEntity``, ``NoSuchBucket``,
                ``ResourceNotFoundException``) without reaching moto

No fault ever hits moto's own ``/moto-api/``. Apart from ``lost``, a request is never both
forwarded and failed: a create that the client sees failing was not made. ``first`` injects
given faults into the first requests (so a test sees each kind for certain).
:attr:`FaultProxy.calls` counts every forwarded request as ``service:Action``
(``ec2:DescribeVpcs``, ``s3:GET /bucket?versioning``, ``dynamodb:DescribeTable``);
:attr:`FaultProxy.injected` counts the faults by kind.

Use :func:`fault_proxy` (a context manager) or the ``moto_faults`` fixture of
``tests/providers/aws/conftest.py``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import re
import socket
import struct
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_SERVICE = re.compile(r"Credential=[^/]+/\d+/[^/]+/([^/]+)/aws4_request")

#: EC2 parameters that name one object, and the code EC2 answers when it does not see it yet
_EC2_IDS = (("InstanceId", "InvalidInstanceID.NotFound"), ("SubnetId", "InvalidSubnetID.NotFound"),
            ("GroupId", "InvalidGroup.NotFound"), ("VpcId", "InvalidVpcID.NotFound"))

_CREATES = re.compile(r"^(Create|RunInstances|Put|AuthorizeSecurityGroup)")
#: requests never answered "not found" (a create, or a delete: AWS's deletes answer "not
#: found" only for what is gone, which a client rightly takes as done)
_NO_NOT_FOUND = re.compile(r"^(Create|RunInstances|Put|Authorize|Delete|Terminate|Revoke|"
                           r"DELETE|PUT)")


@dataclass
class Faults:
    """The rates of each fault (0 to 1), the eventual-consistency ``window`` (requests after
    a create) and the ``seed`` of the draws."""

    throttle: float = 0.0
    error: float = 0.0
    reset: float = 0.0
    lost: float = 0.0
    not_found: float = 0.0
    window: int = 4
    seed: int = 0
    #: faults injected into the first requests, one each, before any draw (e.g.
    #: ``("throttle", "error", "reset")``: a test then sees each kind for certain)
    first: tuple[str, ...] = ()


@dataclass
class _Request:
    service: str
    action: str
    params: dict[str, list[str]] = field(default_factory=dict)
    target_obj: str | None = None


class FaultProxy:
    """The proxy: forwards to ``upstream`` (``http://127.0.0.1:PORT``), injecting ``faults``.
    :meth:`start` / :meth:`stop`, or use :func:`fault_proxy`. Change :attr:`faults` at any
    time (e.g. ``Faults()`` for a clean read); :meth:`clear` empties the counts."""

    def __init__(self, upstream: str, faults: Faults | None = None) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        self.upstream_host = parsed.hostname or "127.0.0.1"
        self.upstream_port = parsed.port or 80
        self.faults = faults or Faults()
        self.calls: dict[str, int] = {}
        self.injected: dict[str, int] = {}
        self._rng = random.Random(self.faults.seed)
        self._fresh = 0
        self._primed = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # -- life -----------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        proxy = self

        class Handler(_Handler):
            owner = proxy

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        self._thread = threading.Thread(target=server.serve_forever, daemon=True,
                                        name="fault-proxy")
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def clear(self) -> None:
        """Forget the counts (:attr:`calls`, :attr:`injected`)."""
        with self._lock:
            self.calls.clear()
            self.injected.clear()

    def reseed(self, faults: Faults) -> None:
        """Use ``faults`` from now on, with a fresh generator of its seed."""
        with self._lock:
            self.faults = faults
            self._rng = random.Random(faults.seed)
            self._fresh = 0
            self._primed = 0

    def count(self, service: str, prefix: str = "") -> int:
        """The forwarded calls of ``service`` whose action starts with ``prefix``."""
        with self._lock:
            return sum(n for k, n in self.calls.items()
                       if k.startswith(f"{service}:{prefix}"))

    # -- deciding -------------------------------------------------------------------------
    def decide(self, req: _Request) -> str | None:
        """The fault to inject for ``req`` (``throttle``, ``error``, ``reset``, ``lost``,
        ``not_found``) or None to forward it."""
        f = self.faults
        with self._lock:
            draw = self._rng.random()
            kind: str | None = None
            if self._primed < len(f.first):
                kind = f.first[self._primed]
                self._primed += 1
            elif draw < f.throttle:
                kind = "throttle"
            elif draw < f.throttle + f.error:
                kind = "error"
            elif draw < f.throttle + f.error + f.reset:
                kind = "reset"
            elif f.lost and _losable(req) and self._rng.random() < f.lost:
                kind = "lost"
            elif self._fresh > 0 and req.target_obj is not None \
                    and not _NO_NOT_FOUND.match(req.action):
                self._fresh -= 1
                if self._rng.random() < f.not_found:
                    kind = "not_found"
            if kind is not None:
                self.injected[kind] = self.injected.get(kind, 0) + 1
            return kind

    def forwarded(self, req: _Request, status: int) -> None:
        with self._lock:
            key = f"{req.service}:{req.action}"
            self.calls[key] = self.calls.get(key, 0) + 1
            if status < 300 and _CREATES.match(req.action.split(" ")[0]) or \
                    (req.service == "s3" and req.action.startswith("PUT") and status < 300):
                self._fresh = self.faults.window


_LOSABLE = re.compile(r"^(Create(?!Tags)|RunInstances|AuthorizeSecurityGroup)")


def _losable(req: _Request) -> bool:
    """Whether ``req`` is a create (see ``lost`` in the module docstring)."""
    return bool(_LOSABLE.match(req.action)) or (req.service == "s3"
                                                and req.action == "PUT /bucket")


def _parse(handler: BaseHTTPRequestHandler, body: bytes) -> _Request:
    auth = handler.headers.get("Authorization", "")
    match = _SERVICE.search(auth)
    service = match.group(1) if match else "unknown"
    target = handler.headers.get("X-Amz-Target")
    if target:  # JSON protocols (DynamoDB): X-Amz-Target: DynamoDB_20120810.DescribeTable
        action = target.rsplit(".", 1)[-1]
        obj = None
        with contextlib.suppress(ValueError):
            payload = json.loads(body or b"{}")
            if isinstance(payload, dict) and isinstance(payload.get("TableName"), str):
                obj = payload["TableName"]
        return _Request(service, action, {}, obj)
    content_type = handler.headers.get("Content-Type", "")
    if "x-www-form-urlencoded" in content_type:  # query protocols (EC2, IAM, STS)
        params = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        action = (params.get("Action") or ["?"])[0]
        obj = None
        for key, _code in _EC2_IDS:
            for name in (key, f"{key}.1"):
                if name in params:
                    obj = params[name][0]
        if "RoleName" in params:
            obj = params["RoleName"][0]
        return _Request(service, action, params, obj)
    split = urllib.parse.urlsplit(handler.path)
    path = split.path
    bucket = path.strip("/").split("/", 1)[0] or None
    shape = "/bucket/key" if path.strip("/").count("/") else ("/bucket" if bucket else "/")
    # S3's sub-resources tell its actions apart: GET /bucket?versioning, GET /bucket?tagging
    keys = sorted(k for k in urllib.parse.parse_qs(split.query, keep_blank_values=True)
                  if not k.startswith(("x-", "X-")))
    return _Request(service, f"{handler.command} {shape}" + (f"?{'&'.join(keys)}" if keys
                                                              else ""), {}, bucket)


def _error(req: _Request, kind: str) -> tuple[int, str, bytes]:
    """(status, content type, body) of the error ``kind`` as ``req``'s service answers."""
    if kind == "throttle":
        status, code = 400, {"ec2": "RequestLimitExceeded", "dynamodb": "ThrottlingException",
                             "s3": "SlowDown"}.get(req.service, "Throttling")
        if req.service == "s3":
            status = 503
    elif kind == "error":
        status, code = 500, ("InternalServerError" if req.service == "dynamodb"
                             else "InternalError")
    else:
        status, code = 400, "NotFound"
        if req.service == "ec2":
            for key, found in _EC2_IDS:
                if key in req.params or f"{key}.1" in req.params:
                    code = found
                    break
        elif req.service == "iam":
            status, code = 404, "NoSuchEntity"
        elif req.service == "s3":
            status, code = 404, "NoSuchBucket"
        elif req.service == "dynamodb":
            code = "ResourceNotFoundException"
    message = f"injected by the fault proxy ({kind})"
    if req.service == "dynamodb":
        return status, "application/x-amz-json-1.0", json.dumps(
            {"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": message}).encode()
    if req.service == "ec2":
        body = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Errors><Error><Code>{code}"
                f"</Code><Message>{message}</Message></Error></Errors>"
                "<RequestID>fault-proxy</RequestID></Response>")
    elif req.service == "s3":
        body = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code>"
                f"<Message>{message}</Message><RequestId>fault-proxy</RequestId></Error>")
    else:
        body = (f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>"
                f"{message}</Message></Error><RequestId>fault-proxy</RequestId></ErrorResponse>")
    return status, "text/xml", body.encode()


class _Handler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        return None

    def _any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = self._chunked()
        proxy = self.owner
        req = _parse(self, body)
        kind = None if self.path.startswith("/moto-api") else proxy.decide(req)
        if kind == "reset":
            self._reset()
            return
        if kind is not None and kind != "lost":
            status, ctype, payload = _error(req, kind)
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("x-amzn-RequestId", "fault-proxy")
            self.end_headers()
            self.wfile.write(payload)
            return
        conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=120)
        try:
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() not in ("transfer-encoding", "connection", "content-length")}
            headers["Content-Length"] = str(len(body))
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            proxy.forwarded(req, resp.status)
            if kind == "lost":
                self._reset()
                return
            self.send_response(resp.status)
            for key, value in resp.getheaders():
                if key.lower() not in ("transfer-encoding", "connection", "content-length",
                                       "server", "date"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        finally:
            conn.close()

    def _reset(self) -> None:
        """An abortive close: the client sees "connection reset by peer"."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.close()

    def _chunked(self) -> bytes:
        out = b""
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                self.rfile.readline()
                return out
            out += self.rfile.read(size)
            self.rfile.readline()

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _any


@contextlib.contextmanager
def fault_proxy(upstream: str, faults: Faults | None = None) -> Iterator[FaultProxy]:
    """A :class:`FaultProxy` in front of ``upstream`` for the block (stopped afterwards)."""
    proxy = FaultProxy(upstream, faults).start()
    try:
        yield proxy
    finally:
        proxy.stop()
