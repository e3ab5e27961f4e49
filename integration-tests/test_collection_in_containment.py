"""Collection inside containment (issue 11), on the local stack.

The network and the credentials are cut first; the SSM collection then has to reach the agent
through the collection path (the VPC's endpoints) and the agent's channel exemption, and both are
closed again afterwards. The SSM shim models the agent (``local_aws/ssm_agent.py``): it keeps the
credentials it had (the compromised role's) until a refresh, each channel call is evaluated
against that role's live policies, and its TCP 443 path against the security groups and network
ACLs. So a collection here succeeds only if Cordon opened exactly what the agent needs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import uuid

import pytest

from local_aws import seed as seed_module
from test_incident_response import assert_contained, notifications_for, states_entered

COLLECTION_GROUP = "cordon-collection"
CHANNEL_SID = "CordonRevokeExceptCollectionChannel"


def incident_id() -> str:
    return f"IR-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def vpc(stack) -> seed_module.SeedContext:
    """A VPC of this module's own, with the SSM and S3 endpoints: the shared VPC's network ACLs fill
    up over the suite (20 rules per direction), and a full ACL leaves no room for the collection
    path's allow rules (the collection is then a gap, as it would be on AWS)."""
    return seed_module.seed_vpc(stack.context, name=f"col-{uuid.uuid4().hex[:6]}", ipv6=False)


def seed_here(stack, ctx, **kwargs) -> seed_module.SeededInstance:
    """``seed_exposed``'s instance (protections opposite to Cordon's), in ``ctx``'s VPC, one
    interface and one volume (few ACL rules per instance)."""
    kwargs.setdefault("shutdown_behavior", "terminate")
    kwargs.setdefault("delete_on_termination", True)
    kwargs.setdefault("extra_volumes", 0)
    kwargs.setdefault("second_interface", False)
    return seed_module.seed_instance(ctx, control_url=stack.control_url, **kwargs)


def channel_open_for(stack, iid: str) -> bool:
    return channel_open_for_role(stack, "app-server", iid)


def channel_open_for_role(stack, role: str, iid: str) -> bool:
    try:
        doc = stack.iam.get_role_policy(RoleName=role, PolicyName="cordon-revoke")["PolicyDocument"]
    except stack.iam.exceptions.NoSuchEntityException:
        return False
    doc = json.loads(doc) if isinstance(doc, str) else doc
    return any(
        s.get("Sid") == CHANNEL_SID and f"instance/{iid}" in json.dumps(s["Condition"])
        for s in doc["Statement"]
    )


def invocation(stack, iid: str) -> dict | None:
    for c in stack.control("/ssm/commands", method="GET")["commands"]:
        if iid in c["invocations"]:
            return c["invocations"][iid] | {"command_id": c["command_id"]}
    return None


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def wait_execution(stack, arn: str, timeout: float) -> tuple[dict, list]:
    deadline = time.monotonic() + timeout
    while True:
        desc = stack.sfn.describe_execution(executionArn=arn)
        if desc["status"] != "RUNNING":
            events = stack.sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
            return desc, events
        assert time.monotonic() < deadline, "execution still running"
        time.sleep(0.5)


