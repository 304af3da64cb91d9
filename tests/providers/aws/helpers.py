"""What the aws provider's end-to-end tests share: a project with ``[providers.aws]``, the
stack they apply, and an inventory of what moto holds (to compare with state)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import Result, ok
from tests.harness.moto import REGION, Moto

#: a small network and two instances: 9 resources of the 6 EC2 types; variable ``env`` is a
#: tag of the instances
STACK = '''
from tectum import output, var
from tectum.aws import (Instance, SecurityGroup, SecurityGroupEgressRule,
                        SecurityGroupIngressRule, Subnet, Vpc)

env = var("env", str, default="one")
vpc = Vpc("main", cidr_block="10.0.0.0/16", enable_dns_hostnames=True,
          tags={"Name": "main"})
subnets = [Subnet(f"s{i}", vpc_id=vpc.id, cidr_block=f"10.0.{i}.0/24",
                  availability_zone="eu-west-1a", tags={"Name": f"s{i}"}) for i in range(2)]
web = SecurityGroup("web", vpc_id=vpc.id, description="web servers", tags={"app": "web"})
SecurityGroupIngressRule("ssh", security_group_id=web.id, ip_protocol="tcp", from_port=22,
                         to_port=22, cidr_ipv4="10.0.0.0/8", description="ssh")
SecurityGroupIngressRule("http", security_group_id=web.id, ip_protocol="tcp", from_port=80,
                         to_port=80, cidr_ipv4="0.0.0.0/0")
SecurityGroupEgressRule("all", security_group_id=web.id, ip_protocol="-1",
                        cidr_ipv4="0.0.0.0/0")
app = [Instance(f"app{i}", ami="AMI", instance_type="t3.micro", subnet_id=subnets[i].id,
                vpc_security_group_ids=[web.id], user_data="#!/bin/sh\\necho hi\\n",
                tags={"Name": f"app{i}", "env": env}, timeouts={"create": "2m"})
       for i in range(2)]
output("ip", app[0].private_ip)
'''


def ec2(moto: Moto) -> Any:
    return moto.client("ec2")


def an_ami(moto: Moto) -> str:
    return str(ec2(moto).describe_images(Owners=["amazon"])["Images"][0]["ImageId"])


def project(make_project: Callable[..., Path], moto: Moto, stack: str = STACK,
            endpoint: str | None = None, name: str = "proj") -> Path:
    """A project applying ``stack`` (``AMI`` replaced by an image moto offers) on moto (or on
    ``endpoint``: a fault proxy in front of it)."""
    toml = f'[providers.aws]\nregion = "{REGION}"\nendpoint_url = "{endpoint or moto.url}"\n'
    return make_project(stack.replace("AMI", an_ami(moto)), {"tectum.toml": toml}, name=name)


def env(moto: Moto) -> dict[str, str]:
    """The environment of a tectum run: fake credentials (the endpoint is in tectum.toml)."""
    return {k: v for k, v in moto.env().items() if k != "AWS_ENDPOINT_URL"}


def run(tectum: Callable[..., Result], moto: Moto, root: Path, *args: str) -> Result:
    return tectum(*args, cwd=root, env=env(moto))


def state(tectum: Callable[..., Result], moto: Moto, root: Path) -> dict[str, dict[str, Any]]:
    """The resources state holds: address → attributes."""
    doc = json.loads(ok(run(tectum, moto, root, "state", "pull")).stdout)
    return {r["address"]: r.get("attributes") or {} for r in doc.get("resources") or []}


def inventory(moto: Moto) -> dict[str, set[str]]:
    """Every object moto holds that is not one of its own defaults (the default VPC, its
    subnets and groups, AWS's default egress rules of a group), by kind."""
    e = ec2(moto)
    vpcs = {v["VpcId"] for v in e.describe_vpcs()["Vpcs"] if not v.get("IsDefault")}
    subnets = {s["SubnetId"] for s in e.describe_subnets()["Subnets"]
               if not s.get("DefaultForAz")}
    groups = {g["GroupId"]: g for g in e.describe_security_groups()["SecurityGroups"]
              if g["GroupName"] != "default"}
    rules = {r["SecurityGroupRuleId"] for r in e.describe_security_group_rules()
             ["SecurityGroupRules"] if r["GroupId"] in groups}
    instances = {i["InstanceId"] for r in e.describe_instances()["Reservations"]
                 for i in r["Instances"] if i["State"]["Name"] not in ("terminated",
                                                                      "shutting-down")}
    return {"vpc": vpcs, "subnet": subnets, "group": set(groups), "rule": rules,
            "instance": instances}


def ids_in_state(records: dict[str, dict[str, Any]]) -> set[str]:
    return {str(a["id"]) for a in records.values() if a.get("id")}


def everything(moto: Moto) -> set[str]:
    return set().union(*inventory(moto).values())
