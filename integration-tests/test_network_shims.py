"""The network shims' wire contract (``local_aws.network_shims``), through boto3: what EC2
documents for connection-tracking timeouts, network ACL entries, the ACLs' default rules and a NAT
gateway's interface, which moto 5.2.5 does not model."""

from __future__ import annotations

import ipaddress
import uuid

import pytest
from botocore.exceptions import ClientError

from local_aws import seed as seed_module


@pytest.fixture(scope="module")
def net(stack) -> seed_module.SeedContext:
    return seed_module.seed_vpc(stack.context, name=f"shim-{uuid.uuid4().hex[:6]}")


def code_of(call) -> str:
    with pytest.raises(ClientError) as info:
        call()
    return info.value.response["Error"]["Code"]


def launch(stack, net, instance_type: str = "t3.small") -> dict:
    ec2 = stack.ec2
    inst = ec2.run_instances(
        ImageId=net.ami_id, InstanceType=instance_type, MinCount=1, MaxCount=1, SubnetId=net.private_subnet_id
    )["Instances"][0]
    return inst


def test_connection_tracking_timeouts_are_kept_and_reported(stack, net):
    inst = launch(stack, net)
    eni = inst["NetworkInterfaces"][0]["NetworkInterfaceId"]
    stack.ec2.modify_network_interface_attribute(
        NetworkInterfaceId=eni, ConnectionTrackingSpecification={"TcpEstablishedTimeout": 120}
    )
    stack.ec2.modify_network_interface_attribute(NetworkInterfaceId=eni, ConnectionTrackingSpecification={"UdpTimeout": 45})
    got = stack.ec2.describe_network_interfaces(NetworkInterfaceIds=[eni])["NetworkInterfaces"][0]
    assert got["ConnectionTrackingConfiguration"] == {"TcpEstablishedTimeout": 120, "UdpTimeout": 45}
    described = stack.ec2.describe_instances(InstanceIds=[inst["InstanceId"]])["Reservations"][0]["Instances"][0]
    assert described["NetworkInterfaces"][0]["ConnectionTrackingConfiguration"] == {
        "TcpEstablishedTimeout": 120,
        "UdpTimeout": 45,
    }


@pytest.mark.parametrize(
    "spec",
    [
        {"TcpEstablishedTimeout": 59},
        {"TcpEstablishedTimeout": 432001},
        {"UdpStreamTimeout": 59},
        {"UdpStreamTimeout": 181},
        {"UdpTimeout": 29},
        {"UdpTimeout": 61},
    ],
)
def test_connection_tracking_timeouts_outside_the_documented_ranges_are_refused(stack, net, spec):
    eni = launch(stack, net)["NetworkInterfaces"][0]["NetworkInterfaceId"]
    call = lambda: stack.ec2.modify_network_interface_attribute(  # noqa: E731
        NetworkInterfaceId=eni, ConnectionTrackingSpecification=spec
    )
    assert code_of(call) == "InvalidParameterValue"


def test_connection_tracking_is_one_attribute_at_a_time_and_nitro_only(stack, net):
    eni = launch(stack, net)["NetworkInterfaces"][0]["NetworkInterfaceId"]
    both = lambda: stack.ec2.modify_network_interface_attribute(  # noqa: E731
        NetworkInterfaceId=eni, Groups=[net.security_group_id], ConnectionTrackingSpecification={"UdpTimeout": 30}
    )
    assert code_of(both) == "InvalidParameterCombination"
    xen = launch(stack, net, "t2.micro")["NetworkInterfaces"][0]["NetworkInterfaceId"]
    on_xen = lambda: stack.ec2.modify_network_interface_attribute(  # noqa: E731
        NetworkInterfaceId=xen, ConnectionTrackingSpecification={"UdpTimeout": 30}
    )
    assert code_of(on_xen) == "UnsupportedOperation"
    missing = lambda: stack.ec2.modify_network_interface_attribute(  # noqa: E731
        NetworkInterfaceId="eni-0000000000000dead", ConnectionTrackingSpecification={"UdpTimeout": 30}
    )
    assert code_of(missing) == "InvalidNetworkInterfaceID.NotFound"


def acl(stack, subnet_id: str) -> str:
    found = stack.ec2.describe_network_acls(Filters=[{"Name": "association.subnet-id", "Values": [subnet_id]}])
    return found["NetworkAcls"][0]["NetworkAclId"]


