"""The aws provider's EC2 types end to end: the real CLI on a project with ``[providers.aws]``
against a moto server (``tests.harness.moto``) — apply, ten no-op plans, destroy; import of
every type; drift made by hand (a tag, a deleted rule, a terminated instance) seen and
repaired; bad input refused with a diagnostic; every type converging through the fault proxy;
one Describe call per type for a no-op plan."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Result, ok
from tests.harness.fault_proxy import FaultProxy, Faults
from tests.harness.moto import REGION, Moto
from tests.providers.aws.helpers import (
    STACK,
    ec2,
    everything,
    ids_in_state,
    inventory,
    project,
    run,
    state,
)

pytestmark = pytest.mark.aws

Tectum = Callable[..., Result]
MakeProject = Callable[..., Path]

#: the types STACK declares, with how many of each
TYPES = {"aws_vpc": 1, "aws_subnet": 2, "aws_security_group": 1,
         "aws_vpc_security_group_ingress_rule": 2, "aws_vpc_security_group_egress_rule": 1,
         "aws_instance": 2}


def no_changes(result: Result) -> None:
    assert result.returncode == 0, result.output
    assert "No changes" in result.output, result.output


def test_apply_then_ten_plans_show_no_changes_and_destroy_removes_all(
        tectum: Tectum, make_project: MakeProject, moto: Moto) -> None:
    root = project(make_project, moto)
    applied = ok(run(tectum, moto, root, "apply", "-auto-approve"))
    assert f"Resources: {sum(TYPES.values())} added" in applied.output
    records = state(tectum, moto, root)
    assert sorted({a.split(".")[0] for a in records}) == sorted(TYPES)
    # what moto holds is exactly what state records (no orphan, nothing missing)
    assert everything(moto) == ids_in_state(records)
    group = next(a for k, a in records.items() if k.startswith("aws_security_group."))
    rules = ec2(moto).describe_security_group_rules(
        Filters=[{"Name": "group-id", "Values": [group["id"]]}])["SecurityGroupRules"]
    # AWS's default allow-all egress rule was removed (Terraform's behaviour): only ours
    assert {r["SecurityGroupRuleId"] for r in rules} == {
        a["id"] for k, a in records.items() if "_rule." in k}
    vpc = next(a for k, a in records.items() if k.startswith("aws_vpc."))
    got = ec2(moto).describe_vpc_attribute(VpcId=vpc["id"], Attribute="enableDnsHostnames")
    assert got["EnableDnsHostnames"]["Value"] is True
    instance = records["aws_instance.app0"]
    assert instance["state"] == "running" and instance["private_ip"].startswith("10.0.0.")
    for _ in range(10):
        no_changes(run(tectum, moto, root, "plan"))
    destroyed = ok(run(tectum, moto, root, "destroy", "-auto-approve"))
    assert f"Resources: {sum(TYPES.values())} destroyed" in destroyed.output
    assert everything(moto) == set()
    assert state(tectum, moto, root) == {}


def test_an_update_changes_objects_in_place(tectum: Tectum, make_project: MakeProject,
                                            moto: Moto) -> None:
    # (the stack with a variable instance type)
    stack = STACK.replace('env = var("env", str, default="one")',
                          'env = var("env", str, default="one")\n'
                          'kind = var("kind", str, default="t3.micro")') \
        .replace('instance_type="t3.micro"', "instance_type=kind")
    root = project(make_project, moto, stack, name="upd")
    ok(run(tectum, moto, root, "apply", "-auto-approve"))
    before = state(tectum, moto, root)
    plan = ok(run(tectum, moto, root, "plan", "-var", "env=two", "-var", "kind=t3.small"))
    assert "0 to add" in plan.output and "0 to replace" in plan.output, plan.output
    ok(run(tectum, moto, root, "apply", "-auto-approve", "-var", "env=two",
           "-var", "kind=t3.small"))
    after = state(tectum, moto, root)
    assert ids_in_state(after) == ids_in_state(before)  # the same objects, changed
    assert after["aws_instance.app0"]["instance_type"] == "t3.small"
    assert after["aws_instance.app0"]["tags"] == {"Name": "app0", "env": "two"}
    raw = ec2(moto).describe_instances(InstanceIds=[after["aws_instance.app1"]["id"]])
    assert raw["Reservations"][0]["Instances"][0]["InstanceType"] == "t3.small"
    no_changes(run(tectum, moto, root, "plan", "-var", "env=two", "-var", "kind=t3.small"))
    ok(run(tectum, moto, root, "destroy", "-auto-approve", "-var", "env=two",
           "-var", "kind=t3.small"))
    assert everything(moto) == set()


def test_user_data_changes_in_place_and_a_stopped_instance_stays_stopped(
        tectum: Tectum, make_project: MakeProject, moto: Moto) -> None:
    """A new ``user_data`` or ``instance_type`` stops, modifies and starts the instance
    (Terraform's aws_instance) — the same instance; one stopped by hand stays stopped. With
    ``user_data_replace_on_change`` a new ``user_data`` replaces it instead."""
    stack = """
from tectum import var
from tectum.aws import Instance
data = var("data", str, default="#!/bin/sh\\necho one\\n")
kind = var("kind", str, default="t3.micro")
again = var("again", bool, default=False)
Instance("vm", ami="AMI", instance_type=kind, user_data=data,
         user_data_replace_on_change=again)
"""
    root = project(make_project, moto, stack, name="udata")
    ok(run(tectum, moto, root, "apply", "-auto-approve"))
    first = state(tectum, moto, root)["aws_instance.vm"]
    client = ec2(moto)

    def user_data(iid: str) -> str:
        got = client.describe_instance_attribute(InstanceId=iid, Attribute="userData")
        return base64.b64decode(got["UserData"]["Value"]).decode()

    def instance(iid: str) -> dict[str, Any]:
        found: dict[str, Any] = client.describe_instances(
            InstanceIds=[iid])["Reservations"][0]["Instances"][0]
        return found

    try:
        no_changes(run(tectum, moto, root, "plan"))
        plan = ok(run(tectum, moto, root, "plan", "-var", "data=echo two"))
        assert "0 to add, 1 to change, 0 to replace" in plan.output, plan.output
        ok(run(tectum, moto, root, "apply", "-auto-approve", "-var", "data=echo two"))
        assert state(tectum, moto, root)["aws_instance.vm"]["id"] == first["id"]
        assert user_data(first["id"]) == "echo two"
        assert instance(first["id"])["State"]["Name"] == "running"
        no_changes(run(tectum, moto, root, "plan", "-var", "data=echo two"))

        # stopped by hand: not drift; a change leaves it stopped
        client.stop_instances(InstanceIds=[first["id"]])
        no_changes(run(tectum, moto, root, "plan", "-var", "data=echo two"))
        ok(run(tectum, moto, root, "apply", "-auto-approve", "-var", "data=echo three",
               "-var", "kind=t3.small"))
        got = instance(first["id"])
        assert got["State"]["Name"] == "stopped", got["State"]
        assert got["InstanceType"] == "t3.small"
        assert user_data(first["id"]) == "echo three"

        # user_data_replace_on_change: a new instance
        args = ("-var", "data=echo four", "-var", "kind=t3.small", "-var", "again=true")
        plan = ok(run(tectum, moto, root, "plan", *args))
        assert "0 to add, 0 to change, 1 to replace" in plan.output, plan.output
        ok(run(tectum, moto, root, "apply", "-auto-approve", *args))
        second = state(tectum, moto, root)["aws_instance.vm"]
        assert second["id"] != first["id"]
        assert user_data(second["id"]) == "echo four"
        assert instance(first["id"])["State"]["Name"] == "terminated"
    finally:
        ok(run(tectum, moto, root, "destroy", "-auto-approve"))
    assert everything(moto) == set()


def test_drift_made_by_hand_is_reported_and_repaired(tectum: Tectum, make_project: MakeProject,
                                                     moto: Moto) -> None:
    root = project(make_project, moto)
    ok(run(tectum, moto, root, "apply", "-auto-approve"))
    records = state(tectum, moto, root)
    e = ec2(moto)
    # a tag changed by hand, an ingress rule deleted by hand, an instance terminated by hand
    e.create_tags(Resources=[records["aws_instance.app0"]["id"]],
                  Tags=[{"Key": "env", "Value": "by-hand"}])
    ssh = records["aws_vpc_security_group_ingress_rule.ssh"]
    e.revoke_security_group_ingress(GroupId=ssh["security_group_id"],
                                    SecurityGroupRuleIds=[ssh["id"]])
    e.terminate_instances(InstanceIds=[records["aws_instance.app1"]["id"]])
    plan = run(tectum, moto, root, "plan")
    assert plan.returncode == 0, plan.output
    out = plan.output
    assert "aws_instance.app0: tags" in out, out
    assert "aws_vpc_security_group_ingress_rule.ssh: deleted" in out, out
    assert "aws_instance.app1: deleted" in out, out
    assert "Plan: 2 to add, 1 to change, 0 to replace, 0 to destroy" in out, out
    drift = run(tectum, moto, root, "drift")
    for address in ("aws_instance.app0", "aws_vpc_security_group_ingress_rule.ssh",
                    "aws_instance.app1"):
        assert address in drift.output, drift.output
    assert "aws_subnet" not in drift.output and "aws_vpc" not in drift.output.replace(
        "aws_vpc_security_group", "")
    ok(run(tectum, moto, root, "apply", "-auto-approve"))
    repaired = state(tectum, moto, root)
    assert repaired["aws_instance.app1"]["id"] != records["aws_instance.app1"]["id"]
    assert repaired["aws_instance.app0"]["tags"]["env"] == "one"
    no_changes(run(tectum, moto, root, "plan"))
    assert everything(moto) == ids_in_state(repaired)
    ok(run(tectum, moto, root, "destroy", "-auto-approve"))
    assert everything(moto) == set()


IMPORT_STACK = '''
from tectum.aws import (Instance, SecurityGroup, SecurityGroupEgressRule,
                        SecurityGroupIngressRule, Subnet, Vpc)
Vpc("main", cidr_block="10.7.0.0/16", tags={"Name": "hand"})
Subnet("a", vpc_id="VPC", cidr_block="10.7.1.0/24", availability_zone="eu-west-1a")
SecurityGroup("g", name="hand", vpc_id="VPC", description="made by hand")
SecurityGroupIngressRule("in", security_group_id="SG", ip_protocol="tcp", from_port=443,
                         to_port=443, cidr_ipv4="0.0.0.0/0")
SecurityGroupEgressRule("out", security_group_id="SG", ip_protocol="-1",
                        cidr_ipv4="0.0.0.0/0")
Instance("vm", ami="AMI", instance_type="t3.micro", subnet_id="SUBNET",
         vpc_security_group_ids=["SG"], user_data="hello")
'''


def test_import_of_every_type(tectum: Tectum, make_project: MakeProject, moto: Moto) -> None:
    e = ec2(moto)
    vpc = e.create_vpc(CidrBlock="10.7.0.0/16", TagSpecifications=[
        {"ResourceType": "vpc", "Tags": [{"Key": "Name", "Value": "hand"}]}])["Vpc"]["VpcId"]
    subnet = e.create_subnet(VpcId=vpc, CidrBlock="10.7.1.0/24",
                             AvailabilityZone=f"{REGION}a")["Subnet"]["SubnetId"]
    group = e.create_security_group(GroupName="hand", Description="made by hand",
                                    VpcId=vpc)["GroupId"]
    rule_in = e.authorize_security_group_ingress(GroupId=group, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443,
         "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])["SecurityGroupRules"][0]
    rule_out = next(r for r in e.describe_security_group_rules(
        Filters=[{"Name": "group-id", "Values": [group]}])["SecurityGroupRules"]
        if r["IsEgress"])
    image = e.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    vm = e.run_instances(ImageId=image, InstanceType="t3.micro", MinCount=1, MaxCount=1,
                         SubnetId=subnet, SecurityGroupIds=[group],
                         UserData="hello")["Instances"][0]["InstanceId"]
    stack = IMPORT_STACK.replace("VPC", vpc).replace("SUBNET", subnet).replace("SG", group) \
        .replace("AMI", image)
    root = project(make_project, moto, stack)
    made = {"aws_vpc.main": vpc, "aws_subnet.a": subnet, "aws_security_group.g": group,
            "aws_vpc_security_group_ingress_rule.in": rule_in["SecurityGroupRuleId"],
            "aws_vpc_security_group_egress_rule.out": rule_out["SecurityGroupRuleId"],
            "aws_instance.vm": vm}
    for address, object_id in made.items():
        ok(run(tectum, moto, root, "import", address, object_id))
    records = state(tectum, moto, root)
    assert {a: r["id"] for a, r in records.items()} == made
    assert records["aws_instance.vm"]["user_data"] == "hello"
    no_changes(run(tectum, moto, root, "plan"))
    # imported objects were there before tectum: destroy forgets them, deletes nothing
    ok(run(tectum, moto, root, "destroy", "-auto-approve"))
    assert set(made.values()) <= everything(moto)


def test_an_unknown_id_is_not_imported(tectum: Tectum, make_project: MakeProject,
                                       moto: Moto) -> None:
    root = project(make_project, moto, 'from tectum.aws import Vpc\n'
                   'Vpc("main", cidr_block="10.7.0.0/16")\n')
    result = run(tectum, moto, root, "import", "aws_vpc.main", "vpc-0123456789abcdef0")
    assert result.returncode == 1 and "Traceback" not in result.output, result.output
    assert state(tectum, moto, root) == {}


@pytest.mark.parametrize("stack, toml, words", [
    ('Vpc("v", cidr_block="10.0.0.0/33")', None, ["aws_vpc.v", "cidr_block"]),
    ('Vpc("v", cidr_block="10.0.0.1/16")', None, ["aws_vpc.v", "host bits"]),
    ('Vpc("v", cidr_block="10.0.0.0/16", cidr="x")', None, ["aws_vpc.v", "cidr"]),
    ('Vpc("v", cidr_block="10.0.0.0/16", tags={"tectum:x": "y"})', None, ["reserved"]),
    ('Instance("i", ami="ami-1", instance_type="t3.micro", timeouts={"create": "soon"})',
     None, ["aws_instance.i", "duration"]),
    ('SecurityGroupIngressRule("r", security_group_id="sg-1", ip_protocol="tcp", '
     'cidr_ipv4="0.0.0.0/0")', None, ["from_port"]),
    ('Vpc("v", cidr_block="10.0.0.0/16")', 'region = "mars"', ["region", "mars"]),
    ('Vpc("v", cidr_block="10.0.0.0/16")', 'region = "xx-nowhere-9"\nNOENDPOINT',
     ["Unknown AWS region", "xx-nowhere-9"]),
    ('Vpc("v", cidr_block="10.0.0.0/16")', 'regoin = "eu-west-1"', ["regoin"]),
])
def test_bad_input_is_a_diagnostic_and_nothing_is_made(
        tectum: Tectum, make_project: MakeProject, moto: Moto, stack: str, toml: str | None,
        words: list[str]) -> None:
    root = project(make_project, moto, "from tectum.aws import *  # noqa\n" + stack + "\n")
    if toml is not None:
        text = toml.replace("NOENDPOINT", "")
        if "NOENDPOINT" not in toml:
            text += f'\nendpoint_url = "{moto.url}"'
        if "region" not in text:
            text += f'\nregion = "{REGION}"'
        (root / "tectum.toml").write_text("[providers.aws]\n" + text + "\n")
    result = run(tectum, moto, root, "apply", "-auto-approve")
    assert result.returncode == 1, result.output
    assert "Traceback" not in result.output, result.output
    for word in words:
        assert word in result.output, result.output
    assert everything(moto) == set()


def test_every_type_converges_through_faults(tectum: Tectum, make_project: MakeProject,
                                             moto: Moto, moto_faults: FaultProxy) -> None:
    """Throttling, HTTP 500, connection resets and "not found" right after a create, at
    rates that make several of each certain: apply, plan and destroy still succeed."""
    moto_faults.reseed(Faults(throttle=0.04, error=0.03, reset=0.03, not_found=0.6,
                              window=6, seed=14, first=("throttle", "error", "reset")))
    root = project(make_project, moto, endpoint=moto_faults.url)
    ok(run(tectum, moto, root, "apply", "-auto-approve"))
    no_changes(run(tectum, moto, root, "plan"))
    records = state(tectum, moto, root)
    assert everything(moto) == ids_in_state(records)
    assert len(records) == sum(TYPES.values())
    ok(run(tectum, moto, root, "destroy", "-auto-approve"))
    assert everything(moto) == set()
    injected = dict(moto_faults.injected)
    for kind in ("throttle", "error", "reset", "not_found"):
        assert injected.get(kind, 0) >= 1, injected


def test_a_create_whose_answer_is_lost_makes_one_object(
        tectum: Tectum, make_project: MakeProject, moto: Moto, moto_faults: FaultProxy) -> None:
    """Every create's answer is lost (moto makes the object; the connection is reset): the
    create is not sent again blindly — the object is found by its client token and taken, so
    each resource has exactly one object, and no rule is recorded as "found" (forgotten, not
    deleted, by destroy)."""
    moto_faults.reseed(Faults(lost=1.0, seed=3))
    root = project(make_project, moto, endpoint=moto_faults.url)
    ok(run(tectum, moto, root, "apply", "-auto-approve"))
    assert moto_faults.injected.get("lost", 0) >= sum(TYPES.values()), moto_faults.injected
    records = state(tectum, moto, root)
    assert everything(moto) == ids_in_state(records)
    assert len(records) == sum(TYPES.values())
    moto_faults.reseed(Faults())
    no_changes(run(tectum, moto, root, "plan"))
    ok(run(tectum, moto, root, "destroy", "-auto-approve"))
    assert everything(moto) == set()


def test_a_no_op_plan_makes_one_describe_call_per_type(
        tectum: Tectum, make_project: MakeProject, moto: Moto,
        moto_faults: FaultProxy) -> None:
    root = project(make_project, moto, endpoint=moto_faults.url)
    ok(run(tectum, moto, root, "apply", "-auto-approve"))
    moto_faults.clear()
    no_changes(run(tectum, moto, root, "plan"))
    calls = dict(moto_faults.calls)
    assert calls == {"ec2:DescribeVpcs": 1, "ec2:DescribeSubnets": 1,
                     "ec2:DescribeSecurityGroups": 1,
                     # (one per rule type: ingress and egress)
                     "ec2:DescribeSecurityGroupRules": 2,
                     "ec2:DescribeInstances": 1}, calls
    ok(run(tectum, moto, root, "destroy", "-auto-approve"))
    assert inventory(moto)["vpc"] == set()


def test_a_tag_change_of_a_vpc_leaves_its_subnets_alone(
        tectum: Tectum, make_project: MakeProject, moto: Moto) -> None:
    stack = STACK.replace('tags={"Name": "main"}', 'tags={"Name": env}')
    root = project(make_project, moto, stack)
    ok(run(tectum, moto, root, "apply", "-auto-approve"))
    try:
        plan = ok(run(tectum, moto, root, "plan", "-var", "env=two"))
        # (the VPC's and the instances' tags change; nothing is replaced)
        assert "0 to add, 3 to change, 0 to replace" in plan.output, plan.output
    finally:
        ok(run(tectum, moto, root, "destroy", "-auto-approve"))


def test_a_vpc_moved_away_is_neither_taken_nor_deleted_by_a_new_one_at_its_old_address(
        tectum: Tectum, make_project: MakeProject, moto: Moto) -> None:
    """A VPC moved from aws_vpc.x to aws_vpc.y keeps its tectum:address tag; a new aws_vpc.x
    with another CIDR must not take it over or delete it (the create's guard for objects a
    killed run made): the apply fails naming it, and y's VPC is untouched."""
    first = '''
from tectum.aws import Vpc
Vpc("x", cidr_block="10.20.0.0/16", tags={"Name": "moved"})
'''
    root = project(make_project, moto, first)
    ok(run(tectum, moto, root, "apply", "-auto-approve"))
    vpc_id = state(tectum, moto, root)["aws_vpc.x"]["id"]
    (root / "stack.py").write_text('''
from tectum import moved
from tectum.aws import Vpc
y = Vpc("y", cidr_block="10.20.0.0/16", tags={"Name": "moved"})
moved("aws_vpc.x", y)
''')
    ok(run(tectum, moto, root, "apply", "-auto-approve"))
    (root / "stack.py").write_text('''
from tectum.aws import Vpc
Vpc("y", cidr_block="10.20.0.0/16", tags={"Name": "moved"})
Vpc("x", cidr_block="10.30.0.0/16", tags={"Name": "new"})
''')
    try:
        applied = run(tectum, moto, root, "apply", "-auto-approve")
        assert applied.returncode == 1, applied.output
        assert f"{vpc_id} carries this stack's tags for aws_vpc.x" in applied.output
        assert "Traceback" not in applied.output
        vpcs = {v["VpcId"]: v for v in ec2(moto).describe_vpcs()["Vpcs"]}
        assert vpcs[vpc_id]["CidrBlock"] == "10.20.0.0/16", "y's VPC is untouched"
        assert state(tectum, moto, root)["aws_vpc.y"]["id"] == vpc_id
    finally:
        ok(run(tectum, moto, root, "destroy", "-auto-approve"))


def test_rule_and_tag_input_checked_as_aws_takes_it() -> None:
    """A protocol is checked as prepare normalises it ("TCP" needs ports as "tcp" does); an
    empty description is no description (AWS keeps none: no perpetual diff); at most 47 user
    tags (AWS allows 50; tectum adds three of its own)."""
    from tectum.providers.aws.ec2 import IngressRuleType, VpcType

    rule = IngressRuleType()
    assert rule.check({"ip_protocol": "TCP", "cidr_ipv4": "10.0.0.0/8"}), "ports required"
    assert not rule.check({"ip_protocol": "TCP", "from_port": 22, "to_port": 22})
    assert rule.check({"ip_protocol": "ALL", "from_port": 0, "to_port": 0}), "no ports with -1"
    prepared = rule.prepare({"security_group_id": "sg-1", "ip_protocol": "TCP",
                             "cidr_ipv4": "10.0.0.0/8", "from_port": 22, "to_port": 22,
                             "description": ""}, "/")
    assert prepared["ip_protocol"] == "tcp" and prepared["description"] is None
    tags = VpcType.schema.attrs["tags"]
    assert tags.check({f"k{i}": "v" for i in range(47)}) is None
    assert "at most 47 tags" in str(tags.check({f"k{i}": "v" for i in range(48)}))


def test_rollback_makes_a_new_client_token(tectum: Tectum, make_project: MakeProject,
                                           moto: Moto) -> None:
    """``rollback --to N`` declares what version N declared, not the client token N's apply
    minted: AWS takes a RunInstances token once (for at least 24 hours after), so reusing it
    would bring back the terminated object or be refused."""
    stack = '''
from tectum import var
from tectum.aws import Vpc
Vpc("v", cidr_block=var("cidr", str, default="10.40.0.0/16"))
'''
    root = project(make_project, moto, stack)
    ok(run(tectum, moto, root, "apply", "-auto-approve"))
    first = state(tectum, moto, root)["aws_vpc.v"]
    try:
        ok(run(tectum, moto, root, "apply", "-auto-approve", "-var", "cidr=10.41.0.0/16"))
        ok(run(tectum, moto, root, "rollback", "--to", "1", "-auto-approve"))
        back = state(tectum, moto, root)["aws_vpc.v"]
        assert back["cidr_block"] == "10.40.0.0/16"
        assert back["id"] != first["id"], "made anew"
        assert back["client_token"] != first["client_token"], "a token of its own"
    finally:
        ok(run(tectum, moto, root, "destroy", "-auto-approve"))


def test_an_icmp_rule_without_ports_converges_and_a_cidr_needs_its_prefix(
        tectum: Tectum, make_project: MakeProject, moto: Moto) -> None:
    """An ICMP rule without ports is every type and code (-1 to AWS, none as read: no
    perpetual diff); a CIDR without a prefix length is refused at plan, not by AWS at apply."""
    from tectum.providers.aws.ec2 import VpcType

    assert "needs a prefix length" in str(VpcType.schema.attrs["cidr_block"].check("10.0.0.1"))
    stack = '''
from tectum.aws import SecurityGroup, SecurityGroupIngressRule, Vpc
vpc = Vpc("v", cidr_block="10.50.0.0/16")
group = SecurityGroup("g", name="g", vpc_id=vpc.id)
SecurityGroupIngressRule("ping", security_group_id=group.id, ip_protocol="icmp",
                         cidr_ipv4="10.0.0.0/8")
'''
    root = project(make_project, moto, stack)
    try:
        ok(run(tectum, moto, root, "apply", "-auto-approve"))
        assert "No changes" in ok(run(tectum, moto, root, "plan")).output
    finally:
        ok(run(tectum, moto, root, "destroy", "-auto-approve"))


def test_two_rules_for_one_permission_are_refused(
        tectum: Tectum, make_project: MakeProject, moto: Moto) -> None:
    """Two rule resources naming the same permission ("tcp" and "6" are one protocol) would
    manage one AWS rule: refused at plan as an object managed twice (ports are numbers in the
    identity)."""
    stack = '''
from tectum.aws import SecurityGroupIngressRule
for label, proto in (("a", "tcp"), ("b", "6")):
    SecurityGroupIngressRule(label, security_group_id="sg-0123456789abcdef0",
                             ip_protocol=proto, cidr_ipv4="10.0.0.0/8", from_port=22,
                             to_port=22)
'''
    root = project(make_project, moto, stack)
    planned = run(tectum, moto, root, "plan")
    assert planned.returncode == 1, planned.output
    assert "Object managed twice" in planned.output, planned.output


def test_an_object_tectum_made_is_adopted_as_its_own_and_another_workspaces_never(
        tectum: Tectum, make_project: MakeProject, moto: Moto) -> None:
    """A subnet this stack made that state lost (a create whose follow-up call failed; here
    `state rm`) is found by its identity and stays tectum's: destroy deletes it. A security
    group of the same name that another workspace made in the same VPC is never taken: the
    create fails with AWS's own error, and the other workspace's group is untouched."""
    stack = '''
from tectum import var
from tectum.aws import SecurityGroup, Subnet
vpc_id = var("vpc_id", str)
Subnet("s", vpc_id=vpc_id, cidr_block="10.60.1.0/24")
SecurityGroup("g", name="shared-name", vpc_id=vpc_id)
'''
    vpc_id = ec2(moto).create_vpc(CidrBlock="10.60.0.0/16")["Vpc"]["VpcId"]
    root = project(make_project, moto, stack)
    args = ("-var", f"vpc_id={vpc_id}")
    ok(run(tectum, moto, root, "apply", "-auto-approve", *args))
    subnet_id = state(tectum, moto, root)["aws_subnet.s"]["id"]
    ok(run(tectum, moto, root, "state", "rm", "aws_subnet.s"))
    ok(run(tectum, moto, root, "apply", "-auto-approve", *args))
    assert state(tectum, moto, root)["aws_subnet.s"]["id"] == subnet_id, "adopted, not made"

    ok(run(tectum, moto, root, "workspace", "new", "other"))
    other = run(tectum, moto, root, "apply", "-auto-approve", *args)
    assert other.returncode == 1 and "InvalidGroup.Duplicate" in other.output, other.output
    groups = ec2(moto).describe_security_groups(
        Filters=[{"Name": "group-name", "Values": ["shared-name"]}])["SecurityGroups"]
    assert len(groups) == 1
    ok(run(tectum, moto, root, "destroy", "-auto-approve", *args))  # (the other workspace)
    ok(run(tectum, moto, root, "workspace", "select", "default"))
    ok(run(tectum, moto, root, "destroy", "-auto-approve", *args))
    left = ec2(moto).describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])
    assert left["Subnets"] == [], "destroy deleted the adopted subnet: it is tectum's"
    ec2(moto).delete_vpc(VpcId=vpc_id)


