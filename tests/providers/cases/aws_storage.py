"""Conformance cases of the aws provider's storage and identity types (``aws_s3_bucket``,
``aws_s3_bucket_versioning``, ``aws_iam_role``, ``aws_iam_role_policy``,
``aws_dynamodb_table``), each on a moto server of its own (``moto_server`` on a free
127.0.0.1 port, under a second to start; :func:`tests.harness.moto.running_moto`) with the
fake credentials and region ``eu-west-1`` in the environment for the case, as the ``moto``
fixture sets them (a builder gets no fixtures). The provider's setting is ``region``; the
endpoint comes from ``AWS_ENDPOINT_URL``, as a user's would.

The "parent" an object needs (the bucket of a versioning configuration, the role of an inline
policy) is made with boto3 before the case and goes with the server afterwards.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tectum.testing import Case
from tests.harness.moto import REGION, Moto, running_moto

TRUST = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
     "Action": "sts:AssumeRole"}]}


def policy(*actions: str) -> dict[str, Any]:
    """An identity policy allowing ``actions`` on every resource."""
    return {"Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": list(actions), "Resource": "*"}]}


@contextmanager
def aws_env(server: Moto) -> Iterator[None]:
    """``server``'s environment (fake credentials, region, ``AWS_ENDPOINT_URL``) in
    ``os.environ`` for the block, without any ``AWS_PROFILE`` or per-service endpoint; then
    the environment as it was."""
    saved = dict(os.environ)
    for key in list(os.environ):
        if key.startswith("AWS_ENDPOINT_URL_") or key == "AWS_PROFILE":
            del os.environ[key]
    os.environ.update(server.env())
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextmanager
def moto_case(tmp: Path) -> Iterator[tuple[Moto, Any]]:
    """A moto server of the case's own and the environment to reach it; yields the server
    and a boto3 client factory."""
    with running_moto(tmp) as server, aws_env(server):
        yield server, server.client


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


@contextmanager
def bucket_case(tmp: Path) -> Iterator[Case]:
    with moto_case(tmp) as (_server, client):
        name = unique("tectum-conf")
        s3: Any = client("s3")

        def tamper(_aws: Any, _record: dict[str, Any]) -> None:
            s3.put_bucket_tagging(Bucket=name, Tagging={"TagSet": [
                {"Key": "team", "Value": "changed-by-hand"}]})

        yield Case("aws_s3_bucket", {"bucket": name, "tags": {"team": "web"}},
                   update={"tags": {"team": "web", "env": "test"}}, tamper=tamper,
                   drift="tags", import_id=name, root=str(tmp), settings={"region": REGION})


@contextmanager
def versioning_case(tmp: Path) -> Iterator[Case]:
    with moto_case(tmp) as (_server, client):
        name = unique("tectum-ver")
        s3: Any = client("s3")
        s3.create_bucket(Bucket=name,
                         CreateBucketConfiguration={"LocationConstraint": REGION})

        def tamper(_aws: Any, _record: dict[str, Any]) -> None:
            s3.put_bucket_versioning(Bucket=name,
                                     VersioningConfiguration={"Status": "Suspended"})

        def gone(observed: dict[str, Any] | None) -> bool:
            # S3 cannot turn versioning off: a delete suspends it (Terraform's rule)
            return observed is None or \
                observed["versioning_configuration"]["status"] == "Suspended"

        yield Case("aws_s3_bucket_versioning",
                   {"bucket": name, "versioning_configuration": {"status": "Enabled"}},
                   tamper=tamper, drift="versioning_configuration", import_id=name, gone=gone,
                   root=str(tmp), settings={"region": REGION},
                   skip={"update": "status is its one setting, and Suspended is what a delete "
                                   "leaves: enabling is the create step, suspending the "
                                   "delete step (and the drift step suspends it by hand); "
                                   "test_storage.py plans Enabled → Suspended as an update"})


@contextmanager
def role_case(tmp: Path) -> Iterator[Case]:
    with moto_case(tmp) as (_server, client):
        name = unique("tectum-conf")
        iam: Any = client("iam")

        def tamper(_aws: Any, _record: dict[str, Any]) -> None:
            iam.update_role(RoleName=name, Description="changed by hand")

        yield Case("aws_iam_role",
                   {"name": name, "assume_role_policy": json.dumps(TRUST),
                    "description": "tectum conformance", "tags": {"team": "web"}},
                   update={"max_session_duration": 7200, "tags": {"team": "ops"}},
                   tamper=tamper, drift="description", import_id=name, root=str(tmp),
                   settings={"region": REGION})


@contextmanager
def role_policy_case(tmp: Path) -> Iterator[Case]:
    with moto_case(tmp) as (_server, client):
        role = unique("tectum-conf")
        iam: Any = client("iam")
        iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(TRUST))

        def tamper(_aws: Any, _record: dict[str, Any]) -> None:
            iam.put_role_policy(RoleName=role, PolicyName="read",
                                PolicyDocument=json.dumps(policy("s3:*")))

        yield Case("aws_iam_role_policy",
                   {"role": role, "name": "read", "policy": policy("s3:GetObject")},
                   update={"policy": policy("s3:GetObject", "s3:ListBucket")},
                   tamper=tamper, drift="policy", import_id=f"{role}:read", root=str(tmp),
                   settings={"region": REGION})


@contextmanager
def table_case(tmp: Path) -> Iterator[Case]:
    with moto_case(tmp) as (_server, client):
        name = unique("tectum-conf")
        ddb: Any = client("dynamodb")

        def tamper(_aws: Any, record: dict[str, Any]) -> None:
            ddb.tag_resource(ResourceArn=record["arn"],
                             Tags=[{"Key": "team", "Value": "changed-by-hand"}])

        yield Case("aws_dynamodb_table",
                   {"name": name, "billing_mode": "PAY_PER_REQUEST", "hash_key": "id",
                    "range_key": "at", "attribute": [{"name": "id", "type": "S"},
                                                     {"name": "at", "type": "N"}],
                    "tags": {"team": "web"}, "timeouts": {"create": "2m"}},
                   update={"billing_mode": "PROVISIONED", "read_capacity": 5,
                           "write_capacity": 2},
                   tamper=tamper, drift="tags", import_id=name, root=str(tmp),
                   settings={"region": REGION})


BUILDERS = {
    "aws_s3_bucket": bucket_case,
    "aws_s3_bucket_versioning": versioning_case,
    "aws_iam_role": role_case,
    "aws_iam_role_policy": role_policy_case,
    "aws_dynamodb_table": table_case,
}
MARKS = {name: [pytest.mark.aws] for name in BUILDERS}
