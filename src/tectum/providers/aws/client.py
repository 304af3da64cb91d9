"""The target of the ``aws`` provider: :class:`Aws`, boto3 clients for one region with the
provider's settings, made on first use and shared by every resource type.

Credentials come only from boto3's standard chain (environment, shared files and ``profile``,
container or instance metadata): ``tectum.toml`` holds no credentials. The endpoint is the
``endpoint_url`` setting, else boto3's own ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_<SERVICE>``
environment variables (botocore's service-specific endpoints), else AWS.

Retries: botocore's ``standard`` retry mode (throttling, HTTP 5xx, connection errors; exponential
backoff with jitter) with ``max_attempts`` attempts — except for creates that AWS does not make
idempotent (``CreateVpc``, ``CreateRole``...): botocore would send such a create again after a
lost response, and AWS would make a second object (or answer "exists already" about the first).
Those go through :meth:`Aws.create_once`, which looks for the object before it tries again.
What botocore does not retry — an object not yet visible right after its create (eventual
consistency) — is :func:`until_visible`.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from tectum.diagnostics import Diagnostic, DiagnosticError

R = TypeVar("R")
F = TypeVar("F")

_log = logging.getLogger(__name__)

#: error codes meaning "no such object" across the services tectum reads
NOT_FOUND_CODES = frozenset({
    "NoSuchEntity", "NoSuchBucket", "ResourceNotFoundException", "InvalidVpcID.NotFound",
    "InvalidSubnetID.NotFound", "InvalidGroup.NotFound", "InvalidInstanceID.NotFound",
    "InvalidSecurityGroupRuleId.NotFound", "NotFound", "404",
})


#: what a region name looks like (``eu-west-1``, ``us-gov-west-1``): with another endpoint
#: (moto, a private cloud) any such name is taken, without one only the regions botocore knows
REGION_RE = re.compile(r"^[a-z]{2}(-[a-z0-9]+)+-[0-9]+$")

#: operation names that only read (the rest count as mutations in :attr:`Aws.mutations`)
READ_PREFIXES = ("Describe", "Get", "List", "Head")


def stack_id(root: str, workspace: str) -> str:
    """A short digest of a project directory and workspace (16 hex digits): the value of the
    ``tectum:stack`` tag, so an object a killed run made is adopted only by the same project
    and workspace."""
    import hashlib
    import os

    digest = hashlib.sha256(f"{os.path.realpath(root)}\0{workspace}".encode())
    return digest.hexdigest()[:16]


def error_code(exc: BaseException) -> str | None:
    """The AWS error code of a botocore ``ClientError`` (``"NoSuchBucket"``), else None."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = (response.get("Error") or {}).get("Code")
        return str(code) if code is not None else None
    return None