def allow_rules(stack, vpc_id: str, iid: str) -> set[tuple]:
    """The TCP allow rules for the instance's addresses in the VPC's network ACLs (the collection
    path's), as (ACL, egress, CIDR, from port, to port), read from the emulator."""
    enis = stack.ec2.describe_network_interfaces(Filters=[{"Name": "attachment.instance-id", "Values": [iid]}])
    cidrs = {f"{a['PrivateIpAddress']}/32" for e in enis["NetworkInterfaces"] for a in e["PrivateIpAddresses"]}
    acls = stack.ec2.describe_network_acls(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["NetworkAcls"]
    return {
        (a["NetworkAclId"], e["Egress"], e.get("CidrBlock"), e["PortRange"]["From"], e["PortRange"]["To"])
        for a in acls for e in a["Entries"]
        if e["RuleAction"] == "allow" and e["Protocol"] == "6" and e.get("CidrBlock") in cidrs
    }


def groups_of(stack, iid: str) -> dict[str, list[str]]:
    enis = stack.ec2.describe_network_interfaces(Filters=[{"Name": "attachment.instance-id", "Values": [iid]}])
    return {e["NetworkInterfaceId"]: sorted(g["GroupId"] for g in e["Groups"]) for e in enis["NetworkInterfaces"]}


def test_the_collection_reaches_the_agent_through_the_endpoints_and_everything_is_closed_after(stack, vpc):
    inst = seed_here(stack, vpc, name="col-endpoints", ssm=True)
    iid = inst.instance_id
    assert allow_rules(stack, vpc.vpc_id, iid) == set()
    # The command stays running until this test cancels it, so the path can be looked at meanwhile.
    stack.control("/ssm/behaviour", {"instance_id": iid, "mode": "hang"})
    incident = incident_id()
    arn = stack.sfn.start_execution(
        stateMachineArn=stack.state_machine_arn, name=incident,
        input=json.dumps({"instance_id": iid, "incident_id": incident}),
    )["executionArn"]
    try:
        running = wait_for(lambda: (i := invocation(stack, iid)) and i["status"] == "InProgress" and i, 90,
                           "the agent to take the command")
        # While it runs: every interface in the collection group, which lets out TCP 443 to the
        # endpoints' security group and the S3 prefix list, and nothing in.
        groups = groups_of(stack, iid)
        assert len({tuple(g) for g in groups.values()}) == 1, groups
        [collection] = next(iter(groups.values()))
        sg = stack.ec2.describe_security_groups(GroupIds=[collection])["SecurityGroups"][0]
        assert sg["GroupName"] == COLLECTION_GROUP, sg["GroupName"]
        assert sg["IpPermissions"] == [], sg["IpPermissions"]
        egress = sg["IpPermissionsEgress"]
        assert all((p["IpProtocol"], p.get("FromPort"), p.get("ToPort")) == ("tcp", 443, 443) for p in egress), egress
        assert not any(p.get("IpRanges") or p.get("Ipv6Ranges") for p in egress), egress
        assert {g["GroupId"] for p in egress for g in p.get("UserIdGroupPairs", [])} == {vpc.endpoint_security_group_id}
        [s3_list] = stack.ec2.describe_prefix_lists(
            Filters=[{"Name": "prefix-list-name", "Values": ["com.amazonaws.us-east-1.s3"]}]
        )["PrefixLists"]
        assert {pl["PrefixListId"] for p in egress for pl in p.get("PrefixListIds", [])} == {s3_list["PrefixListId"]}
        # The endpoints' subnet ACL lets exactly TCP 443 in from the instance and the answers out.
        during = allow_rules(stack, vpc.vpc_id, iid)
        assert {(r[1], r[3], r[4]) for r in during} == {(False, 443, 443), (True, 1024, 65535)}, during
        # The agent took it with the compromised role's credentials, through the exemption.
        assert channel_open_for(stack, iid)
        agent = stack.control(f"/ssm/agent?instance_id={iid}", method="GET")
        assert agent["identity"]["role_arn"].endswith(":role/app-server"), agent["identity"]
    finally:
        stack.control("/ssm/behaviour", {"instance_id": iid}, method="DELETE")
    stack.ssm.cancel_command(CommandId=running["command_id"], InstanceIds=[iid])
    desc, events = wait_execution(stack, arn, 180)
    assert desc["status"] == "SUCCEEDED", desc
    visited = states_entered(events)
    assert visited.index("Open collection path") < visited.index("Send collection") < visited.index("Close collection path")
    assert visited.index("Close collection path") < visited.index("Remove forensic profile")
    # After: the isolation group again, the exemption closed, the forensic sessions revoked.
    assert_contained(stack, inst, incident, ssm_collected=None)
    assert not channel_open_for(stack, iid)
    assert allow_rules(stack, vpc.vpc_id, iid) == set(), "the collection path's ACL rules are gone"
    forensic_role = stack.iam.get_instance_profile(
        InstanceProfileName=stack.seed["deployment"]["forensic_profile_name"]
    )["InstanceProfile"]["Roles"][0]["RoleName"]
    doc = stack.iam.get_role_policy(RoleName=forensic_role, PolicyName=f"cordon-forensic-{iid}")["PolicyDocument"]
    doc = json.loads(doc) if isinstance(doc, str) else doc
    [deny] = doc["Statement"]
    assert deny["Effect"] == "Deny" and deny["Action"] == "*"
    assert deny["Condition"]["StringEquals"]["ec2:SourceInstanceARN"].endswith(f":instance/{iid}")
    assert deny["Condition"]["DateLessThan"]["aws:TokenIssueTime"] > desc["startDate"].isoformat()[:19]


def test_a_full_collection_uploads_its_archive_through_the_presigned_url(stack, vpc):
    inst = seed_here(stack, vpc, name="col-full", ssm=True)
    incident = incident_id()
    since = stack.last_request_seq()
    desc, events = stack.run_execution({"instance_id": inst.instance_id, "incident_id": incident}, name=incident, timeout=240)
    assert desc["status"] == "SUCCEEDED", desc
    manifest = assert_contained(stack, inst, incident, ssm_collected=True)
    key = f"{incident}/{inst.instance_id}/ssm/collection.txt.gz"
    assert any(a["key"] == key for a in manifest["artifacts"])
    # Written through the URL the ssm-collect function presigned, never with the host's credentials.
    puts = [r for r in stack.requests(service="s3", action="PutObject", since=since) if r.get("auth") == "presigned"]
    assert puts and {r["principal"] for r in puts} == {"function:cordon-ssm-collect"}, puts
    forensic = [r for r in stack.requests(since=since) if (r.get("principal") or "").startswith("role:")
                and r["service"] == "s3"]
    assert forensic == [], forensic


@pytest.fixture(scope="module")
def bare(stack) -> seed_module.SeedContext:
    """A VPC without the SSM and S3 endpoints."""
    return seed_module.seed_vpc(stack.context, name=f"bare-{uuid.uuid4().hex[:6]}", ipv6=False, ssm_endpoints=False)


def test_without_endpoints_the_default_records_a_gap_and_containment_is_complete(stack, bare):
    inst = seed_module.seed_instance(bare, control_url=stack.control_url, name="col-bare", ssm=True, private=True, extra_volumes=0)
    incident = incident_id()
    stack.notifications()
    desc, events = stack.run_execution({"instance_id": inst.instance_id, "incident_id": incident}, name=incident)
    assert desc["status"] == "SUCCEEDED", desc
    visited = states_entered(events)
    assert "Open collection path" in visited and "Send collection" not in visited, visited
    # The revocation opened the agent's channel (the agent was online), and it was closed again.
    manifest = json.loads(stack.get_object(f"{incident}/{inst.instance_id}/manifest.json")[0])
    assert any(a["action"] == "close SSM agent channel" for a in manifest["actions"]), manifest["actions"]
    assert not channel_open_for(stack, inst.instance_id)
    assert allow_rules(stack, bare.vpc_id, inst.instance_id) == set()
    [m] = notifications_for(stack, inst.instance_id)
    for service in ("ssm", "ssmmessages", "ec2messages", "s3"):
        assert service in m["Message"]
    gaps = json.loads(desc["output"])["gaps"]
    assert any("OS-level collection" in g for g in gaps), gaps
    # Every interface stayed in the isolation group.
    groups = groups_of(stack, inst.instance_id)
    names = {g["GroupName"] for g in stack.ec2.describe_security_groups(
        GroupIds=sorted({g for gs in groups.values() for g in gs}))["SecurityGroups"]}
    assert names == {"cordon-isolation"}, names


def test_collect_first_is_refused_before_anything_changes(stack, bare):
    inst = seed_module.seed_instance(bare, control_url=stack.control_url, name="col-first", ssm=True, private=True, extra_volumes=0)
    since = stack.last_request_seq()
    desc, events = stack.run_execution(
        {"instance_id": inst.instance_id, "options": {"collection_network": "before-containment"}},
        name=incident_id(),
    )
    assert desc["status"] == "FAILED"
    assert "InvalidInput" in json.dumps(events[-1], default=str)
    assert [r for r in stack.requests(service="ec2", since=since) if not r["action"].startswith("Describe")] == []


@pytest.mark.slow
def test_with_role_wide_revocation_the_command_is_never_delivered_and_that_is_a_gap(stack, vpc):
    """revoke_sessions = role denies every older session of the role, the agent's channel included:
    the agent never takes the command; at the deadline (30 s before SSM's own end of the smallest
    budget, 300 s) Cordon cancels it and records why, and the response still ends contained."""
    # A role of its own: a role-wide revocation denies every instance of the role, and the shared
    # app-server role must keep working for the other scenarios.
    name = f"col-denied-{uuid.uuid4().hex[:6]}"
    stack.iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
    }))
    stack.iam.attach_role_policy(RoleName=name, PolicyArn="arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore")
    profile = stack.iam.create_instance_profile(InstanceProfileName=name)["InstanceProfile"]
    stack.iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
    own = dataclasses.replace(vpc, instance_profile_arn=profile["Arn"], instance_profile_name=name)
    inst = seed_here(stack, own, name="col-denied", ssm=True)
    incident = incident_id()
    stack.notifications()
    desc, events = stack.run_execution(
        {"instance_id": inst.instance_id, "incident_id": incident,
         "options": {"revoke_sessions": "role", "collection_budget_seconds": 300}},
        name=incident, timeout=480,
    )
    assert desc["status"] == "SUCCEEDED", desc
    inv = invocation(stack, inst.instance_id) or {}
    assert inv.get("status") == "Cancelled", inv
    # Never delivered because IAM denied the agent's channel (the role-wide cut-off), not the network.
    assert "explicit deny" in inv.get("delivery", "") and "cordon-revoke" in inv["delivery"], inv
    doc = stack.iam.get_role_policy(RoleName=name, PolicyName="cordon-revoke")["PolicyDocument"]
    doc = json.loads(doc) if isinstance(doc, str) else doc
    assert any(s.get("Sid") == "CordonRevokeOlderSessions" for s in doc["Statement"]), doc
    [m] = notifications_for(stack, inst.instance_id)
    assert "the SSM agent never took the command (Pending after" in m["Message"], m["Message"]
    desc = stack.ec2.describe_instances(InstanceIds=[inst.instance_id])["Reservations"][0]["Instances"][0]
    assert desc["MetadataOptions"]["HttpEndpoint"] == "disabled"


