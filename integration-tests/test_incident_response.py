"""Incident response end to end: the real state machine and step binaries on the local stack.

Each scenario seeds its own instance and asserts the emulator's end state (instance attributes,
groups, profile, snapshots, Auto Scaling and target groups), the evidence bucket and the SNS
message — never logs.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
import uuid

import pytest

from conftest import sha256
from local_aws import seed as seed_module

MISSING = "i-0000000000000dead"
MUTATING_EC2 = (
    "Create",
    "Modify",
    "Associate",
    "Disassociate",
    "Replace",
    "Revoke",
    "Authorize",
    "Delete",
    "Attach",
    "Detach",
    "Terminate",
    "Stop",
    "Run",
)


def incident_id() -> str:
    return f"IR-{uuid.uuid4().hex[:10]}"


def failed_event(events: list[dict]) -> dict:
    return next(e for e in events if e["type"] == "ExecutionFailed")["executionFailedEventDetails"]


def states_entered(events: list[dict]) -> list[str]:
    return [e["stateEnteredEventDetails"]["name"] for e in events if e["type"].endswith("StateEntered")]


def notifications_for(stack, instance_id: str) -> list[dict]:
    return [
        m
        for m in stack.notifications()
        if m.get("MessageAttributes", {}).get("instance_id", {}).get("Value") == instance_id
    ]


def attribute(stack, instance_id: str, name: str):
    out = stack.ec2.describe_instance_attribute(InstanceId=instance_id, Attribute=name)
    key = name[0].upper() + name[1:]
    return out[key]["Value"]


def seed_exposed(stack, **kwargs):
    """A fresh instance whose protections start from the opposite of what Cordon sets (shutdown
    behaviour `terminate`, termination protection off, DeleteOnTermination on for every volume, an
    instance profile associated, in the Auto Scaling and target groups asked for), checked from
    the emulator, so that every post-condition ``assert_contained`` reads back is a change."""
    kwargs.setdefault("shutdown_behavior", "terminate")
    kwargs.setdefault("delete_on_termination", True)
    inst = stack.seed_instance(**kwargs)
    iid = inst.instance_id
    assert attribute(stack, iid, "instanceInitiatedShutdownBehavior") == "terminate"
    assert attribute(stack, iid, "disableApiTermination") is False
    desc = stack.ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    assert desc["BlockDeviceMappings"] and all(b["Ebs"]["DeleteOnTermination"] for b in desc["BlockDeviceMappings"])
    assocs = stack.ec2.describe_iam_instance_profile_associations(Filters=[{"Name": "instance-id", "Values": [iid]}])
    assert [a for a in assocs["IamInstanceProfileAssociations"] if a["State"] in ("associated", "associating")]
    if kwargs.get("auto_scaling_group"):
        asg = stack.client("autoscaling").describe_auto_scaling_instances(InstanceIds=[iid])["AutoScalingInstances"]
        assert [a["LifecycleState"] for a in asg] == ["InService"]
    if kwargs.get("target_group"):
        health = stack.client("elbv2").describe_target_health(TargetGroupArn=stack.context.target_group_arn)
        assert iid in [t["Target"]["Id"] for t in health["TargetHealthDescriptions"]]
    return inst


def isolation_group_id(stack, vpc_id: str) -> str:
    groups = stack.ec2.describe_security_groups(
        Filters=[{"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "group-name", "Values": ["cordon-isolation"]}]
    )["SecurityGroups"]
    assert len(groups) == 1, groups
    assert groups[0]["IpPermissions"] == [] and groups[0]["IpPermissionsEgress"] == [], groups[0]
    return groups[0]["GroupId"]


def incident_snapshots(stack, incident: str, instance_id: str) -> list[dict]:
    return stack.ec2.describe_snapshots(
        OwnerIds=["self"],
        Filters=[
            {"Name": "tag:cordon:incident-id", "Values": [incident]},
            {"Name": "tag:cordon:instance-id", "Values": [instance_id]},
        ],
    )["Snapshots"]


def mutating_ec2_calls(stack, since: int) -> list[str]:
    """Mutating EC2 calls that AWS accepted (a refused one, e.g. an ACL rule beyond the quota that a
    rerun tries again, changes nothing)."""
    return [
        r["action"]
        for r in stack.requests(service="ec2", since=since)
        if r["action"].startswith(MUTATING_EC2) and r.get("status", 0) < 400
    ]


def assert_contained(stack, inst, incident: str, ssm_collected: bool | None) -> dict:
    """Every post-condition of a completed response; returns the manifest. ``ssm_collected``:
    True, the collection's output is there; False, there is none; None, either (hashes still checked)."""
    iid = inst.instance_id
    # Preserved: every volume snapshotted and tagged with its volume.
    snaps = incident_snapshots(stack, incident, iid)
    assert sorted(s["VolumeId"] for s in snaps) == sorted(inst.volume_ids)
    for s in snaps:
        tags = {t["Key"]: t["Value"] for t in s.get("Tags", [])}
        assert tags.get("cordon:volume-id") == s["VolumeId"], tags
    # Protected.
    assert attribute(stack, iid, "disableApiTermination") is True
    assert attribute(stack, iid, "instanceInitiatedShutdownBehavior") == "stop"
    desc = stack.ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    for bdm in desc["BlockDeviceMappings"]:
        assert bdm["Ebs"]["DeleteOnTermination"] is False, bdm
    # No credentials: no profile association, and the deny policy on the role.
    assocs = stack.ec2.describe_iam_instance_profile_associations(
        Filters=[{"Name": "instance-id", "Values": [iid]}]
    )["IamInstanceProfileAssociations"]
    assert [a for a in assocs if a["State"] in ("associated", "associating")] == []
    # One Cordon policy per role lists every instance under response (detach-profile's revoke.rs).
    policy = stack.iam.get_role_policy(RoleName="app-server", PolicyName="cordon-revoke")["PolicyDocument"]
    if isinstance(policy, str):
        policy = json.loads(policy)
    [deny] = [s for s in policy["Statement"] if s.get("Sid") == "CordonRevokeInstanceCredentials"]
    assert deny["Effect"] == "Deny" and deny["Action"] == "*"
    assert f"arn:aws:ec2:us-east-1:123456789012:instance/{iid}" in deny["Condition"]["StringEquals"]["ec2:SourceInstanceARN"]
    # Isolated: every interface only in the isolation group, which has no rules.
    iso = isolation_group_id(stack, desc["VpcId"])
    enis = stack.ec2.describe_network_interfaces(Filters=[{"Name": "attachment.instance-id", "Values": [iid]}])
    assert len(enis["NetworkInterfaces"]) == len(inst.network_interface_ids)
    for eni in enis["NetworkInterfaces"]:
        assert [g["GroupId"] for g in eni["Groups"]] == [iso], eni["NetworkInterfaceId"]
    tags = {t["Key"]: t["Value"] for t in desc.get("Tags", [])}
    assert tags.get("cordon:status") == "quarantined" and tags.get("cordon:incident-id") == incident
    # The instance metadata endpoint is off: no profile associated later can hand out credentials.
    assert desc["MetadataOptions"]["HttpEndpoint"] == "disabled", desc["MetadataOptions"]
    # Out of the Auto Scaling group and the target group. A deregistered target is listed as
    # `draining` (Target.DeregistrationInProgress) for the group's deregistration delay, then not at
    # all (https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_TargetHealth.html).
    asg = stack.client("autoscaling").describe_auto_scaling_instances(InstanceIds=[iid])["AutoScalingInstances"]
    assert asg == []
    elb = stack.client("elbv2")
    for tg in elb.describe_target_groups()["TargetGroups"]:
        targets = elb.describe_target_health(TargetGroupArn=tg["TargetGroupArn"])["TargetHealthDescriptions"]
        for t in targets:
            if t["Target"]["Id"] == iid:
                assert (t["TargetHealth"]["State"], t["TargetHealth"].get("Reason")) == (
                    "draining",
                    "Target.DeregistrationInProgress",
                ), t
    # Evidence, with hashes that match the bytes.
    prefix = f"{incident}/{iid}/"
    keys = {o["Key"] for o in stack.objects_under(prefix)}
    for name in ("metadata.json", "pre-incident-state.json", "console-screenshot.jpg", "console-output.txt", "manifest.json"):
        assert prefix + name in keys, sorted(keys)
    manifest_bytes, _ = stack.get_object(prefix + "manifest.json")
    manifest = json.loads(manifest_bytes)
    listed = {a["key"]: a for a in manifest["artifacts"]}
    for key, artifact in listed.items():
        body, obj = stack.get_object(key)
        assert sha256(body) == artifact["sha256"], key
        assert len(body) == artifact["size"], key
    assert {prefix + n for n in ("metadata.json", "pre-incident-state.json", "console-screenshot.jpg")} <= set(listed)
    ssm_outputs = [k for k in listed if k.startswith(prefix + "ssm/")]
    if ssm_collected:
        # The script's own upload, through the URL presigned for this key (ssm-collect).
        assert prefix + "ssm/collection.txt.gz" in ssm_outputs, ssm_outputs
        text = gzip.decompress(stack.get_object(prefix + "ssm/collection.txt.gz")[0])
        assert b"===== section: " in text and b"cordon-collection: complete" in text
    elif ssm_collected is False:
        assert ssm_outputs == []
    # The collection path is closed and the agent's channel exemption gone, on every path.
    assert not [s for s in policy["Statement"] if s.get("Sid") == "CordonRevokeExceptCollectionChannel"
                and f"instance/{iid}" in json.dumps(s)], policy
    assert manifest["incident_id"] == incident and manifest["instance_id"] == iid
    assert all({"before", "after", "at", "action", "target"} <= set(a) for a in manifest["actions"])
    return manifest