def test_moving_a_vpc_leaves_its_subnet_alone(tectum: Tectum, make_project: MakeProject,
                                              moto: Moto) -> None:
    """``moved("aws_vpc.m", Vpc("n"))``: the subnet using the VPC's id still knows it (the
    Resolver follows declared moves), so the plan only moves the VPC — no "+ create" of the
    subnet and no untrue "deleted" drift."""
    before = '''
from tectum.aws import Subnet, Vpc
vpc = Vpc("m", cidr_block="10.70.0.0/16")
Subnet("s", vpc_id=vpc.id, cidr_block="10.70.1.0/24")
'''
    root = project(make_project, moto, before)
    ok(run(tectum, moto, root, "apply", "-auto-approve"))
    try:
        (root / "stack.py").write_text('''
from tectum import moved
from tectum.aws import Subnet, Vpc
vpc = Vpc("n", cidr_block="10.70.0.0/16")
moved("aws_vpc.m", vpc)
Subnet("s", vpc_id=vpc.id, cidr_block="10.70.1.0/24")
''')
        plan = ok(run(tectum, moto, root, "plan"))
        assert "0 to add, 0 to change, 0 to replace, 0 to destroy" in plan.output, plan.output
        assert "aws_subnet.s" not in plan.output and "deleted" not in plan.output, plan.output
    finally:
        ok(run(tectum, moto, root, "destroy", "-auto-approve"))