def test_memory_is_captured_first_uploaded_and_hashed_in_the_manifest(stack, vpc, tmp_path):
    """A fake ``avml`` on the host's PATH and a host with 1 GiB of memory (the SSM shim's
    ``extra_path`` and ``memory_kib``): the image is uploaded through its presigned URL and its
    SHA-256 is in the manifest, checked against what the script printed."""
    inst = seed_here(stack, vpc, name="col-memory", ssm=True)
    iid = inst.instance_id
    tools = tmp_path / "bin"
    tools.mkdir()
    avml = tools / "avml"
    avml.write_text('#!/bin/sh\n{ printf "LiME fake image\\n"; head -c 262144 /dev/urandom; } > "$1"\n')
    avml.chmod(0o755)
    stack.control("/ssm/agent", {"instance_id": iid, "extra_path": [str(tools)], "memory_kib": 1048576})
    incident = incident_id()
    since = stack.last_request_seq()
    desc, events = stack.run_execution(
        {"instance_id": iid, "incident_id": incident, "options": {"memory": True}}, name=incident, timeout=240
    )
    assert desc["status"] == "SUCCEEDED", desc
    manifest = assert_contained(stack, inst, incident, ssm_collected=True)
    key = f"{incident}/{iid}/ssm/memory.lime"
    [artifact] = [a for a in manifest["artifacts"] if a["key"] == key]
    body, _ = stack.get_object(key)
    assert body.startswith(b"LiME fake image\n") and len(body) == artifact["size"]
    assert hashlib.sha256(body).hexdigest() == artifact["sha256"]
    assert not [g for g in manifest["gaps"] if g["what"] == "memory image"], manifest["gaps"]
    # Memory came first: its upload arrived before the collection's.
    order = [r for r in stack.requests(service="s3", action="PutObject", since=since) if r.get("auth") == "presigned"]
    assert len(order) == 2 and "memory.lime" in json.dumps(order[0]), order


