"""The aws provider's storage and identity types (``aws_s3_bucket``,
``aws_s3_bucket_versioning``, ``aws_iam_role``, ``aws_iam_role_policy``,
``aws_dynamodb_table``) through the real ``tectum`` CLI against a moto server (the ``moto``
fixture: fake credentials, region eu-west-1, ``AWS_ENDPOINT_URL``), and their hooks in-process
where the CLI cannot show it (API calls per read, policy equivalence).

Every test checks moto itself with boto3 (what exists, what tags and policies it holds); the
server is emptied before and after each test.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tectum.config.inventory import empty_inventory
from tectum.engine.targets import Targets
from tectum.providers.aws.iam import equivalent, normalized
from tectum.providers.base import ReadItem
from tectum.providers.registry import registry
from tests.conftest import Result, ok
from tests.harness.moto import REGION, Moto

pytestmark = pytest.mark.aws

TOML = f'[providers.aws]\nregion = "{REGION}"\n'
IMPORTS = ("from tectum.providers.aws.storage_decl import DynamodbTable, IamRole, "
           "IamRolePolicy, S3Bucket, S3BucketVersioning\n")
TRUST = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
     "Action": "sts:AssumeRole"}]}
POLICY = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}

#: every type, linked by references (versioning → bucket, policy → role and bucket ARN)
STACK = IMPORTS + '''
from tectum import var
tag = var("tag", str, default="one")
cap = var("cap", int, default=2)
logs = S3Bucket("logs", bucket="tectum-logs-SUFFIX", tags={"team": tag}, force_destroy=FORCE)
S3BucketVersioning("logs", bucket=logs.bucket, versioning_configuration={"status": "Enabled"})
role = IamRole("app", name="tectum-app-SUFFIX", assume_role_policy=TRUST,
               description="app servers", tags={"team": tag})
IamRolePolicy("read-logs", role=role.name, policy={"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"{logs.arn}/*"}]})
DynamodbTable("orders", name="tectum-orders-SUFFIX", hash_key="id",
              attribute=[{"name": "id", "type": "S"}], read_capacity=cap, write_capacity=1,
              tags={"team": tag}, timeouts={"create": "2m"})
'''


def stack(suffix: str, force: bool = True) -> str:
    return STACK.replace("SUFFIX", suffix).replace("FORCE", str(force)) \
        .replace("TRUST", repr(TRUST))


@pytest.fixture
def suffix() -> str:
    import secrets

    return secrets.token_hex(3)


@pytest.fixture
def cli(moto: Moto, tectum: Callable[..., Result]) -> Callable[..., Result]:
    """``tectum`` with the moto server's environment."""

    def run(*args: str, **kwargs: Any) -> Result:
        return tectum(*args, env=moto.env(), **kwargs)

    return run


@pytest.fixture
def world(moto: Moto) -> World:
    return World(moto)


class World:
    """What moto holds, read with boto3 (independent of tectum)."""

    def __init__(self, moto: Moto) -> None:
        self.s3: Any = moto.client("s3")
        self.iam: Any = moto.client("iam")
        self.ddb: Any = moto.client("dynamodb")

    def buckets(self) -> list[str]:
        return sorted(b["Name"] for b in self.s3.list_buckets()["Buckets"])

    def roles(self) -> list[str]:
        return sorted(r["RoleName"] for r in self.iam.list_roles()["Roles"])

    def tables(self) -> list[str]:
        return sorted(self.ddb.list_tables()["TableNames"])

    def policies(self, role: str) -> list[str]:
        return sorted(self.iam.list_role_policies(RoleName=role)["PolicyNames"])

    def everything(self) -> dict[str, list[str]]:
        return {"buckets": self.buckets(), "roles": self.roles(), "tables": self.tables(),
                "policies": [f"{r}:{p}" for r in self.roles() for p in self.policies(r)]}

    def bucket_tags(self, name: str) -> dict[str, str]:
        tags = self.s3.get_bucket_tagging(Bucket=name)["TagSet"]
        return {t["Key"]: t["Value"] for t in tags}


