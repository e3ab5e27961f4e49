"""Completeness of network isolation on the local stack: the instance's addresses denied in the
network ACLs that see its packets, connection-tracking timeouts at their minimums, no interface
ever left in the flush group, and option ``network: "sg"``.

The scenarios run in a VPC of their own (``seed.seed_vpc``): a private subnet behind a NAT gateway
in a public subnet, each subnet with its own network ACL, IPv6 in the private subnet; two more
subnets share the VPC's default ACL. So the ACLs here hold only this module's rules (another
scenario's instances cannot fill their quota), and the layout tells the ACLs apart: the NAT
gateway's subnet ACL and the default ACL must get the deny rules, the instance's own subnet ACL
must not (a rule there could never match: ACLs are evaluated where traffic enters or leaves a
subnet, inbound rules on the source, outbound on the destination).

Every scenario asserts the emulator's end state (and the manifest), not the order of the states:
the state machine is being reordered to contain first.
"""

from __future__ import annotations

import ipaddress
import json
import uuid

import pytest

from local_aws import seed as seed_module

ACL_ACTION = "deny instance address in network ACL"
MINIMUM_TIMEOUTS = {"TcpEstablishedTimeout": 60, "UdpStreamTimeout": 60, "UdpTimeout": 30}


def incident_id() -> str:
    return f"IR-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def net(stack) -> seed_module.SeedContext:
    return seed_module.seed_vpc(stack.context, name=f"net-{uuid.uuid4().hex[:6]}")


@pytest.fixture
def faults(stack):
    yield lambda **rule: stack.control("/faults", rule)
    stack.control("/faults", method="DELETE")


def private_instance(stack, net, **kwargs) -> seed_module.SeededInstance:
    """An instance in the private subnet: two interfaces, IPv6 on the primary one, no SSM."""
    kwargs.setdefault("name", f"private-{uuid.uuid4().hex[:6]}")
    return seed_module.seed_instance(
        net, control_url=stack.control_url, private=True, ipv6=True, ssm=False, extra_volumes=0, **kwargs
    )


def interfaces(stack, instance_id: str) -> list[dict]:
    return stack.ec2.describe_network_interfaces(
        Filters=[{"Name": "attachment.instance-id", "Values": [instance_id]}]
    )["NetworkInterfaces"]


def addresses(stack, instance_id: str) -> set[str]:
    """The instance's private IPv4 (/32) and IPv6 (/128) addresses, as ACL rules name them."""
    out = set()
    for eni in interfaces(stack, instance_id):
        out |= {f"{a['PrivateIpAddress']}/32" for a in eni["PrivateIpAddresses"]}
        out |= {f"{ipaddress.ip_address(a['Ipv6Address'])}/128" for a in eni.get("Ipv6Addresses", [])}
    return out