def test_happy_path_preserves_contains_and_tells(stack):
    inst = seed_exposed(stack, name="happy", ssm=True, auto_scaling_group=True, target_group=True)
    incident = incident_id()
    stack.notifications()  # drain
    desc, events = stack.run_execution(
        {"instance_id": inst.instance_id, "incident_id": incident, "reason": "GuardDuty: Backdoor:EC2/C&CActivity.B", "requested_by": "alice"},
        name=incident,
        timeout=180,
    )
    assert desc["status"] == "SUCCEEDED", (desc, failed_event(events) if desc["status"] == "FAILED" else None)
    visited = states_entered(events)
    for state in ("Open collection path", "Attach forensic profile", "Send collection", "Wait for collection",
                  "Check collection", "Close collection path", "Remove forensic profile", "Quarantine network"):
        assert state in visited, visited
    output = json.loads(desc["output"])
    assert output["outcome"] == "contained"
    assert sorted(output["snapshot_ids"]) == sorted(s["SnapshotId"] for s in incident_snapshots(stack, incident, inst.instance_id))

    manifest = assert_contained(stack, inst, incident, ssm_collected=True)
    assert manifest["requested_by"] == "alice"

    messages = notifications_for(stack, inst.instance_id)
    assert len(messages) == 1, messages
    m = messages[0]
    assert m["Subject"] == f"[Cordon] {inst.instance_id} CONTAINED"
    attrs = {k: v["Value"] for k, v in m["MessageAttributes"].items()}
    assert attrs == {"status": "contained", "incident_id": incident, "instance_id": inst.instance_id, "severity": "high"}
    body = m["Message"]
    for needle in ("enable termination protection", "isolate network interface", "revoke issued credentials",
                   "detach from Auto Scaling group", "deregister from target group", f"s3://{stack.bucket}/{incident}/{inst.instance_id}/",
                   "Requested by: alice", desc["executionArn"]):
        assert needle in body, (needle, body)
    for snap in output["snapshot_ids"]:
        assert snap in body