def expected(suffix: str) -> dict[str, list[str]]:
    return {"buckets": [f"tectum-logs-{suffix}"], "roles": [f"tectum-app-{suffix}"],
            "tables": [f"tectum-orders-{suffix}"],
            "policies": [f"tectum-app-{suffix}:read-logs"]}


NOTHING: dict[str, list[str]] = {"buckets": [], "roles": [], "tables": [], "policies": []}


def state_names(cli: Callable[..., Result], root: Path) -> dict[str, list[str]]:
    """The objects state records, in :meth:`World.everything`'s shape."""
    doc = json.loads(ok(cli("state", "pull", cwd=root)).stdout)
    out: dict[str, list[str]] = {"buckets": [], "roles": [], "tables": [], "policies": []}
    for rec in _records(doc):
        attrs, kind = rec["attributes"], rec["type"]
        if kind == "aws_s3_bucket":
            out["buckets"].append(attrs["bucket"])
        elif kind == "aws_iam_role":
            out["roles"].append(attrs["name"])
        elif kind == "aws_dynamodb_table":
            out["tables"].append(attrs["name"])
        elif kind == "aws_iam_role_policy":
            out["policies"].append(f"{attrs['role']}:{attrs['name']}")
    return {k: sorted(v) for k, v in out.items()}


def _records(doc: Any) -> Iterator[dict[str, Any]]:
    resources = doc.get("resources", {})
    items = resources.values() if isinstance(resources, dict) else resources
    yield from items


# -- end to end ------------------------------------------------------------------------------

def test_apply_then_ten_plans_show_no_change_and_destroy_removes_everything(
        cli: Callable[..., Result], make_project: Callable[..., Path], world: World,
        suffix: str) -> None:
    root = make_project(stack(suffix), {"tectum.toml": TOML})
    planned = ok(cli("plan", cwd=root)).stdout
    assert "Plan: 5 to add, 0 to change, 0 to replace, 0 to destroy." in planned
    ok(cli("apply", "-auto-approve", cwd=root))
    assert world.everything() == expected(suffix) == state_names(cli, root)
    assert world.bucket_tags(f"tectum-logs-{suffix}") == {"team": "one"}
    status = world.s3.get_bucket_versioning(Bucket=f"tectum-logs-{suffix}")["Status"]
    assert status == "Enabled"
    for _ in range(10):
        assert "No changes" in ok(cli("plan", cwd=root)).stdout
    # an update in place: tags everywhere, the table's capacity
    changed = ok(cli("apply", "-auto-approve", "-var", "tag=two", "-var", "cap=3", cwd=root))
    # (the policy uses the bucket's ARN, which an update keeps: the policy is not touched)
    assert "0 added, 3 changed, 0 replaced, 0 destroyed" in changed.stdout, changed.stdout
    assert world.bucket_tags(f"tectum-logs-{suffix}") == {"team": "two"}
    table = world.ddb.describe_table(TableName=f"tectum-orders-{suffix}")["Table"]
    assert table["ProvisionedThroughput"]["ReadCapacityUnits"] == 3
    assert "No changes" in ok(cli("plan", "-var", "tag=two", "-var", "cap=3", cwd=root)).stdout
    ok(cli("destroy", "-auto-approve", "-var", "tag=two", "-var", "cap=3", cwd=root))
    assert world.everything() == NOTHING