def acls(stack, vpc_id: str) -> dict[str, dict]:
    """Network ACLs of the VPC by ID: ``subnets`` and ``entries``."""
    found = stack.ec2.describe_network_acls(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["NetworkAcls"]
    return {a["NetworkAclId"]: {"subnets": {x["SubnetId"] for x in a["Associations"]}, "entries": a["Entries"]} for a in found}


def acl_of(stack, vpc_id: str, subnet_id: str) -> str:
    return next(i for i, a in acls(stack, vpc_id).items() if subnet_id in a["subnets"])


def cidr_of(entry: dict) -> str:
    return entry.get("CidrBlock") or entry.get("Ipv6CidrBlock")


def denies_for(entries: list[dict], cidrs: set[str]) -> list[dict]:
    return [e for e in entries if e["RuleAction"] == "deny" and cidr_of(e) in cidrs]


def assert_denied_in(entries: list[dict], cidrs: set[str], where: str) -> None:
    """Every address has an all-protocol deny rule in both directions, before every allow rule that
    matches it (rules are evaluated lowest number first)."""
    for cidr in cidrs:
        network = ipaddress.ip_network(cidr)
        for egress in (False, True):
            rules = [e for e in denies_for(entries, {cidr}) if e["Egress"] == egress and e["Protocol"] == "-1"]
            assert len(rules) == 1, (where, cidr, egress, entries)
            allows = [
                e["RuleNumber"]
                for e in entries
                if e["Egress"] == egress
                and e["RuleAction"] == "allow"
                and ipaddress.ip_network(cidr_of(e)).version == network.version
                and network.subnet_of(ipaddress.ip_network(cidr_of(e)))
            ]
            assert 1 <= rules[0]["RuleNumber"] < min(allows, default=32767), (where, cidr, egress, rules, allows)


def manifest(stack, incident: str, instance_id: str) -> dict:
    body, _ = stack.get_object(f"{incident}/{instance_id}/manifest.json")
    return json.loads(body)


def isolation_and_flush(stack, vpc_id: str) -> tuple[str, str]:
    groups = {
        g["GroupName"]: g["GroupId"]
        for g in stack.ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["SecurityGroups"]
    }
    return groups["cordon-isolation"], groups["cordon-flush"]


def test_a_private_instance_behind_a_nat_gateway_is_denied_where_its_packets_cross(stack, net):
    inst = private_instance(stack, net)
    iid = inst.instance_id
    cidrs = addresses(stack, iid)
    assert len(cidrs) == 3 and any(c.endswith("/128") for c in cidrs), cidrs
    incident = incident_id()

    desc, _ = stack.run_execution({"instance_id": iid, "incident_id": incident}, name=incident, timeout=180)

    state = acls(stack, net.vpc_id)
    nat_subnet_acl = acl_of(stack, net.vpc_id, net.public_subnet_id)
    own_subnet_acl = acl_of(stack, net.vpc_id, net.private_subnet_id)
    shared_acl = acl_of(stack, net.vpc_id, net.subnet_ids[0])
    assert len({nat_subnet_acl, own_subnet_acl, shared_acl}) == 3
    # The NAT gateway's subnet: the instance's packets enter it with its address as source and the
    # replies leave it towards that address. The default ACL guards two other subnets.
    assert_denied_in(state[nat_subnet_acl]["entries"], cidrs, "NAT gateway subnet ACL")
    assert_denied_in(state[shared_acl]["entries"], cidrs, "default ACL")
    # The instance's own subnet ACL sees its packets only with the remote address: no rule.
    assert denies_for(state[own_subnet_acl]["entries"], cidrs) == [], state[own_subnet_acl]

    # Recorded for release: every rule, with ACL, number, direction and CIDR, as the emulator has it.
    recorded = {
        (a["target"], a["after"]["rule_number"], a["after"]["egress"], a["after"]["cidr"])
        for a in manifest(stack, incident, iid)["actions"]
        if a["action"] == ACL_ACTION
    }
    present = {
        (acl, e["RuleNumber"], e["Egress"], cidr_of(e))
        for acl in (nat_subnet_acl, shared_acl)
        for e in denies_for(state[acl]["entries"], cidrs)
    }
    assert recorded == present and len(present) == 12, (recorded, present, desc.get("status"))
    gaps = manifest(stack, incident, iid)["gaps"]
    assert any(g["what"] == f"network ACL: traffic within {net.private_subnet_id}" for g in gaps), gaps

    # Connection tracking: every interface at the minimums, read back from the emulator.
    isolation, flush = isolation_and_flush(stack, net.vpc_id)
    for eni in interfaces(stack, iid):
        assert eni.get("ConnectionTrackingConfiguration") == MINIMUM_TIMEOUTS, eni
        assert [g["GroupId"] for g in eni["Groups"]] == [isolation], eni


def test_a_rerun_of_the_same_incident_adds_no_rule(stack, net):
    inst = private_instance(stack, net)
    incident = incident_id()
    stack.run_execution({"instance_id": inst.instance_id, "incident_id": incident}, name=incident, timeout=180)
    before = acls(stack, net.vpc_id)
    cidrs = addresses(stack, inst.instance_id)
    assert any(denies_for(a["entries"], cidrs) for a in before.values()), "the first run added rules"
    since = stack.last_request_seq()

    stack.run_execution(
        {"instance_id": inst.instance_id, "incident_id": incident}, name=f"{incident}-again", timeout=180
    )

    assert [r["action"] for r in stack.requests(service="ec2", action="CreateNetworkAclEntry", since=since)] == []
    assert acls(stack, net.vpc_id) == before


def test_option_sg_adds_no_acl_rule_and_says_so(stack, net):
    inst = private_instance(stack, net)
    incident = incident_id()
    since = stack.last_request_seq()
    stack.run_execution(
        {"instance_id": inst.instance_id, "incident_id": incident, "options": {"network": "sg"}},
        name=incident,
        timeout=180,
    )
    cidrs = addresses(stack, inst.instance_id)
    for acl, state in acls(stack, net.vpc_id).items():
        assert denies_for(state["entries"], cidrs) == [], acl
    assert stack.requests(service="ec2", action="CreateNetworkAclEntry", since=since) == []
    gaps = manifest(stack, incident, inst.instance_id)["gaps"]
    assert any(g["what"] == "network ACL deny rules" and '"sg"' in g["reason"] for g in gaps), gaps
    # Still isolated, and its timeouts lowered.
    isolation, _ = isolation_and_flush(stack, net.vpc_id)
    for eni in interfaces(stack, inst.instance_id):
        assert [g["GroupId"] for g in eni["Groups"]] == [isolation]
        assert eni.get("ConnectionTrackingConfiguration") == MINIMUM_TIMEOUTS


def test_a_fault_on_the_second_interfaces_move_leaves_no_interface_in_the_flush_group(stack, net, faults):
    inst = private_instance(stack, net)
    second = inst.network_interface_ids[1]
    # The second interface's first call (into the flush group) goes through; its move out of the
    # flush group into isolation is refused (not retryable, so the SDK does not retry it).
    faults(
        service="ec2",
        action="ModifyNetworkInterfaceAttribute",
        instance_id=second,
        skip=1,
        count=1,
        code="UnauthorizedOperation",
        status=403,
    )
    incident = incident_id()
    since = stack.last_request_seq()
    stack.run_execution({"instance_id": inst.instance_id, "incident_id": incident}, name=incident, timeout=180)

    fired = [r for r in stack.control("/faults")["rules"] if r["instance_id"] == second]
    assert fired and fired[0]["fired"] == 1, fired
    isolation, flush = isolation_and_flush(stack, net.vpc_id)
    moves = [
        r for r in stack.requests(service="ec2", action="ModifyNetworkInterfaceAttribute", since=since)
        if second in json.dumps(r["params"])
    ]
    assert any(flush in json.dumps(r["params"]) and r["status"] == 200 for r in moves), moves
    for eni in interfaces(stack, inst.instance_id):
        groups = [g["GroupId"] for g in eni["Groups"]]
        assert flush not in groups, eni["NetworkInterfaceId"]
        assert groups == [isolation], eni["NetworkInterfaceId"]
