"""The built-in ``aws`` provider: AWS resources through boto3 (Terraform's ``hashicorp/aws``
names and attribute names where they exist).

Settings (``[providers.aws]`` in ``tectum.toml``, or ``TECTUM_PROVIDER_AWS_<SETTING>``):

``region``        the region (default: boto3's, from ``AWS_REGION`` / ``AWS_DEFAULT_REGION`` /
                  the profile)
``profile``       a named profile of the shared config and credentials files
``endpoint_url``  another endpoint for every service (a local moto server, a VPC endpoint);
                  boto3's ``AWS_ENDPOINT_URL`` and ``AWS_ENDPOINT_URL_<SERVICE>`` work too
``max_attempts``  attempts per API call on throttling, 5xx and connection errors (default 8)
``concurrency``   API calls at once (default 8)

Credentials are never settings: boto3's standard chain finds them (environment variables,
``~/.aws/credentials``, SSO, container and instance roles).
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, ClassVar

from tectum.providers.aws.client import Aws, stack_id
from tectum.providers.aws.ec2 import EC2_TYPES
from tectum.providers.aws.storage_types import STORAGE_TYPES
from tectum.providers.base import Provider
from tectum.schema import Attr, Schema

if TYPE_CHECKING:
    from tectum.config.inventory import Inventory


def _positive(limit: int) -> Any:
    def check(value: Any) -> str | None:
        return None if isinstance(value, int) and 1 <= value <= limit else f"must be 1 to {limit}"
    return check


def _region(value: Any) -> str | None:
    from tectum.providers.aws.client import REGION_RE

    return None if isinstance(value, str) and REGION_RE.match(value) else \
        f"{value!r} is no AWS region name (e.g. \"eu-west-1\", \"us-east-1\")"


class AwsProvider(Provider):
    """AWS resource types (see the module docstring)."""

    name = "aws"
    resource_types: ClassVar[dict[str, str]] = {
        **EC2_TYPES,
        **STORAGE_TYPES,
    }
    settings = Schema({
        "region": Attr(str, validate=_region, description="the AWS region, e.g. eu-west-1"),
        "profile": Attr(str, description="a profile of ~/.aws/config"),
        "endpoint_url": Attr(str, description="another endpoint for every service"),
        "max_attempts": Attr(int, default=8, validate=_positive(50),
                             description="attempts per API call (throttling, 5xx)"),
        "concurrency": Attr(int, default=8, validate=_positive(64),
                            description="API calls at once"),
    })

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._aws: Aws | None = None

    def aws(self) -> Aws:
        """The clients of the configured region (made on first use)."""
        with self._lock:
            if self._aws is None:
                c = self.config
                self._aws = Aws(c.get("region"), c.get("profile"), c.get("endpoint_url"),
                                max_attempts=int(c.get("max_attempts") or 8))
                if self.context is not None:
                    self._aws.stack = stack_id(self.context.root, self.context.workspace)
            return self._aws

    def target(self, host: str | None) -> Aws:
        return self.aws()

    def made(self, host: str | None) -> Aws | None:
        return self._aws

    @classmethod
    def target_key(cls, host: str | None, inventory: Inventory) -> Hashable:
        """One target for every resource: the configured region."""
        return None

    def concurrency(self, target: Any) -> int:
        return int(self.config.get("concurrency", 8) or 8)

    def close(self) -> None:
        with self._lock:
            aws, self._aws = self._aws, None
        if aws is not None:
            aws.close()