def test_changes_made_by_hand_are_drift_and_apply_repairs_them(
        cli: Callable[..., Result], make_project: Callable[..., Path], world: World,
        suffix: str) -> None:
    root = make_project(stack(suffix), {"tectum.toml": TOML})
    ok(cli("apply", "-auto-approve", cwd=root))
    bucket, role, table = (f"tectum-logs-{suffix}", f"tectum-app-{suffix}",
                           f"tectum-orders-{suffix}")
    world.s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": [
        {"Key": "team", "Value": "by-hand"}]})
    world.s3.put_bucket_versioning(Bucket=bucket,
                                   VersioningConfiguration={"Status": "Suspended"})
    world.iam.put_role_policy(RoleName=role, PolicyName="read-logs", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
    world.iam.update_role(RoleName=role, Description="by hand")
    world.ddb.delete_table(TableName=table)
    drift = ok(cli("drift", cwd=root)).stdout
    for address, what in (("aws_s3_bucket.logs", 'tags: {"team": "one"} → {"team": "by-hand"}'),
                          ("aws_s3_bucket_versioning.logs", 'versioning_configuration: '
                           '{"status": "Enabled"} → {"status": "Suspended"}'),
                          ("aws_iam_role_policy.read-logs", '\\"Action\\": \\"s3:*\\"'),
                          ("aws_iam_role.app", 'description: "app servers" → "by hand"'),
                          ("aws_dynamodb_table.orders", "deleted")):
        assert f"{address}:" in drift and what in drift, (address, what, drift)
    plan = ok(cli("plan", cwd=root)).stdout
    assert "Plan: 1 to add, 4 to change, 0 to replace, 0 to destroy." in plan, plan
    ok(cli("apply", "-auto-approve", cwd=root))
    assert "No changes" in ok(cli("plan", cwd=root)).stdout
    assert world.bucket_tags(bucket) == {"team": "one"}
    assert world.s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    doc = world.iam.get_role_policy(RoleName=role, PolicyName="read-logs")["PolicyDocument"]
    assert doc["Statement"][0]["Action"] == "s3:GetObject"
    assert world.iam.get_role(RoleName=role)["Role"]["Description"] == "app servers"
    assert table in world.tables()
    ok(cli("destroy", "-auto-approve", cwd=root))
    assert world.everything() == NOTHING


def test_a_policy_rewritten_with_the_same_meaning_is_no_change(
        cli: Callable[..., Result], make_project: Callable[..., Path], world: World,
        suffix: str) -> None:
    """IAM (and people) rewrite policies: keys reordered, a string for a one-element list,
    statements in another order. None of that is drift."""
    root = make_project(stack(suffix), {"tectum.toml": TOML})
    ok(cli("apply", "-auto-approve", cwd=root))
    role = f"tectum-app-{suffix}"
    arn = f"arn:aws:s3:::tectum-logs-{suffix}/*"
    world.iam.put_role_policy(RoleName=role, PolicyName="read-logs", PolicyDocument=json.dumps(
        {"Statement": [{"Resource": [arn], "Action": ["s3:GetObject"], "Effect": "Allow",
                        "Sid": ""}], "Version": "2012-10-17"}, indent=4))
    world.iam.update_assume_role_policy(RoleName=role, PolicyDocument=json.dumps(
        {"Statement": {"Action": ["sts:AssumeRole"], "Principal": {
            "Service": ["ec2.amazonaws.com"]}, "Effect": "Allow"}, "Version": "2012-10-17"}))
    assert "No changes" in ok(cli("plan", cwd=root)).stdout
    ok(cli("destroy", "-auto-approve", cwd=root))


def test_policy_equivalence_rules() -> None:
    base = {"Version": "2012-10-17", "Statement": [
        {"Sid": "A", "Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"],
         "Resource": "*"},
        {"Effect": "Allow", "Principal": {"AWS": "123456789012"}, "Action": "sts:AssumeRole"}]}
    same = {"Statement": [
        {"Action": "sts:AssumeRole", "Principal": {"AWS": ["arn:aws:iam::123456789012:root"]},
         "Effect": "Allow", "Sid": ""},
        {"Resource": ["*"], "Action": ["s3:ListBucket", "s3:GetObject"], "Effect": "Allow",
         "Sid": "A"}], "Version": "2012-10-17"}
    assert equivalent(base, json.dumps(same))
    assert equivalent({"Statement": {"Effect": "Allow", "Principal": "*", "Action": "x"}},
                      {"Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"},
                                      "Action": ["x"]}]})
    other = json.loads(json.dumps(base))
    other["Statement"][0]["Effect"] = "Deny"
    assert not equivalent(base, other)
    assert not equivalent(base, {**base, "Version": "2008-10-17"})
    assert normalized(base) != normalized({**base, "Statement": base["Statement"][:1]})


#: the declaration classes' types
TYPES = {"S3Bucket": "aws_s3_bucket", "S3BucketVersioning": "aws_s3_bucket_versioning",
         "IamRole": "aws_iam_role", "IamRolePolicy": "aws_iam_role_policy",
         "DynamodbTable": "aws_dynamodb_table"}
