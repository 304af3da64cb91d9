"""The target of the ``aws`` provider: :class:`Aws`, boto3 clients for one region with the
provider's settings, made on first use and shared by every resource type.

Credentials come only from boto3's standard chain (environment, shared files and ``profile``,
container or instance metadata): ``tectum.toml`` holds no credentials. The endpoint is the
``endpoint_url`` setting, else boto3's own ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_<SERVICE>``
environment variables (botocore's service-specific endpoints), else AWS.

Retries: botocore's ``standard`` retry mode (throttling, HTTP 5xx, connection errors; exponential
backoff with jitter) with ``max_attempts`` attempts. What botocore does not retry — an object
not yet visible right after its create (eventual consistency) — is :func:`until_visible`.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from tectum.diagnostics import Diagnostic, DiagnosticError

R = TypeVar("R")

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
            retries={"mode": "standard", "max_attempts": max_attempts},
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

    def client(self, service: str) -> Any:
        """The boto3 client of ``service`` (``"ec2"``, ``"s3"``, ``"iam"``, ``"dynamodb"``)."""
        with self._lock:
            found = self._clients.get(service)
            if found is None:
                kwargs: dict[str, Any] = {"config": self.config}
                if self.endpoint_url:
                    kwargs["endpoint_url"] = self.endpoint_url
                found = self.session.client(service, **kwargs)
                found.meta.events.register("before-call", self._count)
                self._clients[service] = found
            return found

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