def test_running_the_same_incident_again_changes_nothing(stack):
    inst = seed_exposed(stack, name="twice", ssm=False, target_group=True)
    incident = incident_id()
    desc, _ = stack.run_execution({"instance_id": inst.instance_id, "incident_id": incident}, name=incident)
    assert desc["status"] == "SUCCEEDED"
    before_objects = {o["Key"]: o["ETag"] for o in stack.objects_under(f"{incident}/")}
    snaps = incident_snapshots(stack, incident, inst.instance_id)
    since = stack.last_request_seq()

    again = f"{incident}-again"
    desc, _ = stack.run_execution({"instance_id": inst.instance_id, "incident_id": incident}, name=again)

    assert desc["status"] == "SUCCEEDED"
    assert mutating_ec2_calls(stack, since) == [], "a rerun must not change the instance"
    assert incident_snapshots(stack, incident, inst.instance_id) == snaps
    after_objects = {o["Key"]: o["ETag"] for o in stack.objects_under(f"{incident}/")}
    assert {k: after_objects[k] for k in before_objects} == before_objects, "evidence is never replaced"
    new = set(after_objects) - set(before_objects)
    prefix = f"{incident}/{inst.instance_id}/"
    assert new == {prefix + f"manifest-{again}.json", prefix + f"notifications/{again}.json"}, new
    second = json.loads(stack.get_object(prefix + f"manifest-{again}.json")[0])
    assert all(a["outcome"] == "unchanged" for a in second["actions"]), [a for a in second["actions"] if a["outcome"] != "unchanged"]
    assert_contained(stack, inst, incident, ssm_collected=False)