#: declarations refused at plan time, each with what its diagnostic says
BAD = [
    ('S3Bucket("b1", bucket="Not_A_Bucket")', "'Not_A_Bucket' is not a valid S3 bucket name"),
    ('S3Bucket("b2", bucket="192.168.1.1")', "looks like an IP address"),
    ('IamRole("r1", assume_role_policy="{not json")', "is not JSON"),
    ('IamRole("r2", assume_role_policy="[1, 2]")', "is JSON but not an object"),
    ('IamRolePolicy("p1", role="r", policy="Allow everything")', "is not JSON"),
    ('IamRole("r3", name="has space", assume_role_policy="{}")', "not a valid IAM role name"),
    ('S3BucketVersioning("v", bucket="ok-bucket", versioning_configuration={"status": '
     '"Disabled"})', 'it is "Enabled" or "Suspended"'),
    ('DynamodbTable("t1", hash_key="id", attribute=[{"name": "id", "type": "S"}])',
     "needs read_capacity and write_capacity"),
    ('DynamodbTable("t2", billing_mode="PAY_PER_REQUEST", hash_key="id", '
     'attribute=[{"name": "other", "type": "S"}])', "must name exactly the key attributes"),
    ('DynamodbTable("t3", billing_mode="PAY_PER_REQUEST", hash_key="id", '
     'attribute=[{"name": "id", "type": "S"}], timeouts={"create": "soon"})',
     "is not a duration"),
    ('S3Bucket("b3", bucket="ok-bucket", colour="blue")', "colour"),
]


def test_bad_input_is_a_diagnostic_at_plan_and_nothing_is_made(
        cli: Callable[..., Result], make_project: Callable[..., Path], world: World) -> None:
    """Every problem of the stack is reported in one run, at its resource, exit status 1;
    the valid bucket beside them is not made either."""
    good = 'S3Bucket("fine", bucket="tectum-fine-bucket")\n'
    root = make_project(IMPORTS + good + "\n".join(d for d, _ in BAD) + "\n",
                        {"tectum.toml": TOML})
    for command in (("plan",), ("apply", "-auto-approve")):
        result = cli(*command, cwd=root)
        assert result.returncode == 1, result.output
        for decl, needle in BAD:
            cls, label = decl.split('"')[0].rstrip("("), decl.split('"')[1]
            where = f"stack.py:{3 + BAD.index((decl, needle))}, in {TYPES[cls]}.{label}"
            assert where in result.output and needle in result.output, (where, needle,
                                                                         result.output)
        assert "Traceback" not in result.output
    assert world.everything() == NOTHING


def test_a_bad_reference_value_is_refused_at_plan(
        cli: Callable[..., Result], make_project: Callable[..., Path], world: World) -> None:
    """A value that is only known once a variable is resolved is checked then."""
    root = make_project(IMPORTS + 'from tectum import var\nname = var("name", str)\n'
                        'S3Bucket("b", bucket=f"{name}-logs")\n', {"tectum.toml": TOML})
    result = cli("plan", "-var", "name=UPPER", cwd=root)
    assert result.returncode == 1, result.output
    assert "'UPPER-logs' is not a valid S3 bucket name" in result.output
    assert "Traceback" not in result.output
    assert world.everything() == NOTHING


