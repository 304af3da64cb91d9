"""The aws provider's storage and identity resources, as declared in a stack (re-exported by
``tectum.aws``): ``from tectum.aws import S3Bucket, IamRole``. Terraform's hashicorp/aws types
and attribute names; see ``docs/aws.md``.

==================  ==========================================================================
S3Bucket            bucket, force_destroy, tags; computed: arn, region
S3BucketVersioning  bucket, versioning_configuration ({"status": "Enabled" | "Suspended"})
IamRole             name, assume_role_policy (JSON text or a mapping), description, path,
                    max_session_duration, tags; computed: arn, unique_id
IamRolePolicy       role, name, policy (JSON text or a mapping)
DynamodbTable       name, billing_mode, hash_key, range_key, attribute ([{name, type}]),
                    read_capacity, write_capacity, tags, timeouts; computed: arn
==================  ==========================================================================
"""

from __future__ import annotations

from tectum.config.declaration import Resource

__all__ = ["DynamodbTable", "IamRole", "IamRolePolicy", "S3Bucket", "S3BucketVersioning"]


class S3Bucket(Resource):
    """An S3 bucket: ``S3Bucket("logs", bucket="acme-logs", tags={"team": "web"})``
    (``aws_s3_bucket``; the label is the bucket name unless ``bucket=`` is given)."""

    type_name = "aws_s3_bucket"
    label_attr = "bucket"
    __slots__ = ()


class S3BucketVersioning(Resource):
    """A bucket's versioning: ``S3BucketVersioning("logs", bucket=logs.bucket,
    versioning_configuration={"status": "Enabled"})`` (``aws_s3_bucket_versioning``; removing
    it suspends versioning)."""

    type_name = "aws_s3_bucket_versioning"
    __slots__ = ()


class IamRole(Resource):
    """An IAM role: ``IamRole("app", assume_role_policy={"Version": "2012-10-17",
    "Statement": [...]})`` (``aws_iam_role``; the label is the role name unless ``name=`` is
    given)."""

    type_name = "aws_iam_role"
    label_attr = "name"
    __slots__ = ()


class IamRolePolicy(Resource):
    """An inline policy of a role: ``IamRolePolicy("read-logs", role=app.name, policy={...})``
    (``aws_iam_role_policy``; the label is the policy name unless ``name=`` is given)."""

    type_name = "aws_iam_role_policy"
    label_attr = "name"
    __slots__ = ()


class DynamodbTable(Resource):
    """A DynamoDB table: ``DynamodbTable("orders", billing_mode="PAY_PER_REQUEST",
    hash_key="id", attribute=[{"name": "id", "type": "S"}])`` (``aws_dynamodb_table``; the
    label is the table name unless ``name=`` is given)."""

    type_name = "aws_dynamodb_table"
    label_attr = "name"
    __slots__ = ()