def test_without_a_capture_tool_memory_is_a_gap_and_no_image_is_listed(stack, vpc):
    inst = seed_here(stack, vpc, name="col-no-avml", ssm=True)
    stack.control("/ssm/agent", {"instance_id": inst.instance_id, "memory_kib": 1048576})
    incident = incident_id()
    desc, _ = stack.run_execution(
        {"instance_id": inst.instance_id, "incident_id": incident, "options": {"memory": True}}, name=incident, timeout=240
    )
    assert desc["status"] == "SUCCEEDED", desc
    manifest = assert_contained(stack, inst, incident, ssm_collected=True)
    memory_gaps = [g for g in manifest["gaps"] if g["what"] == "memory image"]
    assert memory_gaps and "avml" in memory_gaps[0]["reason"], manifest["gaps"]
    assert not [a for a in manifest["artifacts"] if a["key"].endswith("/ssm/memory.lime")]


def test_internet_443_is_an_explicit_opt_in_that_collects_through_the_nat_gateway(stack, bare):
    """No endpoints, but the responder opted into TCP 443 to anywhere for the collection: the
    agent reaches Systems Manager and S3 through the NAT gateway (past Cordon's ACL deny rules in
    the NAT subnet, thanks to the allow rules numbered before them), and the opening is recorded."""
    inst = seed_module.seed_instance(bare, control_url=stack.control_url, name="col-internet", ssm=True,
                                     private=True, extra_volumes=0)
    incident = incident_id()
    desc, events = stack.run_execution(
        {"instance_id": inst.instance_id, "incident_id": incident, "options": {"collection_network": "internet-443"}},
        name=incident, timeout=240,
    )
    assert desc["status"] == "SUCCEEDED", desc
    assert "Send collection" in states_entered(events)
    manifest = json.loads(stack.get_object(f"{incident}/{inst.instance_id}/manifest.json")[0])
    assert any(a["key"].endswith("/ssm/collection.txt.gz") for a in manifest["artifacts"]), manifest["gaps"]
    assert any(g["what"] == "containment during collection" for g in manifest["gaps"]), manifest["gaps"]
    names = {g["GroupName"] for g in stack.ec2.describe_security_groups(
        GroupIds=sorted({g for gs in groups_of(stack, inst.instance_id).values() for g in gs}))["SecurityGroups"]}
    assert names == {"cordon-isolation"}, names
