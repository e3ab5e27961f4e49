"""Containment of credentials and of what AWS refuses for an instance's kind (issue 10, items 2-4).

- A Spot Instance: EC2 refuses termination protection for it; the response records that as a gap
  and still isolates the network and revokes the credentials.
- An instance held in ``Terminating:Wait``: Auto Scaling refuses to detach it; a gap, the rest done.
- A role whose inline-policy quota (10,240 characters, ``iam_shims``) is nearly full: the
  revocation becomes role-wide and is read back from the emulator; with no room at all the
  response fails, named, instead of silently not revoking.
- A profile re-associated during the collection: a containment failure, not a collection gap.
- ``stop_after_evidence``: the instance ends stopped, never terminated.

State is read back from the emulator (IAM policies, associations, metadata options, instance
state, interfaces), never taken from a step's output. Some scenarios need the issue-10 state
machine (states "Remove re-associated profile", "Disable instance metadata", "Stop instance", and
every containment measure attempted whatever another one did).
"""

from __future__ import annotations

import json
import time
import uuid
import threading
from datetime import UTC, datetime, timedelta

from test_incident_response import (
    attribute,
    failed_event,
    incident_id,
    isolation_group_id,
    notifications_for,
    states_entered,
)

ACCOUNT = "123456789012"  # moto's default account
REGION = "us-east-1"
QUOTA = 10_240
TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
    }
)


def instance_arn(instance_id: str) -> str:
    return f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{instance_id}"


def size(document: str) -> int:
    """A policy's size as IAM counts it: whitespace is not counted."""
    return sum(1 for c in document if not c.isspace())


def revoke_document(arns: list[str]) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "CordonRevokeInstanceCredentials",
                    "Effect": "Deny",
                    "Action": "*",
                    "Resource": "*",
                    "Condition": {"StringEquals": {"ec2:SourceInstanceARN": arns}},
                }
            ],
        },
        separators=(",", ":"),
    )


def filler(chars: int) -> str:
    """A valid policy document of exactly ``chars`` counted characters."""
    head = '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::'
    tail = '"}]}'
    return head + "b" * (chars - len(head) - len(tail)) + tail


def read_policy(stack, role: str, name: str = "cordon-revoke") -> dict:
    doc = stack.iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
    return json.loads(doc) if isinstance(doc, str) else doc  # boto3 URL-decodes and parses it


def statement(policy: dict, sid: str) -> dict | None:
    return next((s for s in policy["Statement"] if s.get("Sid") == sid), None)


def denied_arns(policy: dict) -> list[str]:
    s = statement(policy, "CordonRevokeInstanceCredentials")
    if s is None:
        return []
    arns = s["Condition"]["StringEquals"]["ec2:SourceInstanceARN"]
    return [arns] if isinstance(arns, str) else arns


def associations(stack, instance_id: str) -> list[dict]:
    out = stack.ec2.describe_iam_instance_profile_associations(Filters=[{"Name": "instance-id", "Values": [instance_id]}])
    return [a for a in out["IamInstanceProfileAssociations"] if a["State"] in ("associated", "associating")]


def describe(stack, instance_id: str) -> dict:
    return stack.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]


def assert_isolated(stack, instance_id: str) -> None:
    desc = describe(stack, instance_id)
    iso = isolation_group_id(stack, desc["VpcId"])
    enis = stack.ec2.describe_network_interfaces(Filters=[{"Name": "attachment.instance-id", "Values": [instance_id]}])
    assert enis["NetworkInterfaces"]
    for eni in enis["NetworkInterfaces"]:
        assert [g["GroupId"] for g in eni["Groups"]] == [iso], eni["NetworkInterfaceId"]


def manifest(stack, incident: str, instance_id: str, name: str = "manifest.json") -> dict:
    return json.loads(stack.get_object(f"{incident}/{instance_id}/{name}")[0])


def gap(manifest_: dict, what: str) -> dict:
    found = [g for g in manifest_["gaps"] if g["what"] == what]
    assert found, (what, manifest_["gaps"])
    return found[0]


