"""Conformance cases of the aws provider's EC2 types, on a moto server of this module's own
(started on first use, stopped when the test process ends; ``tests.harness.moto``): each case
makes what its object needs (a VPC, a subnet, a group) with boto3, runs, and deletes it all
afterwards. The provider reaches moto through ``endpoint_url``; the fake credentials are set in
the environment for the case and restored afterwards.

The client records itself (``Aws.mutations``: every API call that is not Describe/Get/List),
so "a no-op makes no mutating call" is checked on the real API calls."""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tectum.plans.plan import Action
from tectum.testing import Case
from tests.harness.moto import FAKE_CREDENTIALS, REGION, Moto, running_moto

_SERVER: list[Moto] = []
_STACK = contextlib.ExitStack()
atexit.register(_STACK.close)


def shared_moto() -> Moto:
    """The module's moto server (started on first use)."""
    if not _SERVER:
        tmp = Path(tempfile.mkdtemp(prefix="tectum-moto-cases-"))
        _SERVER.append(_STACK.enter_context(running_moto(tmp)))
    return _SERVER[0]


@contextmanager
def aws_env() -> Iterator[Moto]:
    """The shared moto server, with fake credentials in the environment for the block."""
    server = shared_moto()
    saved = {k: os.environ.get(k) for k in FAKE_CREDENTIALS}
    os.environ.update(FAKE_CREDENTIALS)
    try:
        yield server
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def ec2(server: Moto) -> Any:
    return server.client("ec2")


def an_ami(server: Moto) -> str:
    """An image id moto offers."""
    return str(ec2(server).describe_images(Owners=["amazon"])["Images"][0]["ImageId"])


def settings(server: Moto) -> dict[str, Any]:
    return {"region": REGION, "endpoint_url": server.url}