def test_a_renamed_vpc_is_made_anew_not_taken_for_the_old_one(
        tectum: Tectum, make_project: MakeProject, moto: Moto) -> None:
    """A VPC's identity (its CIDR) is no unique name: renaming Vpc("a") to Vpc("b") plans a
    new VPC and the old one's removal (Terraform's behaviour), not a move; moved() says so."""
    root = project(make_project, moto, '''
from tectum.aws import Vpc
Vpc("a", cidr_block="10.80.0.0/16")
''')
    ok(run(tectum, moto, root, "apply", "-auto-approve"))
    try:
        (root / "stack.py").write_text('''
from tectum.aws import Vpc
Vpc("b", cidr_block="10.80.0.0/16")
''')
        plan = ok(run(tectum, moto, root, "plan"))
        assert "1 to add, 0 to change, 0 to replace, 1 to destroy" in plan.output, plan.output
        assert "moved from" not in plan.output
    finally:
        ok(run(tectum, moto, root, "destroy", "-auto-approve"))


def test_a_replace_killed_after_its_create_is_found_by_its_journaled_token(
        tectum: Tectum, make_project: MakeProject, moto: Moto) -> None:
    """A REPLACE killed between the new object's create and its record: state still holds the
    old (deleted) id, the journal the new object's token. Both a plan (the object is adopted,
    not made twice) and a destroy (it is deleted, not orphaned) find it by that token."""
    from tectum.backends.base import Intent
    from tectum.backends.sqlite import SQLiteBackend

    root = project(make_project, moto, '''
from tectum.aws import Vpc
Vpc("v", cidr_block="10.90.0.0/16")
''')
    ok(run(tectum, moto, root, "apply", "-auto-approve"))
    old = state(tectum, moto, root)["aws_vpc.v"]
    # what the killed replace did: the old VPC deleted, a new one made with a new token
    ec2(moto).delete_vpc(VpcId=old["id"])
    token = "tt-killedreplace0000000001"
    new_id = ec2(moto).create_vpc(CidrBlock="10.90.0.0/16", TagSpecifications=[{
        "ResourceType": "vpc", "Tags": [{"Key": "tectum:token", "Value": token}]}])[
            "Vpc"]["VpcId"]
    backend = SQLiteBackend(str(root / ".tectum" / "state.db"), "default")
    serial = backend.read().serial
    backend.intend(serial, [Intent("aws_vpc.v", "replace", "aws_vpc",
                                   {"id": old["id"], "client_token": token})])
    backend.close()
    plan = ok(run(tectum, moto, root, "plan"))
    assert "to add" not in plan.output or "0 to add" in plan.output, plan.output
    destroyed = ok(run(tectum, moto, root, "destroy", "-auto-approve"))
    vpcs = [v["VpcId"] for v in ec2(moto).describe_vpcs()["Vpcs"]]
    assert new_id not in vpcs, destroyed.output
