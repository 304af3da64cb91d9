"""AWS resources, as declared in a stack: ``from tectum.aws import Vpc, Subnet, Instance``
(Terraform's ``hashicorp/aws`` types and attribute names; see ``docs/aws.md``).

=========================  ==============================================================
Vpc                        aws_vpc: cidr_block, enable_dns_support, enable_dns_hostnames,
                           tags; computed: id, arn
Subnet                     aws_subnet: vpc_id, cidr_block, availability_zone,
                           map_public_ip_on_launch, tags; computed: id, arn
SecurityGroup              aws_security_group: name (default: the label), description,
                           vpc_id, tags; computed: id, arn
SecurityGroupIngressRule   aws_vpc_security_group_ingress_rule: security_group_id,
                           ip_protocol, cidr_ipv4, from_port, to_port, description, tags;
                           computed: security_group_rule_id (= id), arn
SecurityGroupEgressRule    aws_vpc_security_group_egress_rule: the same, for traffic out
Instance                   aws_instance: ami, instance_type, subnet_id,
                           vpc_security_group_ids, user_data,
                           user_data_replace_on_change, tags, timeouts; computed: id, arn,
                           private_ip, state
=========================  ==============================================================

A reference makes the dependency: ``Subnet("a", vpc_id=vpc.id, ...)`` is created after the VPC
and destroyed before it. The provider's settings are ``[providers.aws]`` in ``tectum.toml``
(``region``, ``profile``, ``endpoint_url``); credentials come from boto3's standard chain.
"""

from __future__ import annotations

from tectum.config.declaration import Resource

__all__ = ["Instance", "SecurityGroup", "SecurityGroupEgressRule", "SecurityGroupIngressRule",
           "Subnet", "Vpc"]


class Vpc(Resource):
    """A VPC: ``Vpc("main", cidr_block="10.0.0.0/16", tags={"Name": "main"})``."""

    type_name = "aws_vpc"
    __slots__ = ()


class Subnet(Resource):
    """A subnet: ``Subnet("a", vpc_id=vpc.id, cidr_block="10.0.1.0/24",
    availability_zone="eu-west-1a")``."""

    type_name = "aws_subnet"
    __slots__ = ()


class SecurityGroup(Resource):
    """A security group: ``SecurityGroup("web", vpc_id=vpc.id)`` (name "web"). Its rules are
    separate resources; the allow-all egress rule AWS adds is removed (Terraform's way)."""

    type_name = "aws_security_group"
    label_attr = "name"
    __slots__ = ()


class SecurityGroupIngressRule(Resource):
    """An ingress rule: ``SecurityGroupIngressRule("ssh", security_group_id=sg.id,
    ip_protocol="tcp", from_port=22, to_port=22, cidr_ipv4="10.0.0.0/8")``."""

    type_name = "aws_vpc_security_group_ingress_rule"
    __slots__ = ()


class SecurityGroupEgressRule(Resource):
    """An egress rule: ``SecurityGroupEgressRule("all", security_group_id=sg.id,
    ip_protocol="-1", cidr_ipv4="0.0.0.0/0")``."""

    type_name = "aws_vpc_security_group_egress_rule"
    __slots__ = ()


class Instance(Resource):
    """An EC2 instance: ``Instance("web", ami="ami-...", instance_type="t3.micro",
    subnet_id=subnet.id, vpc_security_group_ids=[sg.id], timeouts={"create": "15m"})``."""

    type_name = "aws_instance"
    __slots__ = ()


try:  # the storage and identity types (S3, IAM, DynamoDB), when installed
    from tectum.providers.aws.storage_decl import *  # noqa: F403
    from tectum.providers.aws.storage_decl import __all__ as _storage_all

    __all__ += list(_storage_all)
except ImportError as _exc:  # (only while that module does not exist yet)
    if _exc.name != "tectum.providers.aws.storage_decl":
        raise
