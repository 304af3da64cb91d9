"""The aws provider's storage and identity types (S3, IAM, DynamoDB): type name → ``module:Class``
(merged into :attr:`~tectum.providers.aws.provider.AwsProvider.resource_types`)."""

from __future__ import annotations

STORAGE_TYPES: dict[str, str] = {
    "aws_s3_bucket": "tectum.providers.aws.s3:BucketType",
    "aws_s3_bucket_versioning": "tectum.providers.aws.s3:BucketVersioningType",
    "aws_iam_role": "tectum.providers.aws.iam:RoleType",
    "aws_iam_role_policy": "tectum.providers.aws.iam:RolePolicyType",
    "aws_dynamodb_table": "tectum.providers.aws.dynamodb:TableType",
}