class Aws:
    """boto3 clients of one region (``client("ec2")``), thread-safe, with a count of the API
    calls made per ``service:Operation`` (:attr:`calls`, for tests and benchmarks).

    Raises :class:`DiagnosticError` when boto3 is not installed or the region or profile is
    unknown."""

    def __init__(self, region: str | None, profile: str | None = None,
                 endpoint_url: str | None = None, max_attempts: int = 8,
                 connect_timeout: float = 10.0, read_timeout: float = 60.0) -> None:
        try:
            import boto3
            import botocore.config
            import botocore.exceptions
        except ImportError:
            raise DiagnosticError(Diagnostic.error(
                "boto3 is not installed",
                "The aws provider needs boto3: pip install 'tectum[aws]'.",
                address="providers.aws")) from None
        try:
            self.session = boto3.session.Session(profile_name=profile, region_name=region)
        except botocore.exceptions.ProfileNotFound:
            raise DiagnosticError(Diagnostic.error(
                "Unknown AWS profile",
                f"[providers.aws] profile = {profile!r} is in no shared config or credentials "
                "file (~/.aws/config, ~/.aws/credentials, AWS_CONFIG_FILE).",
                address="providers.aws")) from None
        self.region = self.session.region_name
        if not self.region:
            raise DiagnosticError(Diagnostic.error(
                "No AWS region",
                "Set [providers.aws] region in tectum.toml (or AWS_REGION / AWS_DEFAULT_REGION).",
                address="providers.aws"))
        known = self.region in self.session.get_available_regions("ec2")
        if not known and (not REGION_RE.match(self.region) or
                          (not endpoint_url and not _endpoint_env())):
            raise DiagnosticError(Diagnostic.error(
                "Unknown AWS region",
                f"[providers.aws] region = {self.region!r} is no AWS region botocore knows "
                "(e.g. \"eu-west-1\", \"us-east-1\").", address="providers.aws"))
        self.endpoint_url = endpoint_url
        self.config = botocore.config.Config(
            retries={"mode": "standard", "total_max_attempts": max_attempts},
            connect_timeout=connect_timeout, read_timeout=read_timeout,
            max_pool_connections=32)
        self.max_attempts = max_attempts
        #: the same, with one attempt per call (:meth:`create_once` retries itself)
        self.config_once = botocore.config.Config(
            retries={"mode": "standard", "total_max_attempts": 1},
            connect_timeout=connect_timeout, read_timeout=read_timeout,
            max_pool_connections=32)
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.calls: dict[str, int] = {}
        self.down: tuple[str, str] | None = None
        #: which project and workspace made an object: the value of the ``tectum:stack`` tag
        #: put on what the EC2 types create (set by the provider; see :func:`stack_id`)
        self.stack: str = ""
        #: (operation, mutating) of the last 100,000 calls (:attr:`mutations`)
        self._log: deque[tuple[str, bool]] = deque(maxlen=100_000)

    def client(self, service: str, *, once: bool = False) -> Any:
        """The boto3 client of ``service`` (``"ec2"``, ``"s3"``, ``"iam"``, ``"dynamodb"``);
        with ``once``, one that makes a single attempt per call (for :meth:`create_once`)."""
        key = f"{service}/once" if once else service
        with self._lock:
            found = self._clients.get(key)
            if found is None:
                kwargs: dict[str, Any] = {"config": self.config_once if once else self.config}
                if self.endpoint_url:
                    kwargs["endpoint_url"] = self.endpoint_url
                found = self.session.client(service, **kwargs)
                found.meta.events.register("before-call", self._count)
                self._clients[key] = found
            return found

    def create_once(self, create: Callable[[], R], made: Callable[[], F | None], *,
                    what: str, exists: frozenset[str] = frozenset(),
                    patience: float = 10.0) -> R | F:
        """``create()`` — a create AWS does not make idempotent, sent through a client of
        ``client(service, once=True)`` — retried here as botocore's standard mode would
        (``max_attempts`` attempts, exponential backoff with jitter), but never blindly:

        - throttled (``Throttling``, ``RequestLimitExceeded``... botocore's own list): AWS did
          nothing, so the create is sent again after the backoff;
        - a transient failure after the request may have reached AWS (HTTP 5xx, the
          connection lost or timed out while waiting for the answer): ``made()`` looks for the
          object (by its client token's tag, or by its name), for up to ``patience`` seconds
          while AWS may not show it yet; the object found is returned, and only when there is
          none is the create sent again.

        An error whose code is in ``exists`` ("exists already": a name taken) after such a
        transient failure means the lost attempt made the object: ``made()`` is returned
        (looked for as above). Any other error is raised at once, and the last one when the
        attempts are used up. ``what`` names the object in the log of the retries."""
        from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError

        delay = 0.5
        unsure = False
        for attempt in range(1, max(1, self.max_attempts) + 1):
            try:
                return create()
            except Exception as exc:
                if unsure and error_code(exc) in exists:
                    found = _look(made, patience)
                    if found is not None:
                        return found
                    raise
                kind = retry_kind(exc)
                if kind is None or attempt >= self.max_attempts:
                    raise
                _log.info("%s: create failed (%s), attempt %d of %d", what, kind, attempt,
                          self.max_attempts)
                if kind == "transient" and not isinstance(
                        exc, EndpointConnectionError | ConnectTimeoutError):
                    unsure = True
                    found = _look(made, patience)
                    if found is not None:
                        return found
            time.sleep(delay * (0.5 + random.random() / 2))
            delay = min(delay * 2, 20.0)
        raise AssertionError("unreachable")  # pragma: no cover

    def _count(self, model: Any = None, **_: Any) -> None:
        if model is not None:
            key = f"{model.service_model.service_name}:{model.name}"
            with self._lock:
                self.calls[key] = self.calls.get(key, 0) + 1
                self._log.append((key, not model.name.startswith(READ_PREFIXES)))

    @property
    def mutations(self) -> list[Any]:
        """Every API call made so far that is not a read (not ``Describe*``, ``Get*``,
        ``List*``, ``Head*``), oldest first, as :class:`tectum.testing.recording.Call` s: the
        client records itself for the conformance suite (``Recording``)."""
        from tectum.testing.recording import Call

        with self._lock:
            return [Call(key, (), {}, True) for key, mutating in self._log if mutating]

    def pages(self, service: str, operation: str, key: str, **params: Any) -> Iterator[Any]:
        """Every item under ``key`` of every page of ``operation`` (botocore's paginator),
        e.g. ``pages("ec2", "describe_vpcs", "Vpcs")``."""
        paginator = self.client(service).get_paginator(operation)
        for page in paginator.paginate(**params):
            yield from page.get(key) or []

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, {}
        for client in clients.values():
            close = getattr(client, "close", None)
            if close is not None:
                close()