def test_import_every_type(cli: Callable[..., Result], make_project: Callable[..., Path],
                           world: World, suffix: str) -> None:
    bucket, role, table = (f"tectum-logs-{suffix}", f"tectum-app-{suffix}",
                           f"tectum-orders-{suffix}")
    world.s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={
        "LocationConstraint": REGION})
    world.s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": [
        {"Key": "team", "Value": "one"}]})
    world.s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    world.iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(TRUST),
                          Description="app servers", Tags=[{"Key": "team", "Value": "one"}])
    world.iam.put_role_policy(RoleName=role, PolicyName="read-logs", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::"
             f"{bucket}/*"}]}))
    world.ddb.create_table(
        TableName=table, KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        ProvisionedThroughput={"ReadCapacityUnits": 2, "WriteCapacityUnits": 1},
        Tags=[{"Key": "team", "Value": "one"}])
    root = make_project(stack(suffix, force=False), {"tectum.toml": TOML})
    for address, import_id in (("aws_s3_bucket.logs", bucket),
                               ("aws_s3_bucket_versioning.logs", bucket),
                               ("aws_iam_role.app", role),
                               ("aws_iam_role_policy.read-logs", f"{role}:read-logs"),
                               ("aws_dynamodb_table.orders", table)):
        ok(cli("import", address, import_id, cwd=root))
    assert state_names(cli, root) == expected(suffix)
    # timeouts live in state only: the import cannot see them, so the plan records them
    # (Terraform's behaviour); nothing else differs
    plan = ok(cli("plan", cwd=root)).stdout
    assert "Plan: 0 to add, 1 to change, 0 to replace, 0 to destroy." in plan, plan
    assert 'timeouts: {} → {"create": "2m"}' in plan, plan
    ok(cli("apply", "-auto-approve", cwd=root))
    assert "No changes" in ok(cli("plan", cwd=root)).stdout
    # imported objects were found, not created: destroying forgets them
    out = ok(cli("destroy", "-auto-approve", cwd=root)).output
    assert "no longer be managed" in out, out
    assert world.everything() == expected(suffix)


def test_import_of_a_missing_object_says_so(
        cli: Callable[..., Result], make_project: Callable[..., Path]) -> None:
    root = make_project(stack("nope"), {"tectum.toml": TOML})
    for address, import_id, needle in (
            ("aws_iam_role_policy.read-logs", "no-role:read-logs",
             "No aws_iam_role_policy 'no-role:read-logs' exists"),
            ("aws_iam_role_policy.read-logs", "read-logs", "imported as ROLE:NAME"),
            ("aws_s3_bucket.logs", "tectum-no-such-bucket", "No aws_s3_bucket"),
            ("aws_dynamodb_table.orders", "no-such-table", "No aws_dynamodb_table")):
        result = cli("import", address, import_id, cwd=root)
        assert result.returncode == 1, result.output
        assert needle in result.output and "Traceback" not in result.output, result.output


def test_a_bucket_with_objects_is_not_deleted_without_force_destroy(
        cli: Callable[..., Result], make_project: Callable[..., Path], world: World,
        suffix: str) -> None:
    root = make_project(stack(suffix, force=False), {"tectum.toml": TOML})
    ok(cli("apply", "-auto-approve", cwd=root))
    bucket = f"tectum-logs-{suffix}"
    for body in (b"one", b"two", b"three"):  # versioned: three versions of one key
        world.s3.put_object(Bucket=bucket, Key="log.txt", Body=body)
    world.s3.put_object(Bucket=bucket, Key="other.txt", Body=b"x")
    result = cli("destroy", "-auto-approve", cwd=root)
    assert result.returncode == 1, result.output
    assert f"bucket {bucket} is not empty: it was not deleted" in result.output
    assert "Set force_destroy = True" in result.output, result.output
    assert "Traceback" not in result.output
    assert world.buckets() == [bucket]  # everything else went
    assert world.roles() == [] and world.tables() == []
    # force_destroy recorded in state (applied), then destroy removes every version; a second
    # bucket, versioned by hand (still enabled when destroyed), holds a delete marker too
    # (moto fails to delete a delete marker once versioning is suspended, as the first
    # bucket's is by then: S3 does not)
    other = f"tectum-more-{suffix}"
    root.joinpath("stack.py").write_text(
        stack(suffix, force=True) + f'S3Bucket("more", bucket="{other}", force_destroy=True)\n')
    ok(cli("apply", "-auto-approve", cwd=root))
    world.s3.put_bucket_versioning(Bucket=other, VersioningConfiguration={"Status": "Enabled"})
    for body in (b"one", b"two"):
        world.s3.put_object(Bucket=other, Key="log.txt", Body=body)
    world.s3.delete_object(Bucket=other, Key="log.txt")
    listed = world.s3.list_object_versions(Bucket=other)
    assert len(listed["Versions"]) == 2 and len(listed["DeleteMarkers"]) == 1
    ok(cli("destroy", "-auto-approve", cwd=root))
    assert world.everything() == NOTHING