def test_an_instance_without_ssm_is_contained_and_collection_is_reported_skipped(stack):
    inst = seed_exposed(stack, name="no-ssm", ssm=False)
    incident = incident_id()
    stack.notifications()
    desc, events = stack.run_execution({"instance_id": inst.instance_id, "incident_id": incident}, name=incident)
    assert desc["status"] == "SUCCEEDED"
    assert "Attach forensic profile" not in states_entered(events)
    assert_contained(stack, inst, incident, ssm_collected=False)
    [m] = notifications_for(stack, inst.instance_id)
    assert "OS-level collection (ssm-collect): the instance is not managed by Systems Manager" in m["Message"]
    assert any("OS-level collection" in g for g in json.loads(desc["output"])["gaps"])


def test_a_nonexistent_instance_is_rejected_and_nothing_changes(stack):
    since = stack.last_request_seq()
    stack.notifications()
    desc, events = stack.run_execution({"instance_id": MISSING}, name=f"missing-{uuid.uuid4().hex[:8]}")
    assert desc["status"] == "FAILED"
    assert failed_event(events)["error"] == "InstanceNotFound"
    assert mutating_ec2_calls(stack, since) == []
    assert [r for r in stack.requests(service="s3", since=since) if r["method"] in ("PUT", "POST", "DELETE")] == []
    [m] = notifications_for(stack, MISSING)
    assert m["Subject"] == f"[Cordon] {MISSING} REQUEST REJECTED"
    assert "InstanceNotFound" in m["Message"]


def test_a_failed_collection_removes_the_forensic_profile_and_still_contains(stack):
    inst = seed_exposed(stack, name="collect-fails", ssm=True)
    stack.control("/ssm/behaviour", {"instance_id": inst.instance_id, "mode": "fail"})
    incident = incident_id()
    stack.notifications()
    desc, events = stack.run_execution({"instance_id": inst.instance_id, "incident_id": incident}, name=incident)
    assert desc["status"] == "SUCCEEDED", desc
    assert "Close collection path" in states_entered(events)
    assert_contained(stack, inst, incident, ssm_collected=None)
    [m] = notifications_for(stack, inst.instance_id)
    assert "the collection command ended with status Failed" in m["Message"]
    assert "remove forensic instance profile" in m["Message"]


