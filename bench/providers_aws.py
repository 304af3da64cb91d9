"""Benchmark: the aws provider — a no-op over about 25 AWS resources against one moto server,
tectum vs Ansible's ``amazon.aws`` modules (issue 14: "≥ 10× faster; at most one API call per
type, counted through the proxy"), in one run.

Setup (untimed): a moto server of the benchmark's own (``moto_server`` on a free 127.0.0.1 port,
``tests.harness.moto``; stopped at the end) behind the fault proxy with no fault set
(``tests.harness.fault_proxy``: it only counts the API calls, per service and action). Each
tool manages a set of its own, alike, in a VPC of its own (so neither tool reads what the other
made, and neither purges the other's tags):

* EC2, 20 resources: a VPC (DNS host names on), 3 subnets, 3 security groups with 2 ingress
  rules and 1 egress rule each, 4 instances (``t3.micro``, user data, tags, one group);
* storage and identity, 6 resources (when the aws provider has those types, written beside
  this one): 2 S3 buckets, versioning of one, an IAM role with an inline policy, a DynamoDB
  table (on-demand).

tectum's stack declares them (``tectum.aws``); the playbook (``localhost``, local connection, no
facts, ``module_defaults`` for the endpoint and region) uses ``amazon.aws.ec2_vpc_net``,
``ec2_vpc_subnet`` (loop), ``ec2_security_group`` (loop; rules inline, as the module wants),
``ec2_instance`` (loop; found by its ``Name`` tag), ``s3_bucket`` (loop; versioning inline),
``iam_role`` + ``iam_policy``. Ansible's set has no DynamoDB table: ``community.aws``'s
``dynamodb_table`` fails against moto (``KeyError: 'table_id'``: moto's ``DescribeTable`` has
no ``TableId``), so Ansible manages 25 resources to tectum's 26. Both tools make their sets
once (untimed), then run with nothing to change.

Ansible's collections: used as installed when ``ansible-galaxy collection list`` has
``amazon.aws``; otherwise extracted from the ``ansible`` 12 wheel (``pip download --no-deps
"ansible>=12,<13"`` into ``/var/cache/tectum-bench/wheels``, only
``ansible_collections/amazon/aws`` and ``ansible_collections/community/aws`` into
``/var/cache/tectum-bench/collections``, found through ``ANSIBLE_COLLECTIONS_PATH``). The
modules run with this Python (boto3 is installed with tectum's ``aws`` extra).

Phases, each the wall time of the whole tool process: ``tectum plan`` and ``tectum apply
-auto-approve`` with nothing to change (``--repeat``, default 5; "No changes" checked), and
``ansible-playbook`` with nothing to change (``--ansible-repeat``, default 2; the recap's
``changed`` is printed). Reported: medians, the ratio Ansible / tectum apply, and the API calls
of one tectum no-op plan and of one Ansible no-op run per service action.

Run alone from the checkout: ``python3 bench/providers_aws.py [--repeat N]
[--ansible-repeat N]``; ``bench/providers.py`` runs it with the other families.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.harness.fault_proxy import fault_proxy  # noqa: E402
from tests.harness.moto import FAKE_CREDENTIALS, REGION, running_moto  # noqa: E402

CACHE = Path("/var/cache/tectum-bench")
COLLECTIONS = CACHE / "collections"

TRUST = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
     "Action": "sts:AssumeRole"}]}
POLICY = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}


class BenchError(Exception):
    """A step of the benchmark failed (the message says which)."""


def _sh(argv: Sequence[str], env: dict[str, str] | None = None, cwd: Path | None = None,
        timeout: float = 1800, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=timeout, stdin=subprocess.DEVNULL, check=False)
    if check and proc.returncode != 0:
        raise BenchError(f"{' '.join(argv[:4])} … exited {proc.returncode}:\n"
                         f"{(proc.stdout + proc.stderr)[-3000:]}")
    return proc


def ensure_collections() -> tuple[dict[str, str], bool]:
    """The environment under which ``ansible-playbook`` finds ``amazon.aws`` (and whether
    ``community.aws`` is there too); see the module docstring."""
    env = {**os.environ, "ANSIBLE_HOST_KEY_CHECKING": "False",
           "ANSIBLE_PYTHON_INTERPRETER": sys.executable, **FAKE_CREDENTIALS}
    env.pop("AWS_ENDPOINT_URL", None)
    listed = _sh(["ansible-galaxy", "collection", "list"], check=False).stdout
    if "amazon.aws" in listed:
        return env, "community.aws" in listed
    marker = COLLECTIONS / "ansible_collections" / "amazon" / "aws" / "MANIFEST.json"
    if not marker.is_file():
        wheels = CACHE / "wheels"
        wheels.mkdir(parents=True, exist_ok=True)
        found = sorted(wheels.glob("ansible-12.*.whl"))
        if not found:
            _sh([sys.executable, "-m", "pip", "download", "--no-deps", "ansible>=12,<13",
                 "-d", str(wheels)], timeout=900)
            found = sorted(wheels.glob("ansible-12.*.whl"))
        with zipfile.ZipFile(found[-1]) as zf:
            zf.extractall(COLLECTIONS, members=[
                n for n in zf.namelist()
                if n.startswith(("ansible_collections/amazon/aws/",
                                 "ansible_collections/community/aws/"))])
    env["ANSIBLE_COLLECTIONS_PATH"] = str(COLLECTIONS)
    return env, (COLLECTIONS / "ansible_collections" / "community" / "aws").is_dir()


def _has_storage() -> bool:
    from tectum.providers.aws.provider import AwsProvider

    return "aws_s3_bucket" in AwsProvider.resource_types


def _stack(ami: str, storage: bool, suffix: str) -> str:
    text = f'''
from tectum.aws import (Instance, SecurityGroup, SecurityGroupEgressRule,
                        SecurityGroupIngressRule, Subnet, Vpc)
vpc = Vpc("main", cidr_block="10.1.0.0/16", enable_dns_hostnames=True, tags={{"Name": "t"}})
subnets = [Subnet(f"s{{i}}", vpc_id=vpc.id, cidr_block=f"10.1.{{i}}.0/24",
                  availability_zone="{REGION}a", tags={{"Name": f"t-s{{i}}"}})
           for i in range(3)]
groups = []
for i in range(3):
    g = SecurityGroup(f"g{{i}}", name=f"t-g{{i}}", vpc_id=vpc.id, description="bench")
    groups.append(g)
    for port in (22, 443):
        SecurityGroupIngressRule(f"g{{i}}-{{port}}", security_group_id=g.id,
                                 ip_protocol="tcp", from_port=port, to_port=port,
                                 cidr_ipv4="10.0.0.0/8")
    SecurityGroupEgressRule(f"g{{i}}-out", security_group_id=g.id, ip_protocol="-1",
                            cidr_ipv4="0.0.0.0/0")
for i in range(4):
    Instance(f"vm{{i}}", ami="{ami}", instance_type="t3.micro", subnet_id=subnets[i % 3].id,
             vpc_security_group_ids=[groups[i % 3].id], user_data="#!/bin/sh\\ntrue\\n",
             tags={{"Name": f"t-vm{{i}}"}})
'''
    if storage:
        text += f'''
from tectum.aws import DynamodbTable, IamRole, IamRolePolicy, S3Bucket, S3BucketVersioning
b = [S3Bucket(f"b{{i}}", bucket=f"t-{suffix}-{{i}}", force_destroy=True) for i in range(2)]
S3BucketVersioning("b0", bucket=b[0].bucket, versioning_configuration={{"status": "Enabled"}})
role = IamRole("app", name="t-{suffix}", assume_role_policy={TRUST!r})
IamRolePolicy("read", role=role.name, policy={POLICY!r})
DynamodbTable("t", name="t-{suffix}", hash_key="id", attribute=[{{"name": "id", "type": "S"}}],
              billing_mode="PAY_PER_REQUEST")
'''
    return text


def _playbook(ami: str, endpoint: str, storage: bool, dynamodb: bool, suffix: str) -> str:
    aws = {"region": REGION, "endpoint_url": endpoint}
    tasks: list[dict[str, object]] = [
        {"name": "vpc", "amazon.aws.ec2_vpc_net": {
            "name": "a", "cidr_block": "10.2.0.0/16", "dns_hostnames": True, "dns_support": True,
            "tags": {"Name": "a"}}, "register": "vpc"},
        {"name": "subnets", "amazon.aws.ec2_vpc_subnet": {
            "vpc_id": "{{ vpc.vpc.id }}", "cidr": "10.2.{{ item }}.0/24",
            "az": f"{REGION}a", "tags": {"Name": "a-s{{ item }}"}},
         "loop": [0, 1, 2], "register": "subnets"},
        {"name": "groups", "amazon.aws.ec2_security_group": {
            "name": "a-g{{ item }}", "description": "bench", "vpc_id": "{{ vpc.vpc.id }}",
            "rules": [{"proto": "tcp", "ports": [p], "cidr_ip": "10.0.0.0/8"}
                      for p in (22, 443)],
            "rules_egress": [{"proto": "all", "cidr_ip": "0.0.0.0/0"}]},
         "loop": [0, 1, 2], "register": "sgs"},
        {"name": "instances", "amazon.aws.ec2_instance": {
            "name": "a-vm{{ item }}", "image_id": ami, "instance_type": "t3.micro",
            "vpc_subnet_id": "{{ subnets.results[item % 3].subnet.id }}",
            "security_group": "{{ sgs.results[item % 3].group_id }}",
            "user_data": "#!/bin/sh\ntrue\n", "wait": False},
         "loop": [0, 1, 2, 3]},
    ]
    if storage:
        tasks += [
            {"name": "buckets", "amazon.aws.s3_bucket": {
                "name": f"a-{suffix}-{{{{ item }}}}", "versioning": "{{ item == 0 }}"},
             "loop": [0, 1]},
            {"name": "role", "amazon.aws.iam_role": {
                "name": f"a-{suffix}", "assume_role_policy_document": json.dumps(TRUST),
                "create_instance_profile": False}},
            {"name": "policy", "amazon.aws.iam_policy": {
                "iam_type": "role", "iam_name": f"a-{suffix}", "policy_name": "read",
                "policy_json": json.dumps(POLICY)}},
        ]
        if dynamodb:
            tasks.append({"name": "table", "community.aws.dynamodb_table": {
                "name": f"a-{suffix}", "hash_key_name": "id", "hash_key_type": "STRING",
                "billing_mode": "PAY_PER_REQUEST"}})
    defaults = {"group/amazon.aws.aws": aws}
    if dynamodb and storage:
        defaults["community.aws.dynamodb_table"] = aws
    return json.dumps([{"hosts": "localhost", "connection": "local", "gather_facts": False,
                        "module_defaults": defaults, "tasks": tasks}], indent=1)


def _timed(argv: Sequence[str], env: dict[str, str], cwd: Path) -> tuple[float, str]:
    started = time.monotonic()
    proc = _sh(argv, env=env, cwd=cwd)
    return time.monotonic() - started, proc.stdout + proc.stderr


def _calls(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"


def run(report: Callable[[str], None], repeat: int = 5, ansible_repeat: int = 2) -> None:
    """Set up, time the phases, report (see the module docstring)."""
    env, _community = ensure_collections()
    storage = _has_storage()
    suffix = os.urandom(3).hex()
    with tempfile.TemporaryDirectory(prefix="tectum-bench-aws-") as tmp_name:
        tmp = Path(tmp_name)
        with running_moto(tmp) as moto, fault_proxy(moto.url) as proxy:
            import boto3

            ami = boto3.client("ec2", region_name=REGION, endpoint_url=moto.url,
                               aws_access_key_id="x", aws_secret_access_key="x"
                               ).describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
            project = tmp / "proj"
            project.mkdir()
            (project / "stack.py").write_text(_stack(ami, storage, suffix))
            (project / "tectum.toml").write_text(
                f'[providers.aws]\nregion = "{REGION}"\nendpoint_url = "{proxy.url}"\n')
            tectum = [sys.executable, "-m", "tectum"]
            made, _ = _timed([*tectum, "apply", "-auto-approve", str(project)], env, project)
            doc = json.loads(_sh([*tectum, "state", "pull", str(project)], env=env).stdout)
            count = len(doc.get("resources") or [])
            report(f"aws: {count} resources per tool (EC2 20"
                   f"{', S3/IAM/DynamoDB 6' if storage else ''}); tectum's first apply "
                   f"{made:.2f} s")
            book = tmp / "site.json"
            book.write_text(_playbook(ami, proxy.url, storage, False, suffix))
            playbook = ["ansible-playbook", "-i", "localhost,", str(book)]
            first, _ = _timed(playbook, env, tmp)
            report(f"aws: Ansible's first run {first:.2f} s"
                   + (" (no DynamoDB table in its set: see the docstring)" if storage else ""))
            # no-op rounds, interleaved
            plans: list[float] = []
            applies: list[float] = []
            books: list[float] = []
            tectum_calls: dict[str, int] = {}
            ansible_calls: dict[str, int] = {}
            changed = ""
            for i in range(max(repeat, ansible_repeat)):
                if i < repeat:
                    proxy.clear()
                    took, out = _timed([*tectum, "plan", str(project)], env, project)
                    if "No changes" not in out:
                        raise BenchError(f"tectum's no-op plan has changes:\n{out[-3000:]}")
                    plans.append(took)
                    tectum_calls = dict(proxy.calls)
                    took, out = _timed([*tectum, "apply", "-auto-approve", str(project)], env,
                                       project)
                    if "No changes" not in out:
                        raise BenchError(f"tectum's no-op apply has changes:\n{out[-3000:]}")
                    applies.append(took)
                if i < ansible_repeat:
                    proxy.clear()
                    took, out = _timed(playbook, env, tmp)
                    books.append(took)
                    ansible_calls = dict(proxy.calls)
                    found = re.search(r"changed=(\d+)", out)
                    changed = found.group(1) if found else "?"
            plan_s, apply_s = statistics.median(plans), statistics.median(applies)
            book_s = statistics.median(books)
            report(f"aws no-op: tectum plan {plan_s:.2f} s, tectum apply {apply_s:.2f} s, "
                   f"ansible-playbook {book_s:.2f} s (changed={changed}) → "
                   f"{book_s / apply_s:.1f}× faster")
            report(f"aws: API calls of one tectum no-op plan ({sum(tectum_calls.values())}): "
                   f"{_calls(tectum_calls)}")
            report(f"aws: API calls of one Ansible no-op run ({sum(ansible_calls.values())}): "
                   f"{_calls(ansible_calls)}")
            worst = max(tectum_calls.values(), default=0)
            report(f"aws: at most {worst} call(s) per service action in tectum's no-op plan "
                   f"({len(tectum_calls)} actions for {count} resources)")
            _sh([*tectum, "destroy", "-auto-approve", str(project)], env=env, check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="tectum no-op runs")
    parser.add_argument("--ansible-repeat", type=int, default=2, help="Ansible no-op runs")
    args = parser.parse_args()
    try:
        run(print, args.repeat, args.ansible_repeat)
    except BenchError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