def own_role(stack, prefix: str) -> tuple[str, str]:
    """A role and instance profile of this test's own (so no other scenario shares its quota)."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    stack.iam.create_role(RoleName=name, AssumeRolePolicyDocument=TRUST)
    arn = stack.iam.create_instance_profile(InstanceProfileName=name)["InstanceProfile"]["Arn"]
    stack.iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
    return name, arn


def instance_with_profile(stack, name: str, profile_arn: str):
    inst = stack.seed_instance(name=name, ssm=False, instance_profile=False)
    stack.ec2.associate_iam_instance_profile(InstanceId=inst.instance_id, IamInstanceProfile={"Arn": profile_arn})
    return inst


# ------------------------------------------------------------------------------------ refusals


def test_a_spot_instance_is_isolated_and_revoked_and_termination_protection_is_a_gap(stack):
    inst = stack.seed_instance(name="spot", ssm=False, spot=True)
    iid = inst.instance_id
    assert describe(stack, iid)["InstanceLifecycle"] == "spot"
    since = stack.last_request_seq()
    stack.notifications()
    incident = incident_id()

    desc, events = stack.run_execution({"instance_id": iid, "incident_id": incident}, name=incident, timeout=180)

    assert desc["status"] == "SUCCEEDED", (desc, failed_event(events) if desc["status"] == "FAILED" else None)
    # Termination protection: not asked for (the instance's lifecycle was read first), and off.
    asked = [
        r
        for r in stack.requests(service="ec2", action="ModifyInstanceAttribute", since=since)
        if "DisableApiTermination.Value" in (r["params"] or {})
    ]
    assert asked == [], asked
    assert attribute(stack, iid, "disableApiTermination") is False
    # Everything else of containment happened.
    assert attribute(stack, iid, "instanceInitiatedShutdownBehavior") == "stop"
    assert all(not b["Ebs"]["DeleteOnTermination"] for b in describe(stack, iid)["BlockDeviceMappings"])
    assert_isolated(stack, iid)
    assert associations(stack, iid) == []
    assert instance_arn(iid) in denied_arns(read_policy(stack, "app-server"))
    # The gap, with its reason, in the manifest and the message.
    m = manifest(stack, incident, iid)
    assert "Spot" in gap(m, "termination protection")["reason"]
    [message] = notifications_for(stack, iid)
    assert message["Subject"] == f"[Cordon] {iid} CONTAINED"
    assert "termination protection (termprotect): the instance is a Spot Instance" in message["Message"]
    # What the release needs about it.
    state = json.loads(stack.get_object(f"{incident}/{iid}/pre-incident-state.json")[0])
    assert state["instance_lifecycle"] == "spot"
    assert state["metadata_options"]["http_endpoint"] == "enabled"
    assert sorted(state["connection_tracking_by_interface"]) == sorted(inst.network_interface_ids)


def test_an_instance_auto_scaling_will_not_detach_is_a_gap_and_the_rest_is_done(stack):
    asg = stack.client("autoscaling")
    group = f"hooked-{uuid.uuid4().hex[:8]}"
    asg.create_auto_scaling_group(
        AutoScalingGroupName=group,
        LaunchTemplate={"LaunchTemplateId": stack.context.launch_template_id, "Version": "$Latest"},
        MinSize=0,
        MaxSize=2,
        DesiredCapacity=0,
        VPCZoneIdentifier=",".join(stack.context.subnet_ids),
    )
    inst = stack.seed_instance(name="terminating", ssm=False, auto_scaling_group=group, lifecycle_state="Terminating:Wait")
    iid = inst.instance_id
    since = stack.last_request_seq()
    incident = incident_id()

    desc, events = stack.run_execution({"instance_id": iid, "incident_id": incident}, name=incident, timeout=180)

    assert desc["status"] == "SUCCEEDED", (desc, failed_event(events) if desc["status"] == "FAILED" else None)
    assert stack.requests(service="autoscaling", action="DetachInstances", since=since) == [], "not asked: refused state"
    state = asg.describe_auto_scaling_instances(InstanceIds=[iid])["AutoScalingInstances"]
    assert [(s["AutoScalingGroupName"], s["LifecycleState"]) for s in state] == [(group, "Terminating:Wait")]
    assert attribute(stack, iid, "disableApiTermination") is True
    assert_isolated(stack, iid)
    assert instance_arn(iid) in denied_arns(read_policy(stack, "app-server"))
    reason = gap(manifest(stack, incident, iid), "detach from Auto Scaling group")["reason"]
    assert "Terminating:Wait" in reason and group in reason, reason


# ------------------------------------------------------------------------------------ credentials


def test_a_nearly_full_inline_policy_quota_still_revokes_role_wide(stack):
    role, profile_arn = own_role(stack, "quota")
    inst = instance_with_profile(stack, "quota-full", profile_arn)
    iid = inst.instance_id
    # Three earlier incidents on this role are listed; the role's other policy leaves 30
    # characters beside them: not enough for one more ARN, nor for the time statement beside all.
    earlier = [instance_arn(f"i-{n:017x}") for n in range(3)]
    current = revoke_document(earlier)
    stack.iam.put_role_policy(RoleName=role, PolicyName="cordon-revoke", PolicyDocument=current)
    stack.iam.put_role_policy(RoleName=role, PolicyName="app", PolicyDocument=filler(QUOTA - size(current) - 30))
    assert stack.control("/iam/role-policy-quota")["roles"][role] == QUOTA - 30
    started = datetime.now(UTC).replace(microsecond=0)
    incident = incident_id()

    desc, events = stack.run_execution({"instance_id": iid, "incident_id": incident}, name=incident, timeout=180)

    assert desc["status"] == "SUCCEEDED", (desc, failed_event(events) if desc["status"] == "FAILED" else None)
    assert associations(stack, iid) == []
    policy = read_policy(stack, role)
    older = statement(policy, "CordonRevokeOlderSessions")
    assert older is not None and older["Effect"] == "Deny" and older["Action"] == "*", policy
    cut_off = datetime.fromisoformat(older["Condition"]["DateLessThan"]["aws:TokenIssueTime"].replace("Z", "+00:00"))
    assert started <= cut_off <= datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
    listed = denied_arns(policy)
    assert listed and listed[-1] == instance_arn(iid), "the newest ARN is kept"
    assert stack.control("/iam/role-policy-quota")["roles"][role] <= QUOTA
    assert read_policy(stack, role, "app")["Statement"][0]["Effect"] == "Allow", "the role's own policy is untouched"
    reason = gap(manifest(stack, incident, iid), "per-instance credential revocation")["reason"]
    assert role in reason, reason
    assert_isolated(stack, iid)


def test_a_role_with_no_room_for_any_revocation_fails_named_with_the_network_isolated(stack):
    role, profile_arn = own_role(stack, "noroom")
    inst = instance_with_profile(stack, "quota-none", profile_arn)
    iid = inst.instance_id
    stack.iam.put_role_policy(RoleName=role, PolicyName="app", PolicyDocument=filler(QUOTA - 40))
    stack.notifications()
    incident = incident_id()

    desc, events = stack.run_execution({"instance_id": iid, "incident_id": incident}, name=incident, timeout=180)

    assert desc["status"] == "FAILED"
    assert failed_event(events)["error"] == "CredentialsNotRevoked"
    assert stack.iam.list_role_policies(RoleName=role)["PolicyNames"] == ["app"], "nothing that cannot fit"
    assert associations(stack, iid) == [], "the profile is still removed"
    assert_isolated(stack, iid)  # every other measure is applied (issue-10 state machine)
    [message] = notifications_for(stack, iid)
    assert message["Subject"] == f"[Cordon] {iid} CONTAINMENT FAILED"
    assert "CredentialsNotRevoked" in message["Message"] and role in message["Message"]


def wait_for_state(stack, execution_name: str, state: str, timeout: float = 60) -> None:
    arn = stack.state_machine_arn.replace(":stateMachine:", ":execution:") + f":{execution_name}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            events = stack.sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
        except stack.sfn.exceptions.ExecutionDoesNotExist:
            events = []  # not started yet
        if state in states_entered(events):
            return
        time.sleep(0.2)
    raise AssertionError(f"{execution_name} never entered {state!r}")


def test_a_profile_reassociated_during_the_collection_is_a_containment_failure(stack):
    inst = stack.seed_instance(name="reassociated", ssm=True)
    iid = inst.instance_id
    # The collection hangs until it is cancelled: time for someone to re-associate a profile.
    stack.control("/ssm/behaviour", {"instance_id": iid, "mode": "hang"})
    stack.notifications()
    incident = incident_id()
    result: dict = {}

    def run() -> None:
        result["out"] = stack.run_execution(
            {"instance_id": iid, "incident_id": incident}, name=incident, timeout=240
        )

    runner = threading.Thread(target=run)
    runner.start()
    wait_for_state(stack, incident, "Wait for collection")
    # The attacker swaps the forensic profile for the application's own.
    [forensic] = associations(stack, iid)
    stack.ec2.replace_iam_instance_profile_association(
        AssociationId=forensic["AssociationId"], IamInstanceProfile={"Arn": stack.context.instance_profile_arn}
    )
    # The responder stops the hung collection rather than wait for its budget.
    [command] = [c for c in stack.ssm.list_commands(InstanceId=iid)["Commands"] if c["Status"] in ("Pending", "InProgress")]
    stack.ssm.cancel_command(CommandId=command["CommandId"], InstanceIds=[iid])
    runner.join(timeout=300)
    desc, events = result["out"]

    assert desc["status"] == "FAILED"
    assert failed_event(events)["error"] == "ProfileReassociated"
    assert "Disable instance metadata" in states_entered(events)
    assert describe(stack, iid)["MetadataOptions"]["HttpEndpoint"] == "disabled", "its credentials are out of reach"
    assert associations(stack, iid) == [], "the re-associated profile was removed"
    assert instance_arn(iid) in denied_arns(read_policy(stack, "app-server")), "and its credentials revoked"
    [message] = notifications_for(stack, iid)
    assert message["Subject"] == f"[Cordon] {iid} CONTAINMENT FAILED"
    assert stack.context.instance_profile_arn in message["Message"]
    assert "collection" not in gap_whats(stack, incident, iid), "not a collection gap"

    # A second execution (what a redrive does) completes: the endpoint ends disabled.
    stack.control("/ssm/behaviour", {"instance_id": iid, "mode": "run"})
    desc, events = stack.run_execution(
        {"instance_id": iid, "incident_id": incident}, name=f"{incident}-again", timeout=240
    )
    assert desc["status"] == "SUCCEEDED", (desc, failed_event(events) if desc["status"] == "FAILED" else None)
    assert describe(stack, iid)["MetadataOptions"]["HttpEndpoint"] == "disabled"


def gap_whats(stack, incident: str, instance_id: str) -> list[str]:
    keys = [o["Key"] for o in stack.objects_under(f"{incident}/{instance_id}/") if "manifest" in o["Key"]]
    whats = []
    for key in keys:
        whats += [g["what"] for g in json.loads(stack.get_object(key)[0]).get("gaps", [])]
    return whats


def test_a_completed_response_turns_the_metadata_endpoint_off(stack):
    inst = stack.seed_instance(name="imds", ssm=False)
    iid = inst.instance_id
    assert describe(stack, iid)["MetadataOptions"]["HttpEndpoint"] == "enabled"
    incident = incident_id()
    desc, events = stack.run_execution({"instance_id": iid, "incident_id": incident}, name=incident, timeout=180)
    assert desc["status"] == "SUCCEEDED", (desc, failed_event(events) if desc["status"] == "FAILED" else None)
    assert "Disable instance metadata" in states_entered(events)
    options = describe(stack, iid)["MetadataOptions"]
    assert options["HttpEndpoint"] == "disabled"
    assert options["HttpTokens"] == "required", "only the endpoint changed"
    actions = manifest(stack, incident, iid)["actions"]
    [off] = [a for a in actions if a["action"] == "disable instance metadata endpoint"]
    assert (off["before"]["http_endpoint"], off["after"]["http_endpoint"]) == ("enabled", "disabled")


def test_stop_after_evidence_stops_the_instance_and_never_terminates_it(stack):
    inst = stack.seed_instance(name="stop", ssm=False)
    iid = inst.instance_id
    since = stack.last_request_seq()
    incident = incident_id()
    desc, events = stack.run_execution(
        {"instance_id": iid, "incident_id": incident, "options": {"stop_after_evidence": True}},
        name=incident,
        timeout=180,
    )
    assert desc["status"] == "SUCCEEDED", (desc, failed_event(events) if desc["status"] == "FAILED" else None)
    assert "Stop instance" in states_entered(events)
    assert describe(stack, iid)["State"]["Name"] in ("stopping", "stopped")
    assert stack.requests(service="ec2", action="TerminateInstances", since=since) == []
    [stop] = stack.requests(service="ec2", action="StopInstances", since=since)
    assert "Hibernate" not in (stop["params"] or {}), "launched without hibernation"
    assert "Force" not in (stop["params"] or {})


def test_the_quota_shim_refuses_as_iam_does(stack):
    role, _ = own_role(stack, "shim")
    iam = stack.client("iam", retries=0)
    pretty = json.dumps(json.loads(filler(6000)), indent=4)  # whitespace is not counted
    assert len(pretty) > 6000 and size(pretty) == 6000
    iam.put_role_policy(RoleName=role, PolicyName="a", PolicyDocument=pretty)
    iam.put_role_policy(RoleName=role, PolicyName="b", PolicyDocument=filler(QUOTA - 6000))
    try:
        iam.put_role_policy(RoleName=role, PolicyName="c", PolicyDocument=filler(200))
        raise AssertionError("a put beyond the quota was accepted")
    except iam.exceptions.LimitExceededException as e:
        assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 409
        assert e.response["Error"]["Message"] == f"Maximum policy size of 10240 bytes exceeded for role {role}"
    # Replacing a policy counts the new document instead of the old one.
    iam.put_role_policy(RoleName=role, PolicyName="b", PolicyDocument=filler(QUOTA - 6000 - 200))
    iam.put_role_policy(RoleName=role, PolicyName="c", PolicyDocument=filler(200))
    assert stack.control("/iam/role-policy-quota")["roles"][role] == QUOTA


def test_limit_exceeded_although_the_plan_fitted_falls_back_to_role_wide(stack):
    """IAM refuses what the step measured as fitting (another policy appeared, or IAM counts
    otherwise): the step falls back to the smallest policy, role-wide, and says so."""
    role, profile_arn = own_role(stack, "refused")
    inst = instance_with_profile(stack, "refused", profile_arn)
    iid = inst.instance_id
    earlier = [instance_arn(f"i-{n:017x}") for n in range(5)]
    stack.iam.put_role_policy(RoleName=role, PolicyName="cordon-revoke", PolicyDocument=revoke_document(earlier))
    # IAM here allows the current policy plus 10 characters, whatever the step plans with.
    stack.control("/iam/role-policy-quota", {"quota": size(revoke_document(earlier)) + 10})
    incident = incident_id()
    try:
        desc, events = stack.run_execution({"instance_id": iid, "incident_id": incident}, name=incident, timeout=180)
    finally:
        stack.control("/iam/role-policy-quota", method="DELETE")

    assert desc["status"] == "SUCCEEDED", (desc, failed_event(events) if desc["status"] == "FAILED" else None)
    policy = read_policy(stack, role)
    assert statement(policy, "CordonRevokeOlderSessions") is not None, policy
    assert denied_arns(policy) == [], "the smallest policy: no list"
    reason = gap(manifest(stack, incident, iid), "per-instance credential revocation")["reason"]
    assert "LimitExceeded" in reason, reason
