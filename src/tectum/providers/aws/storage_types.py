"""The aws provider's storage and identity types (S3, IAM, DynamoDB): type name → ``module:Class``
(merged into :attr:`~tectum.providers.aws.provider.AwsProvider.resource_types`)."""

from __future__ import annotations

STORAGE_TYPES: dict[str, str] = {}