@pytest.mark.slow
def test_a_collection_that_never_finishes_is_cancelled_at_the_budget_before_the_profile_goes(stack):
    """The smallest budget (300 s) in real time: the command is cancelled at the deadline
    (budget + 30 s) and has stopped before the forensic profile is removed."""
    # A VPC of its own: the shared VPC's network ACLs fill up over the suite, and a full ACL leaves
    # no room for the collection path (the collection would then be a gap, not cancelled).
    ctx = seed_module.seed_vpc(stack.context, name=f"hangs-{uuid.uuid4().hex[:6]}", ipv6=False)
    inst = seed_module.seed_instance(ctx, control_url=stack.control_url, name="collect-hangs", ssm=True,
                                     extra_volumes=0, second_interface=False, shutdown_behavior="terminate",
                                     delete_on_termination=True)
    stack.control("/ssm/behaviour", {"instance_id": inst.instance_id, "mode": "hang"})
    incident = incident_id()
    stack.notifications()
    since = stack.last_request_seq()
    desc, events = stack.run_execution(
        {"instance_id": inst.instance_id, "incident_id": incident, "options": {"collection_budget_seconds": 300}},
        name=incident,
        timeout=480,
    )
    assert desc["status"] == "SUCCEEDED", desc
    visited = states_entered(events)
    # Several checks (their number here depends on the local Wait compression, wait_scale.py; the
    # growing interval itself is a unit test of cordon_common::collection).
    assert visited.count("Check collection") >= 2, visited.count("Check collection")
    calls = [r for r in stack.requests(since=since) if r["action"] in ("CancelCommand", "DisassociateIamInstanceProfile")]
    cancel = [i for i, r in enumerate(calls) if r["action"] == "CancelCommand"]
    assert cancel, "the command was cancelled"
    assert cancel[0] < max(i for i, r in enumerate(calls) if r["action"] == "DisassociateIamInstanceProfile")
    [command] = [c for c in stack.control("/ssm/commands", method="GET")["commands"] if inst.instance_id in c["invocations"]]
    assert command["invocations"][inst.instance_id]["status"] == "Cancelled", command
    assert_contained(stack, inst, incident, ssm_collected=None)
    [m] = notifications_for(stack, inst.instance_id)
    assert "did not finish within its budget of 300 s and was cancelled" in m["Message"]


def test_throttling_is_retried_to_the_same_end_state(stack):
    inst = seed_exposed(stack, name="throttled", ssm=False, auto_scaling_group=True)
    # More failures than the SDK's own six attempts (cordon_common::aws), so the state machine's
    # Retry is exercised too.
    stack.control("/faults", {"service": "ec2", "action": "ModifyInstanceAttribute", "code": "RequestLimitExceeded",
                              "status": 503, "count": 8, "instance_id": inst.instance_id})
    incident = incident_id()
    try:
        desc, events = stack.run_execution({"instance_id": inst.instance_id, "incident_id": incident}, name=incident, timeout=180)
    finally:
        stack.control("/faults", method="DELETE")
    assert desc["status"] == "SUCCEEDED", desc
    failures = [e for e in events if e["type"] == "TaskFailed" and e["taskFailedEventDetails"]["error"] == "Transient"]
    assert failures, "the step failed as Transient at least once and was retried"
    assert_contained(stack, inst, incident, ssm_collected=False)