def entries(stack, acl_id: str) -> list[dict]:
    return stack.ec2.describe_network_acls(NetworkAclIds=[acl_id])["NetworkAcls"][0]["Entries"]


def test_every_acl_has_the_default_rules_and_ipv6_ones_in_an_ipv6_vpc(stack, net):
    default = stack.ec2.describe_network_acls(
        Filters=[{"Name": "vpc-id", "Values": [net.vpc_id]}, {"Name": "default", "Values": ["true"]}]
    )["NetworkAcls"][0]
    rules = {(e["Egress"], e["RuleNumber"], e["RuleAction"], e.get("CidrBlock") or e.get("Ipv6CidrBlock")) for e in default["Entries"]}
    for egress in (False, True):
        assert {(egress, 100, "allow", "0.0.0.0/0"), (egress, 101, "allow", "::/0"),
                (egress, 32767, "deny", "0.0.0.0/0"), (egress, 32768, "deny", "::/0")} <= rules
    custom = stack.ec2.create_network_acl(VpcId=net.vpc_id)["NetworkAcl"]["NetworkAclId"]
    assert {(e["Egress"], e["RuleNumber"], e["RuleAction"]) for e in entries(stack, custom)} == {
        (False, 32767, "deny"), (True, 32767, "deny"), (False, 32768, "deny"), (True, 32768, "deny"),
    }


def test_network_acl_entries_as_ec2_documents_them(stack, net):
    acl_id = stack.ec2.create_network_acl(VpcId=net.vpc_id)["NetworkAcl"]["NetworkAclId"]

    def create(number, cidr=None, egress=False, v6=None):
        kwargs = {"Ipv6CidrBlock": v6} if v6 else {"CidrBlock": cidr}
        return lambda: stack.ec2.create_network_acl_entry(
            NetworkAclId=acl_id, RuleNumber=number, Protocol="-1", RuleAction="deny", Egress=egress, **kwargs
        )

    assert code_of(create(0, "10.9.0.1/32")) == "InvalidParameterValue"
    assert code_of(create(32767, "10.9.0.1/32")) == "InvalidParameterValue"
    create(5, "10.9.0.7/24")()
    assert [e["CidrBlock"] for e in entries(stack, acl_id) if e["RuleNumber"] == 5] == ["10.9.0.0/24"]
    assert code_of(create(5, "10.9.0.8/32")) == "NetworkAclEntryAlreadyExists"
    assert code_of(create(5, v6="2600::1/128")) == "NetworkAclEntryAlreadyExists", "numbers are per direction"
    delete_missing = lambda: stack.ec2.delete_network_acl_entry(  # noqa: E731
        NetworkAclId=acl_id, RuleNumber=77, Egress=False
    )
    assert code_of(delete_missing) == "InvalidNetworkAclEntry.NotFound"
    # 20 IPv4 ingress rules, the default deny included: 18 more fit.
    for n in range(6, 24):
        create(n, f"10.9.1.{n}/32")()
    assert code_of(create(24, "10.9.1.24/32")) == "NetworkAclEntryLimitExceeded"
    create(24, v6="2600::24/128")()  # IPv6 rules have a quota of their own
    create(24, "10.9.1.24/32", egress=True)()  # and so does each direction
    try:
        stack.control("/ec2/network-acl-quota", {"rules_per_acl": 40})
        create(25, "10.9.1.25/32")()
    finally:
        stack.control("/ec2/network-acl-quota", {"rules_per_acl": 20})


def test_a_nat_gateways_interface_is_in_its_subnet_and_managed_by_aws(stack, net):
    nat = stack.ec2.describe_nat_gateways(NatGatewayIds=[net.nat_gateway_id])["NatGateways"][0]
    address = nat["NatGatewayAddresses"][0]
    eni = stack.ec2.describe_network_interfaces(NetworkInterfaceIds=[address["NetworkInterfaceId"]])[
        "NetworkInterfaces"
    ][0]
    subnet = stack.ec2.describe_subnets(SubnetIds=[net.public_subnet_id])["Subnets"][0]
    assert ipaddress.ip_address(eni["PrivateIpAddress"]) in ipaddress.ip_network(subnet["CidrBlock"])
    assert address["PrivateIp"] == eni["PrivateIpAddress"]
    assert (eni["SubnetId"], eni["InterfaceType"], eni["RequesterManaged"]) == (net.public_subnet_id, "natGateway", True)
