"""Scenarios against the strictness shims (``local_aws.strict``): where moto alone would be kinder
than AWS, the response is run against the behaviour AWS documents.

Post-conditions are read back from the emulator (describe calls), never taken from a step's
output, and each starts from the opposite of the value Cordon sets, checked before the run.

A Spot Instance (termination protection refused) and an instance held in ``Terminating:Wait``
(DetachInstances refused) run against the same shims in ``test_containment_credentials.py``.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime

from test_incident_response import attribute, failed_event, incident_id


def volumes_delete_on_termination(stack, instance_id: str) -> dict[str, bool]:
    desc = stack.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    return {b["Ebs"]["VolumeId"]: b["Ebs"]["DeleteOnTermination"] for b in desc["BlockDeviceMappings"]}


def target_health(stack, arn: str) -> dict[str, dict]:
    out = stack.client("elbv2").describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
    return {d["Target"]["Id"]: d["TargetHealth"] for d in out}


def logged_at(entry: dict) -> float:
    return datetime.fromisoformat(entry["time"]).timestamp()


def test_a_deregistered_target_is_draining_and_containment_still_verifies(stack):
    """ELBv2 keeps a deregistered target listed as `draining` (Target.DeregistrationInProgress) for
    the target group's deregistration delay; the quarantine verification must read that as out of
    service. Before the fix, Cordon read it as "still registered" and ended CONTAINMENT FAILED."""
    elb = stack.client("elbv2")
    tg = elb.create_target_group(
        Name=f"drain-{uuid.uuid4().hex[:8]}", Protocol="HTTP", Port=80, VpcId=stack.context.vpc_id
    )["TargetGroups"][0]["TargetGroupArn"]
    elb.modify_target_group_attributes(
        TargetGroupArn=tg, Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": "1500"}]
    )
    elb.create_listener(
        LoadBalancerArn=stack.context.load_balancer_arn,
        Protocol="HTTP",
        Port=10000 + uuid.uuid4().int % 50000,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg}],
    )
    delay = 1500 * stack.control("/elbv2/deregistration-delay")["scale"]
    inst = stack.seed_instance(name="draining", ssm=False)
    iid = inst.instance_id
    elb.register_targets(TargetGroupArn=tg, Targets=[{"Id": iid, "Port": 80}])
    assert target_health(stack, tg)[iid]["State"] == "healthy"
    since = stack.last_request_seq()

    incident = incident_id()
    desc, events = stack.run_execution({"instance_id": iid, "incident_id": incident}, name=incident)

    assert desc["status"] == "SUCCEEDED", failed_event(events) if desc["status"] == "FAILED" else desc
    [dereg] = [
        r
        for r in stack.requests(service="elasticloadbalancing", action="DeregisterTargets", since=since)
        if r["params"].get("TargetGroupArn") == tg
    ]
    assert dereg["status"] == 200 and dereg["params"].get("Targets.member.1.Id") == iid
    listed = target_health(stack, tg)
    assert time.time() - logged_at(dereg) < delay - 1, "the run took longer than the drain: raise the delay"
    assert listed[iid]["State"] == "draining" and listed[iid]["Reason"] == "Target.DeregistrationInProgress", listed
    # Then it leaves the group, after the (scaled) delay and not before.
    while iid in target_health(stack, tg) and time.time() - logged_at(dereg) < delay + 5:
        time.sleep(0.2)
    gone_after = time.time() - logged_at(dereg)
    assert iid not in target_health(stack, tg)
    assert delay - 0.5 <= gone_after <= delay + 2, (gone_after, delay)


def test_protection_is_read_back_from_the_emulator_starting_from_the_opposite_values(stack):
    """termprotect's changes, read back with describe calls: shutdown behaviour from `terminate`
    to `stop`, termination protection from off to on, DeleteOnTermination from on to off on every
    volume. moto alone ignores InstanceInitiatedShutdownBehavior, so the first would stay
    `terminate` while the step reports `stop`."""
    inst = stack.seed_instance(name="exposed", ssm=False, shutdown_behavior="terminate", delete_on_termination=True)
    iid = inst.instance_id
    assert attribute(stack, iid, "instanceInitiatedShutdownBehavior") == "terminate"
    assert attribute(stack, iid, "disableApiTermination") is False
    before = volumes_delete_on_termination(stack, iid)
    assert sorted(before) == sorted(inst.volume_ids) and all(before.values()), before

    incident = incident_id()
    desc, events = stack.run_execution({"instance_id": iid, "incident_id": incident}, name=incident)

    assert desc["status"] == "SUCCEEDED", failed_event(events) if desc["status"] == "FAILED" else desc
    assert attribute(stack, iid, "instanceInitiatedShutdownBehavior") == "stop"
    assert attribute(stack, iid, "disableApiTermination") is True
    after = volumes_delete_on_termination(stack, iid)
    assert sorted(after) == sorted(inst.volume_ids) and not any(after.values()), after
