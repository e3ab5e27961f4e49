"""The containment table end to end: after a response on the local stack, manifest.json carries a
``containment`` row for every path, computed from the instance's real network as the emulator holds
it, and the SNS message shows the table. The rows are checked against the emulator's state (the
NAT gateway's subnet, its network ACL's entries), not against the step's own words.

Each scenario gets a VPC of its own (``seed.seed_vpc``: two subnets, a NAT gateway in a public
subnet with an ACL of its own, a private subnet routed to it), so the network ACL rules one
response adds cannot change another scenario's table.
"""

from __future__ import annotations

import ipaddress
import json
import uuid

from local_aws import seed as seed_module

# Every path the table must always say something about (rows are never dropped, only marked
# "not applicable"), by the start of their `path`.
PATHS = [
    "new inbound connections",
    "new outbound connections",
    "existing TCP and UDP flows not tracked automatically",
    "existing flows through NAT gateways",
    "existing flows through Network Load Balancers",
    "existing flows through Gateway Load Balancers",
    "existing flows through interface VPC endpoints",
    "existing flows through transit gateway attachments",
    "existing IPv6 flows through egress-only internet gateways",
    "existing flows through AWS Network Firewall endpoints",
    "existing flows through Global Accelerator",
    "existing flows with Lambda functions' interfaces",
    "existing flows through DynamoDB gateway endpoints",
    "existing ICMP flows",
    "existing flows of other IP protocols",
    "DNS queries through the Route 53 Resolver",
    "credentials from the instance metadata service",
    "credentials already issued to the instance's role",
    "sessions obtained with those credentials",
    "credentials of the forensic profile",
]
STATUSES = {"cut", "bounded", "still possible", "not applicable"}


def row(rows: list[dict], path: str) -> dict:
    found = [r for r in rows if r["path"].startswith(path)]
    assert len(found) == 1, (path, rows)
    return found[0]


def private_instance(stack, name: str):
    """A VPC of the scenario's own and an instance in its private subnet (behind the NAT gateway)."""
    ctx = seed_module.seed_vpc(stack.context, name=f"{name}-vpc", ipv6=False)
    inst = seed_module.seed_instance(
        ctx, name=name, control_url=stack.control_url, private=True, second_interface=False
    )
    return ctx, inst


def respond(stack, instance_id: str, options: dict) -> tuple[str, dict, dict, str]:
    incident = f"IR-{uuid.uuid4().hex[:10]}"
    desc, _ = stack.run_execution(
        {"instance_id": instance_id, "incident_id": incident, "options": {"collect": False, **options}},
        name=incident,
    )
    assert desc["status"] == "SUCCEEDED", desc
    manifest = json.loads(stack.get_object(f"{incident}/{instance_id}/manifest.json")[0])
    messages = [
        m
        for m in stack.notifications()
        if m.get("MessageAttributes", {}).get("incident_id", {}).get("Value") == incident
    ]
    assert len(messages) == 1, messages
    return incident, desc, manifest, messages[0]["Message"]


def assert_every_path(rows: list[dict]) -> None:
    for path in PATHS:
        r = row(rows, path)
        assert r["status"] in STATUSES, r
        assert r["done"], r
        assert r["source"].startswith("https://docs.aws.amazon.com/"), r
        if r["status"] == "bounded":
            assert r["bound"], r


def addresses(stack, instance_id: str) -> list[str]:
    inst = stack.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    return [p["PrivateIpAddress"] for n in inst["NetworkInterfaces"] for p in n["PrivateIpAddresses"]]


def deny_entries(stack, subnet_id: str) -> tuple[str, list[dict]]:
    acl = stack.ec2.describe_network_acls(Filters=[{"Name": "association.subnet-id", "Values": [subnet_id]}])[
        "NetworkAcls"
    ][0]
    return acl["NetworkAclId"], [e for e in acl["Entries"] if e["RuleAction"] == "deny" and e["RuleNumber"] < 32767]


def test_behind_a_nat_gateway_the_acl_rules_cut_the_nat_path_and_the_message_says_so(stack):
    ctx, inst = private_instance(stack, f"ct-nat-{uuid.uuid4().hex[:6]}")
    iid = inst.instance_id
    _, _, manifest, message = respond(stack, iid, {"network": "sg+nacl"})
    rows = manifest["containment"]
    assert_every_path(rows)

    # The emulator: deny rules for each of the instance's addresses, both directions, in the ACL of
    # the NAT gateway's subnet. The table must name that ACL and that subnet.
    nat_acl, denies = deny_entries(stack, ctx.public_subnet_id)
    for address in addresses(stack, iid):
        for egress in (False, True):
            assert any(
                e["Egress"] is egress and ipaddress.ip_address(address) in ipaddress.ip_network(e["CidrBlock"])
                for e in denies
                if "CidrBlock" in e
            ), (address, egress, denies)
    nat = row(rows, "existing flows through NAT gateways")
    assert nat["status"] == "cut", nat
    assert ctx.nat_gateway_id in nat["done"] and f"{nat_acl} ({ctx.public_subnet_id})" in nat["done"], nat
    assert nat["source"] == "https://docs.aws.amazon.com/vpc/latest/userguide/vpc-network-acls.html"

    # Facts of this network: no IPv6 address, no load balancer, endpoint or transit gateway.
    assert row(rows, "existing IPv6 flows through egress-only internet gateways")["status"] == "not applicable"
    assert "no IPv6 address" in row(rows, "existing IPv6 flows through egress-only internet gateways")["done"]
    for path in ("existing flows through Network Load Balancers", "existing flows through transit gateway attachments"):
        assert row(rows, path)["status"] == "not applicable", row(rows, path)
    # What no measure of Cordon reaches stays possible, and says so.
    assert row(rows, "DNS queries through the Route 53 Resolver")["status"] == "still possible"
    assert row(rows, "existing ICMP flows")["status"] == "still possible"
    for path in ("new inbound connections", "new outbound connections"):
        assert row(rows, path)["status"] == "cut"
        assert "configuration verified" in row(rows, path)["done"], row(rows, path)
    # Credentials: metadata endpoint disabled (read back by the emulator), issued ones revoked.
    options = stack.ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["MetadataOptions"]
    assert options["HttpEndpoint"] == "disabled", options
    imds = row(rows, "credentials from the instance metadata service")
    assert imds["status"] == "cut", imds
    assert row(rows, "credentials already issued to the instance's role")["status"] == "cut"

    # The message shows the table, and promises nothing it does not say.
    assert "What containment guarantees, path by path" in message, message
    assert "- CUT: existing flows through NAT gateways" in message, message
    assert "- STILL POSSIBLE: DNS queries through the Route 53 Resolver" in message, message
    assert "Not applicable here: " in message
    assert "(verified)" not in message


def test_with_security_groups_only_the_nat_path_is_not_claimed_cut(stack):
    ctx, inst = private_instance(stack, f"ct-sg-{uuid.uuid4().hex[:6]}")
    _, _, manifest, message = respond(stack, inst.instance_id, {"network": "sg"})
    rows = manifest["containment"]
    assert_every_path(rows)
    _, denies = deny_entries(stack, ctx.public_subnet_id)
    assert denies == [], denies
    nat = row(rows, "existing flows through NAT gateways")
    # Tracked automatically: security groups cannot end it; the lowered idle timeouts bound it.
    assert nat["status"] == "bounded", nat
    assert "idle for 60 s (TCP established)" in nat["bound"], nat
    assert 'options.network is "sg"' in nat["done"], nat
    assert "- BOUNDED: existing flows through NAT gateways" in message, message