def test_versioning_suspended_by_config_and_removed_suspends(
        cli: Callable[..., Result], make_project: Callable[..., Path], world: World,
        suffix: str) -> None:
    bucket = f"tectum-ver-{suffix}"
    decl = IMPORTS + (f'b = S3Bucket("b", bucket="{bucket}")\n'
                      'S3BucketVersioning("v", bucket=b.bucket, '
                      'versioning_configuration={"status": "STATUS"})\n')
    root = make_project(decl.replace("STATUS", "Enabled"), {"tectum.toml": TOML})
    ok(cli("apply", "-auto-approve", cwd=root))
    root.joinpath("stack.py").write_text(decl.replace("STATUS", "Suspended"))
    assert "1 to change" in ok(cli("plan", cwd=root)).stdout
    ok(cli("apply", "-auto-approve", cwd=root))
    assert world.s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Suspended"
    root.joinpath("stack.py").write_text(decl.replace("STATUS", "Enabled"))
    ok(cli("apply", "-auto-approve", cwd=root))
    # out of the configuration: suspended (S3 cannot turn versioning off), the bucket stays
    root.joinpath("stack.py").write_text(IMPORTS + f'S3Bucket("b", bucket="{bucket}")\n')
    plan = ok(cli("plan", cwd=root)).stdout
    assert "suspends versioning" in plan, plan
    ok(cli("apply", "-auto-approve", cwd=root))
    assert world.s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Suspended"
    assert "No changes" in ok(cli("plan", cwd=root)).stdout
    ok(cli("destroy", "-auto-approve", cwd=root))
    assert world.buckets() == []


def test_literal_names_order_parents_first_and_delete_them_last(
        cli: Callable[..., Result], make_project: Callable[..., Path], world: World,
        suffix: str) -> None:
    """A policy naming its role, and versioning naming its bucket, by literal text (no
    reference) still depend on them: made after, deleted before."""
    role, bucket = f"tectum-r-{suffix}", f"tectum-b-{suffix}"
    root = make_project(IMPORTS + textwrap.dedent(f'''
        IamRolePolicy("p", role="{role}", policy={{"Version": "2012-10-17", "Statement": [
            {{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}}]}})
        S3BucketVersioning("v", bucket="{bucket}", versioning_configuration={{"status":
                                                                            "Enabled"}})
        IamRole("r", name="{role}", assume_role_policy={TRUST!r})
        S3Bucket("b", bucket="{bucket}")
    '''), {"tectum.toml": TOML})
    applied = ok(cli("apply", "-auto-approve", cwd=root)).stdout
    order = [m.group(1) for m in re.finditer(r"^(aws_\S+): created", applied, re.M)]
    assert order.index("aws_iam_role.r") < order.index("aws_iam_role_policy.p"), applied
    assert order.index("aws_s3_bucket.b") < order.index("aws_s3_bucket_versioning.v"), applied
    destroyed = ok(cli("destroy", "-auto-approve", cwd=root)).stdout
    order = [m.group(1) for m in re.finditer(r"^(aws_\S+): destroyed", destroyed, re.M)]
    assert order.index("aws_iam_role_policy.p") < order.index("aws_iam_role.r"), destroyed
    assert order.index("aws_s3_bucket_versioning.v") < order.index("aws_s3_bucket.b")
    assert world.everything() == NOTHING


def test_a_role_holding_a_policy_tectum_does_not_manage_is_not_deleted(
        cli: Callable[..., Result], make_project: Callable[..., Path], world: World,
        suffix: str) -> None:
    role = f"tectum-r-{suffix}"
    root = make_project(IMPORTS + f'IamRole("r", name="{role}", assume_role_policy={TRUST!r})\n',
                        {"tectum.toml": TOML})
    ok(cli("apply", "-auto-approve", cwd=root))
    world.iam.put_role_policy(RoleName=role, PolicyName="by-hand", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}))
    result = cli("destroy", "-auto-approve", cwd=root)
    assert result.returncode == 1, result.output
    assert f"IAM role {role} was not deleted" in result.output
    assert "inline policies by-hand" in result.output, result.output
    assert world.roles() == [role] and world.policies(role) == ["by-hand"]
    world.iam.delete_role_policy(RoleName=role, PolicyName="by-hand")
    ok(cli("destroy", "-auto-approve", cwd=root))
    assert world.roles() == []