def wait_for(stack, arn: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        desc = stack.sfn.describe_execution(executionArn=arn)
        if desc["status"] != "RUNNING":
            return desc
        assert time.monotonic() < deadline, f"{arn} still RUNNING after {timeout}s"
        time.sleep(0.25)


def messages_until(stack, instance_id: str, subject_suffix: str, timeout: float = 30) -> list[dict]:
    """The notifications for the instance, waiting until one ends with ``subject_suffix`` (the
    failure announcement arrives asynchronously: status-change event, rule, notify)."""
    got, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        got += notifications_for(stack, instance_id)
        if any(m["Subject"].endswith(subject_suffix) for m in got):
            time.sleep(1)  # and nothing more arrives
            return got + notifications_for(stack, instance_id)
    return got


def test_a_failed_quarantine_fails_at_its_own_state_after_every_other_measure_and_redrives(stack):
    inst = seed_exposed(stack, name="quarantine-fails", ssm=False)
    # The fault matches requests that mention the ID: ModifyNetworkInterfaceAttribute names the interface.
    stack.control("/faults", {"service": "ec2", "action": "ModifyNetworkInterfaceAttribute", "code": "UnauthorizedOperation",
                              "status": 403, "count": -1, "instance_id": inst.network_interface_ids[0]})
    incident = incident_id()
    stack.notifications()
    try:
        desc, events = stack.run_execution({"instance_id": inst.instance_id, "incident_id": incident}, name=incident)
    finally:
        stack.control("/faults", method="DELETE")
    assert desc["status"] == "FAILED"
    assert failed_event(events)["error"] == "AccessDenied"
    # The execution fails at the step's own Task (what a redrive reruns), never in a Fail state.
    entered = states_entered(events)
    assert entered[-1] == "Quarantine network: final attempt", entered
    assert not [e for e in events if e["type"] == "FailStateEntered"]
    # Every other containment measure was applied all the same (read back from the emulator).
    assert attribute(stack, inst.instance_id, "disableApiTermination") is True
    assert attribute(stack, inst.instance_id, "instanceInitiatedShutdownBehavior") == "stop"
    assert [a for a in stack.ec2.describe_iam_instance_profile_associations(
        Filters=[{"Name": "instance-id", "Values": [inst.instance_id]}])["IamInstanceProfileAssociations"]
        if a["State"] in ("associated", "associating")] == []
    snaps = incident_snapshots(stack, incident, inst.instance_id)
    assert sorted(s["VolumeId"] for s in snaps) == sorted(inst.volume_ids)
    # Announced once from outside the execution, naming the state that failed and how to redrive.
    [m] = [m for m in messages_until(stack, inst.instance_id, "CONTAINMENT FAILED")]
    assert m["Subject"] == f"[Cordon] {inst.instance_id} CONTAINMENT FAILED"
    assert m["MessageAttributes"]["severity"]["Value"] == "critical"
    for needle in ("Quarantine network: final attempt", "AccessDenied", "enable termination protection",
                   f"aws stepfunctions redrive-execution --execution-arn {desc['executionArn']}"):
        assert needle in m["Message"], (needle, m["Message"])
    objects = {o["Key"]: o["ETag"] for o in stack.objects_under(f"{incident}/")}

    # The cause is fixed (the fault removed): a redrive resumes at the failed state.
    stack.sfn.redrive_execution(executionArn=desc["executionArn"])
    desc = wait_for(stack, desc["executionArn"])
    assert desc["status"] == "SUCCEEDED", desc
    assert desc.get("redriveCount") == 1
    history = stack.sfn.get_execution_history(executionArn=desc["executionArn"], maxResults=1000)["events"]
    after_redrive = [e for e in sorted(history, key=lambda e: e["id"])
                     if e["id"] > next(x["id"] for x in history if x["type"] == "ExecutionRedriven")]
    rerun = [e["stateEnteredEventDetails"]["name"] for e in after_redrive if e["type"].endswith("StateEntered")]
    assert rerun[0] == "Quarantine network: final attempt" and "Contain" not in rerun, rerun
    assert incident_snapshots(stack, incident, inst.instance_id) == snaps, "no duplicate snapshots"
    after = {o["Key"]: o["ETag"] for o in stack.objects_under(f"{incident}/")}
    assert {k: after[k] for k in objects} == objects, "no evidence object replaced"
    vpc = stack.ec2.describe_instances(InstanceIds=[inst.instance_id])["Reservations"][0]["Instances"][0]["VpcId"]
    isolation_group_id(stack, vpc)  # exactly one isolation group in the VPC
    assert_contained(stack, inst, incident, ssm_collected=False)
    contained = [m for m in messages_until(stack, inst.instance_id, "CONTAINED") if m["Subject"].endswith("CONTAINED")]
    assert len(contained) == 1, contained


def test_containment_comes_before_anything_slow(stack):
    """The network is cut and the credentials revoked before the console capture and the SSM
    collection start."""
    inst = seed_exposed(stack, name="order", ssm=True)
    incident = incident_id()
    since = stack.last_request_seq()
    desc, events = stack.run_execution({"instance_id": inst.instance_id, "incident_id": incident}, name=incident, timeout=180)
    assert desc["status"] == "SUCCEEDED", desc
    entered = states_entered(events)
    assert entered.index("Contain") < entered.index("Capture console") < entered.index("Attach forensic profile")
    reqs = stack.requests(since=since)
    seq = lambda action: [r["seq"] for r in reqs if r["action"] == action]  # noqa: E731
    moves, disassociate = seq("ModifyNetworkInterfaceAttribute"), seq("DisassociateIamInstanceProfile")
    screenshot, send = seq("GetConsoleScreenshot"), seq("SendCommand")
    assert moves and disassociate and screenshot and send
    first_move = min(moves)
    assert first_move < min(screenshot) and min(disassociate) < min(screenshot) and first_move < min(send)
    # Every interface went through the flush group into the isolation group before anything slow;
    # the later moves are the collection path's (into the collection group and back).
    contain_moves = [m for m in moves if m < min(screenshot)]
    assert len(contain_moves) >= 2 * len(inst.network_interface_ids), (contain_moves, moves)
    assert entered.index("Capture console") < entered.index("Open collection path") < entered.index("Send collection")


def test_two_instances_at_once_are_both_contained_with_evidence_kept_apart(stack):
    a = seed_exposed(stack, name="fleet-a", ssm=False)
    b = seed_exposed(stack, name="fleet-b", ssm=False, subnet_index=1)
    results = {}

    def run(inst, incident):
        results[inst.instance_id] = stack.run_execution({"instance_id": inst.instance_id, "incident_id": incident}, name=incident)

    incidents = {a.instance_id: incident_id(), b.instance_id: incident_id()}
    threads = [threading.Thread(target=run, args=(i, incidents[i.instance_id])) for i in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    for inst in (a, b):
        desc, _ = results[inst.instance_id]
        assert desc["status"] == "SUCCEEDED", desc
        manifest = assert_contained(stack, inst, incidents[inst.instance_id], ssm_collected=False)
        assert all(art["key"].startswith(f"{incidents[inst.instance_id]}/{inst.instance_id}/") for art in manifest["artifacts"])


@pytest.mark.parametrize("bad", [{"instance_id": "i-xyz"}, {"instance_id": "i-0123456789abcdef0", "color": "red"}])
def test_bad_input_is_rejected_with_a_notification_and_writes_nothing(stack, bad):
    since = stack.last_request_seq()
    stack.notifications()
    desc, events = stack.run_execution(bad, name=f"bad-{uuid.uuid4().hex[:8]}")
    assert desc["status"] == "FAILED"
    assert failed_event(events)["error"] == "InvalidInput"
    assert mutating_ec2_calls(stack, since) == []
    rejected = [m for m in stack.notifications() if m["Subject"].endswith("REQUEST REJECTED")]
    assert len(rejected) == 1


def test_an_isolation_group_opened_since_an_earlier_response_is_emptied_again(stack):
    """The VPC's isolation group exists already (an earlier response made it) and someone has since
    added an ingress rule to it: quarantine revokes that rule before any interface is moved in.
    Locally this passes whatever the role allows; the action-coverage check at the end of the
    session is what holds the quarantine role to ec2:RevokeSecurityGroupIngress."""
    inst = seed_exposed(stack, name="iso-opened", ssm=False)
    vpc = stack.ec2.describe_instances(InstanceIds=[inst.instance_id])["Reservations"][0]["Instances"][0]["VpcId"]
    groups = stack.ec2.describe_security_groups(
        Filters=[{"Name": "vpc-id", "Values": [vpc]}, {"Name": "group-name", "Values": ["cordon-isolation"]}]
    )["SecurityGroups"]
    if groups:
        iso = groups[0]["GroupId"]
    else:  # made as quarantine makes it: named, tagged in the creating call
        iso = stack.ec2.create_security_group(
            GroupName="cordon-isolation", Description="Cordon isolation: no rules; quarantined instances only", VpcId=vpc,
            TagSpecifications=[{"ResourceType": "security-group", "Tags": [{"Key": "cordon:role", "Value": "isolation"}]}],
        )["GroupId"]
    stack.ec2.authorize_security_group_ingress(
        GroupId=iso, IpPermissions=[{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]
    )
    assert stack.ec2.describe_security_groups(GroupIds=[iso])["SecurityGroups"][0]["IpPermissions"], "starts open"
    since = stack.last_request_seq()
    incident = incident_id()

    desc, _ = stack.run_execution({"instance_id": inst.instance_id, "incident_id": incident}, name=incident)

    assert desc["status"] == "SUCCEEDED", desc
    assert_contained(stack, inst, incident, ssm_collected=False)  # the isolation group has no rules again
    revokes = stack.requests(service="ec2", action="RevokeSecurityGroupIngress", since=since)
    assert [r["principal"] for r in revokes] == ["function:cordon-quarantine"], revokes