class Net:
    """A VPC (and on demand a subnet and a group) made by hand for a case; :meth:`close`
    deletes what is left in the VPC, then the VPC."""

    def __init__(self, server: Moto) -> None:
        self.ec2 = ec2(server)
        self.vpc = self.ec2.create_vpc(CidrBlock="10.99.0.0/16")["Vpc"]["VpcId"]

    def subnet(self) -> str:
        return str(self.ec2.create_subnet(VpcId=self.vpc, CidrBlock="10.99.9.0/24")
                   ["Subnet"]["SubnetId"])

    def group(self) -> str:
        """A group without AWS's default allow-all egress rule."""
        group = str(self.ec2.create_security_group(
            GroupName=f"conf-{secrets.token_hex(3)}", Description="case", VpcId=self.vpc)
            ["GroupId"])
        self.ec2.revoke_security_group_egress(GroupId=group, IpPermissions=[
            {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
        return group

    def close(self) -> None:
        e = self.ec2
        flt = [{"Name": "vpc-id", "Values": [self.vpc]}]
        ids = [i["InstanceId"] for r in e.describe_instances(Filters=flt)["Reservations"]
               for i in r["Instances"] if i["State"]["Name"] != "terminated"]
        if ids:
            e.terminate_instances(InstanceIds=ids)
        for g in e.describe_security_groups(Filters=flt)["SecurityGroups"]:
            if g["GroupName"] != "default":
                e.delete_security_group(GroupId=g["GroupId"])
        for s in e.describe_subnets(Filters=flt)["Subnets"]:
            e.delete_subnet(SubnetId=s["SubnetId"])
        e.delete_vpc(VpcId=self.vpc)


def _tag(server: Moto, record: dict[str, Any], key: str = "Name",
         value: str = "changed by hand") -> None:
    ec2(server).create_tags(Resources=[record["id"]], Tags=[{"Key": key, "Value": value}])


def by_id(record: dict[str, Any]) -> str:
    return str(record["id"])


@contextmanager
def vpc_case(tmp: Path) -> Iterator[Case]:
    with aws_env() as server:
        made: list[str] = []
        try:
            yield Case("aws_vpc", {"cidr_block": "10.20.0.0/16", "tags": {"Name": "conf"}},
                       update={"tags": {"Name": "conf", "env": "test"},
                               "enable_dns_hostnames": True},
                       tamper=lambda _t, rec: (made.append(rec["id"]), _tag(server, rec)),
                       drift="tags", import_id=by_id, settings=settings(server),
                       root=str(tmp))
        finally:
            e = ec2(server)
            for v in e.describe_vpcs(Filters=[{"Name": "cidr", "Values": ["10.20.0.0/16"]}]
                                     )["Vpcs"]:
                e.delete_vpc(VpcId=v["VpcId"])


@contextmanager
def subnet_case(tmp: Path) -> Iterator[Case]:
    with aws_env() as server:
        net = Net(server)
        try:
            yield Case("aws_subnet", {"vpc_id": net.vpc, "cidr_block": "10.99.1.0/24",
                                      "availability_zone": f"{REGION}a",
                                      "tags": {"Name": "conf"}},
                       update={"map_public_ip_on_launch": True, "tags": {"Name": "two"}},
                       tamper=lambda _t, rec: _tag(server, rec), drift="tags",
                       import_id=by_id, settings=settings(server), root=str(tmp))
        finally:
            net.close()


@contextmanager
def group_case(tmp: Path) -> Iterator[Case]:
    with aws_env() as server:
        net = Net(server)
        try:
            yield Case("aws_security_group",
                       {"name": f"conf-{secrets.token_hex(3)}", "vpc_id": net.vpc,
                        "description": "a conformance case", "tags": {"Name": "conf"}},
                       update={"tags": {"Name": "two"}},
                       tamper=lambda _t, rec: _tag(server, rec), drift="tags",
                       import_id=by_id, settings=settings(server), root=str(tmp))
        finally:
            net.close()


def _rule_case(tmp: Path, type_name: str, attrs: dict[str, Any]) -> Iterator[Case]:
    with aws_env() as server:
        net = Net(server)
        group = net.group()

        def tamper(_target: Any, record: dict[str, Any]) -> None:
            rule: dict[str, Any] = {"IpProtocol": record["ip_protocol"],
                                    "CidrIpv4": record["cidr_ipv4"],
                                    "Description": "changed by hand"}
            if record.get("from_port") is not None:
                rule["FromPort"], rule["ToPort"] = record["from_port"], record["to_port"]
            else:
                rule["FromPort"], rule["ToPort"] = -1, -1
            ec2(server).modify_security_group_rules(
                GroupId=group, SecurityGroupRules=[{"SecurityGroupRuleId": record["id"],
                                                    "SecurityGroupRule": rule}])
        try:
            yield Case(type_name, {"security_group_id": group, **attrs},
                       update={"description": "two", "tags": {"Name": "two"}},
                       tamper=tamper, drift="description", import_id=by_id,
                       settings=settings(server), root=str(tmp))
        finally:
            net.close()


@contextmanager
def ingress_case(tmp: Path) -> Iterator[Case]:
    yield from _rule_case(tmp, "aws_vpc_security_group_ingress_rule",
                          {"ip_protocol": "tcp", "from_port": 22, "to_port": 22,
                           "cidr_ipv4": "10.0.0.0/8", "description": "ssh"})


@contextmanager
def egress_case(tmp: Path) -> Iterator[Case]:
    yield from _rule_case(tmp, "aws_vpc_security_group_egress_rule",
                          {"ip_protocol": "-1", "cidr_ipv4": "0.0.0.0/0",
                           "description": "all out"})


@contextmanager
def instance_case(tmp: Path) -> Iterator[Case]:
    with aws_env() as server:
        net = Net(server)
        subnet, group = net.subnet(), net.group()
        try:
            yield Case("aws_instance",
                       {"ami": an_ami(server), "instance_type": "t3.micro",
                        "subnet_id": subnet, "vpc_security_group_ids": [group],
                        "user_data": "#!/bin/sh\necho hello\n", "tags": {"Name": "conf"},
                        "timeouts": {"create": "2m", "delete": "2m"}},
                       update={"instance_type": "t3.small"}, update_action=Action.UPDATE,
                       tamper=lambda _t, rec: _tag(server, rec), drift="tags",
                       import_id=by_id, settings=settings(server), root=str(tmp))
        finally:
            net.close()


BUILDERS = {
    "aws_vpc": vpc_case,
    "aws_subnet": subnet_case,
    "aws_security_group": group_case,
    "aws_vpc_security_group_ingress_rule": ingress_case,
    "aws_vpc_security_group_egress_rule": egress_case,
    "aws_instance": instance_case,
}
MARKS = {name: [pytest.mark.aws] for name in BUILDERS}