def _endpoint_env() -> bool:
    import os

    return any(k == "AWS_ENDPOINT_URL" or k.startswith("AWS_ENDPOINT_URL_") for k in os.environ)


def retry_kind(exc: BaseException) -> str | None:
    """How botocore's standard retry mode judges the failure ``exc`` of a call:
    ``"throttled"`` (AWS refused it before doing anything), ``"transient"`` (HTTP 5xx, a
    connection error: AWS may or may not have done it), or None (not to be retried)."""
    from botocore.retries.standard import (
        RetryContext,
        ThrottledRetryableChecker,
        TransientRetryableChecker,
    )

    response = getattr(exc, "response", None)
    status = None
    if isinstance(response, dict):
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    context = RetryContext(
        attempt_number=1, parsed_response=response if isinstance(response, dict) else None,
        http_response=_Status(status) if status is not None else None,
        caught_exception=None if isinstance(response, dict) else exc)
    if ThrottledRetryableChecker().is_retryable(context):
        return "throttled"
    if TransientRetryableChecker().is_retryable(context):
        return "transient"
    return None


class _Status:
    """What botocore's retry checkers read of an HTTP response: its status code."""

    def __init__(self, status_code: int) -> None:
        self.status_code = status_code


def _look(made: Callable[[], F | None], patience: float) -> F | None:
    """``made()`` until it finds something (0.5 s doubling to 4 s between looks) or
    ``patience`` seconds are over; a failing look counts as "nothing found yet"."""
    deadline = time.monotonic() + patience
    delay = 0.5
    while True:
        try:
            found = made()
        except Exception:  # noqa: BLE001 - the look itself hit the fault: look again
            found = None
        if found is not None or time.monotonic() + delay > deadline:
            return found
        time.sleep(delay)
        delay = min(delay * 2, 4.0)


def until_visible(call: Callable[[], R], *, codes: frozenset[str] = NOT_FOUND_CODES,
                  timeout: float = 60.0, what: str = "the object") -> R:
    """``call()`` again while it fails with one of ``codes`` (an object AWS has created but
    does not show yet: IAM, EC2 tags), with exponential backoff and jitter (0.2 s doubling to
    5 s), for at most ``timeout`` seconds; then the last error is raised."""
    delay = 0.2
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except Exception as exc:
            if error_code(exc) not in codes or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay * (0.5 + random.random() / 2))
        delay = min(delay * 2, 5.0)