def test_a_bucket_name_taken_by_another_stack_is_adopted_as_found_not_created(
        cli: Callable[..., Result], make_project: Callable[..., Path], world: World,
        suffix: str) -> None:
    """Natural names are the identity: an object already there is found (and forgotten on
    destroy), never created twice nor deleted."""
    bucket = f"tectum-there-{suffix}"
    world.s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={
        "LocationConstraint": REGION})
    root = make_project(IMPORTS + f'S3Bucket("b", bucket="{bucket}", tags={{"a": "b"}})\n',
                        {"tectum.toml": TOML})
    assert "1 to change" in ok(cli("plan", cwd=root)).stdout
    ok(cli("apply", "-auto-approve", cwd=root))
    assert world.bucket_tags(bucket) == {"a": "b"}
    ok(cli("destroy", "-auto-approve", cwd=root))
    assert world.buckets() == [bucket]


# -- reads: one List call per type --------------------------------------------------------------

def test_a_read_makes_one_list_call_per_type_and_per_object_calls_only_where_aws_needs_them(
        moto: Moto, world: World, tmp_path: Path) -> None:
    """Reading n objects of each type costs: S3 ``ListBuckets`` once + ``GetBucketTagging``
    per bucket; IAM ``ListRoles`` once + ``ListRoleTags`` per role; DynamoDB ``ListTables``
    once + ``DescribeTable`` and ``ListTagsOfResource`` per table; ``GetBucketVersioning`` /
    ``GetRolePolicy`` per object (no batch read exists for them). No call is made for objects
    that a List call showed absent."""
    n = 4
    for i in range(n):
        world.s3.create_bucket(Bucket=f"tectum-read-{i}", CreateBucketConfiguration={
            "LocationConstraint": REGION})
        world.iam.create_role(RoleName=f"tectum-read-{i}",
                              AssumeRolePolicyDocument=json.dumps(TRUST))
        world.iam.put_role_policy(RoleName=f"tectum-read-{i}", PolicyName="p",
                                  PolicyDocument=json.dumps(POLICY))
        world.ddb.create_table(
            TableName=f"tectum-read-{i}", BillingMode="PAY_PER_REQUEST",
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}])
    targets = Targets(str(tmp_path), "default", empty_inventory(str(tmp_path)),
                      {"aws": {"region": REGION}})
    try:
        def read(type_name: str, items: list[dict[str, Any]]) -> list[Any]:
            rt = registry.get(type_name)
            assert rt is not None
            aws = targets.target(rt, None)
            got = rt.read(aws, [ReadItem(None, {**i, "region": REGION}) for i in items])
            return list(got)

        names = [f"tectum-read-{i}" for i in range(n)] + ["tectum-absent"]
        aws = targets.target(registry.get("aws_s3_bucket"), None)  # type: ignore[arg-type]
        assert all(read("aws_s3_bucket", [{"bucket": b} for b in names])[:n])
        read("aws_iam_role", [{"name": r} for r in names])
        read("aws_dynamodb_table", [{"name": t} for t in names])
        found = read("aws_iam_role_policy", [{"role": r, "name": "p"} for r in names])
        assert found[-1] is None and all(found[:n])
        assert read("aws_s3_bucket_versioning", [{"bucket": b} for b in names]) == \
            [None] * (n + 1)  # (never enabled: no configuration)
        # (the region is looked up only for a bucket state does not place: none here)
        assert dict(aws.calls) == {
            "s3:ListBuckets": 1, "s3:GetBucketTagging": n,
            "iam:ListRoles": 1, "iam:ListRoleTags": n,
            "dynamodb:ListTables": 1, "dynamodb:DescribeTable": n,
            "dynamodb:ListTagsOfResource": n,
            "iam:GetRolePolicy": n + 1, "s3:GetBucketVersioning": n + 1}, aws.calls
    finally:
        targets.close()
