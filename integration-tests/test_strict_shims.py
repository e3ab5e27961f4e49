"""The strictness shims (``local_aws.strict``) on their own, through boto3: each refuses, or answers,
exactly as the AWS documentation it cites says, where moto 5.2.5 is kinder.
"""

from __future__ import annotations

import time
import uuid

import pytest
from botocore.exceptions import ClientError


def error_of(call) -> tuple[str, int, str]:
    with pytest.raises(ClientError) as info:
        call()
    err = info.value.response
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"], err["Error"].get("Message", "")


def shim_of(stack, service: str, action: str, since: int) -> list[str | None]:
    return [r["shim"] for r in stack.requests(service=service, action=action, since=since)]


# ----------------------------------------------------------------------------- EC2 instance attributes


def shutdown_behaviour(stack, instance_id: str) -> str:
    out = stack.ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="instanceInitiatedShutdownBehavior")
    return out["InstanceInitiatedShutdownBehavior"]["Value"]


def test_shutdown_behaviour_really_changes_and_is_read_back(stack):
    inst = stack.seed_instance(ssm=False, second_interface=False, extra_volumes=0, shutdown_behavior="terminate")
    assert shutdown_behaviour(stack, inst.instance_id) == "terminate"
    since = stack.last_request_seq()

    stack.ec2.modify_instance_attribute(
        InstanceId=inst.instance_id, InstanceInitiatedShutdownBehavior={"Value": "stop"}
    )
    assert shutdown_behaviour(stack, inst.instance_id) == "stop"
    # The older Attribute/Value form too.
    stack.ec2.modify_instance_attribute(
        InstanceId=inst.instance_id, Attribute="instanceInitiatedShutdownBehavior", Value="terminate"
    )
    assert shutdown_behaviour(stack, inst.instance_id) == "terminate"
    assert shim_of(stack, "ec2", "ModifyInstanceAttribute", since) == ["Ec2InstanceAttributeShim"] * 2


def test_shutdown_behaviour_refuses_what_ec2_refuses(stack):
    inst = stack.seed_instance(ssm=False, second_interface=False, extra_volumes=0)
    code, status, _ = error_of(
        lambda: stack.ec2.modify_instance_attribute(
            InstanceId=inst.instance_id, InstanceInitiatedShutdownBehavior={"Value": "hibernate"}
        )
    )
    assert (code, status) == ("InvalidParameterValue", 400)
    code, _, _ = error_of(
        lambda: stack.ec2.modify_instance_attribute(
            InstanceId="i-0000000000000dead", InstanceInitiatedShutdownBehavior={"Value": "stop"}
        )
    )
    assert code == "InvalidInstanceID.NotFound"
    code, status, _ = error_of(
        lambda: stack.ec2.modify_instance_attribute(
            InstanceId=inst.instance_id, InstanceInitiatedShutdownBehavior={"Value": "terminate"}, DryRun=True
        )
    )
    assert (code, status) == ("DryRunOperation", 412)
    assert shutdown_behaviour(stack, inst.instance_id) == "stop", "nothing changed"


def test_termination_protection_cannot_be_changed_on_a_spot_instance(stack):
    spot = stack.seed_instance(ssm=False, second_interface=False, extra_volumes=0, spot=True)
    desc = stack.ec2.describe_instances(InstanceIds=[spot.instance_id])["Reservations"][0]["Instances"][0]
    assert desc["InstanceLifecycle"] == "spot"
    for value in (True, False):
        code, status, message = error_of(
            lambda: stack.ec2.modify_instance_attribute(
                InstanceId=spot.instance_id, DisableApiTermination={"Value": value}
            )
        )
        assert (code, status) == ("UnsupportedOperation", 400)
        assert message == "Modifying 'disableApiTermination' is not supported for spot instances."
    out = stack.ec2.describe_instance_attribute(InstanceId=spot.instance_id, Attribute="disableApiTermination")
    assert out["DisableApiTermination"]["Value"] is False


def test_termination_protection_of_an_on_demand_instance_is_moto_s_own(stack):
    inst = stack.seed_instance(ssm=False, second_interface=False, extra_volumes=0)
    stack.ec2.modify_instance_attribute(InstanceId=inst.instance_id, DisableApiTermination={"Value": True})
    out = stack.ec2.describe_instance_attribute(InstanceId=inst.instance_id, Attribute="disableApiTermination")
    assert out["DisableApiTermination"]["Value"] is True


# ----------------------------------------------------------------------------- Auto Scaling DetachInstances


@pytest.fixture
def group(stack):
    """An Auto Scaling group of its own, so that lifecycle states set here touch no other test."""
    asg = stack.client("autoscaling")
    name = f"strict-{uuid.uuid4().hex[:8]}"
    asg.create_auto_scaling_group(
        AutoScalingGroupName=name,
        LaunchTemplate={"LaunchTemplateId": stack.context.launch_template_id, "Version": "$Latest"},
        MinSize=0,
        MaxSize=6,
        DesiredCapacity=0,
        VPCZoneIdentifier=",".join(stack.context.subnet_ids),
    )
    return name


def member(stack, group: str, **kwargs):
    return stack.seed_instance(ssm=False, second_interface=False, extra_volumes=0, auto_scaling_group=group, **kwargs)


def lifecycle(stack, instance_id: str) -> list[str]:
    out = stack.client("autoscaling").describe_auto_scaling_instances(InstanceIds=[instance_id])
    return [i["LifecycleState"] for i in out["AutoScalingInstances"]]


@pytest.mark.parametrize("state", ["Pending", "Pending:Wait", "Terminating", "Terminating:Wait", "EnteringStandby"])
def test_detach_is_refused_outside_in_service_and_standby(stack, group, state):
    inst = member(stack, group, lifecycle_state=state)
    assert lifecycle(stack, inst.instance_id) == [state]
    asg = stack.client("autoscaling", retries=0)
    code, status, message = error_of(
        lambda: asg.detach_instances(
            AutoScalingGroupName=group, InstanceIds=[inst.instance_id], ShouldDecrementDesiredCapacity=False
        )
    )
    assert (code, status) == ("ValidationError", 400)
    assert message == f"The instance {inst.instance_id} is not in InService or Standby."
    assert lifecycle(stack, inst.instance_id) == [state], "still in the group"


@pytest.mark.parametrize("state", ["InService", "Standby"])
def test_detach_is_allowed_in_service_and_standby(stack, group, state):
    inst = member(stack, group, lifecycle_state=state)
    stack.client("autoscaling").detach_instances(
        AutoScalingGroupName=group, InstanceIds=[inst.instance_id], ShouldDecrementDesiredCapacity=False
    )
    assert lifecycle(stack, inst.instance_id) == []


def test_a_retained_instance_is_detached_only_without_decrementing(stack, group):
    inst = member(stack, group, lifecycle_state="Terminating:Retained")
    asg = stack.client("autoscaling", retries=0)
    code, _, _ = error_of(
        lambda: asg.detach_instances(
            AutoScalingGroupName=group, InstanceIds=[inst.instance_id], ShouldDecrementDesiredCapacity=True
        )
    )
    assert code == "ValidationError"
    asg.detach_instances(
        AutoScalingGroupName=group, InstanceIds=[inst.instance_id], ShouldDecrementDesiredCapacity=False
    )
    assert lifecycle(stack, inst.instance_id) == []


def test_detaching_an_instance_that_is_not_in_the_group_is_refused(stack, group):
    loner = stack.seed_instance(ssm=False, second_interface=False, extra_volumes=0)
    code, status, message = error_of(
        lambda: stack.client("autoscaling", retries=0).detach_instances(
            AutoScalingGroupName=group, InstanceIds=[loner.instance_id], ShouldDecrementDesiredCapacity=False
        )
    )
    assert (code, status) == ("ValidationError", 400)
    assert message == f"The instance {loner.instance_id} is not part of Auto Scaling group {group}."


def test_the_lifecycle_state_endpoint_checks_its_input(stack, group):
    inst = member(stack, group)
    with pytest.raises(AssertionError, match="400"):
        stack.control("/autoscaling/lifecycle-state", {"instance_id": inst.instance_id, "state": "Sleeping"})
    with pytest.raises(AssertionError, match="404"):
        stack.control("/autoscaling/lifecycle-state", {"instance_id": "i-0000000000000dead", "state": "InService"})


# ----------------------------------------------------------------------------- ELBv2 draining


@pytest.fixture
def target_group(stack):
    """A target group of its own, behind a listener of the seeded load balancer."""
    elb = stack.client("elbv2")
    arn = elb.create_target_group(
        Name=f"strict-{uuid.uuid4().hex[:8]}", Protocol="HTTP", Port=80, VpcId=stack.context.vpc_id
    )["TargetGroups"][0]["TargetGroupArn"]
    listener = elb.create_listener(
        LoadBalancerArn=stack.context.load_balancer_arn,
        Protocol="HTTP",
        Port=10000 + uuid.uuid4().int % 50000,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": arn}],
    )["Listeners"][0]["ListenerArn"]
    yield arn
    elb.delete_listener(ListenerArn=listener)


@pytest.fixture
def delay_scale(stack):
    """Sets the local deregistration-delay scale for one test, then restores it."""
    before = stack.control("/elbv2/deregistration-delay")["scale"]
    yield lambda scale: stack.control("/elbv2/deregistration-delay", {"scale": scale})
    stack.control("/elbv2/deregistration-delay", {"scale": before})


def health(stack, arn: str, **kwargs) -> dict[str, dict]:
    out = stack.client("elbv2").describe_target_health(TargetGroupArn=arn, **kwargs)["TargetHealthDescriptions"]
    return {d["Target"]["Id"]: d["TargetHealth"] for d in out}


def test_a_deregistered_target_drains_for_the_scaled_delay_then_disappears(stack, target_group, delay_scale):
    elb = stack.client("elbv2")
    elb.modify_target_group_attributes(
        TargetGroupArn=target_group, Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": "100"}]
    )
    delay_scale(0.02)  # 100 s -> 2 s
    inst = stack.seed_instance(ssm=False, second_interface=False, extra_volumes=0)
    iid = inst.instance_id
    elb.register_targets(TargetGroupArn=target_group, Targets=[{"Id": iid, "Port": 80}])
    assert health(stack, target_group)[iid]["State"] == "healthy"

    started = time.monotonic()
    elb.deregister_targets(TargetGroupArn=target_group, Targets=[{"Id": iid, "Port": 80}])
    listed = health(stack, target_group)
    assert listed[iid]["State"] == "draining"
    assert listed[iid]["Reason"] == "Target.DeregistrationInProgress"
    asked = health(stack, target_group, Targets=[{"Id": iid, "Port": 80}])
    assert asked[iid]["State"] == "draining"
    assert [d["id"] for d in stack.control("/elbv2/deregistration-delay")["draining"]] == [iid]

    while iid in health(stack, target_group) and time.monotonic() - started < 10:
        time.sleep(0.1)
    elapsed = time.monotonic() - started
    assert 1.8 <= elapsed <= 3.5, elapsed
    assert iid not in health(stack, target_group)
    asked = health(stack, target_group, Targets=[{"Id": iid}])
    assert (asked[iid]["State"], asked[iid]["Reason"]) == ("unused", "Target.NotRegistered")


def test_a_zero_delay_removes_the_target_at_once(stack, target_group):
    elb = stack.client("elbv2")
    elb.modify_target_group_attributes(
        TargetGroupArn=target_group, Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": "0"}]
    )
    inst = stack.seed_instance(ssm=False, second_interface=False, extra_volumes=0)
    elb.register_targets(TargetGroupArn=target_group, Targets=[{"Id": inst.instance_id}])
    elb.deregister_targets(TargetGroupArn=target_group, Targets=[{"Id": inst.instance_id}])
    assert inst.instance_id not in health(stack, target_group)


def test_re_registering_a_draining_target_makes_it_registered_again(stack, target_group):
    elb = stack.client("elbv2")
    inst = stack.seed_instance(ssm=False, second_interface=False, extra_volumes=0)
    elb.register_targets(TargetGroupArn=target_group, Targets=[{"Id": inst.instance_id}])
    elb.deregister_targets(TargetGroupArn=target_group, Targets=[{"Id": inst.instance_id}])
    assert health(stack, target_group)[inst.instance_id]["State"] == "draining"
    elb.register_targets(TargetGroupArn=target_group, Targets=[{"Id": inst.instance_id}])
    assert health(stack, target_group)[inst.instance_id]["State"] == "healthy"


def test_deregistering_a_target_that_is_not_registered_succeeds(stack, target_group):
    elb = stack.client("elbv2", retries=0)
    inst = stack.seed_instance(ssm=False, second_interface=False, extra_volumes=0)
    since = stack.last_request_seq()
    elb.deregister_targets(TargetGroupArn=target_group, Targets=[{"Id": inst.instance_id}])
    # Registered on port 80, deregistered on 8080: another target, so the registration stays.
    elb.register_targets(TargetGroupArn=target_group, Targets=[{"Id": inst.instance_id, "Port": 80}])
    elb.deregister_targets(TargetGroupArn=target_group, Targets=[{"Id": inst.instance_id, "Port": 8080}])
    assert health(stack, target_group)[inst.instance_id]["State"] == "healthy"
    assert shim_of(stack, "elasticloadbalancing", "DeregisterTargets", since) == ["ElbTargetDrainingShim"] * 2
    code, _, _ = error_of(
        lambda: elb.deregister_targets(
            TargetGroupArn=target_group.replace("targetgroup/", "targetgroup/missing-"),
            Targets=[{"Id": inst.instance_id}],
        )
    )
    assert code == "TargetGroupNotFound"


def test_a_target_group_no_load_balancer_uses_reports_unused_and_deregisters_at_once(stack):
    elb = stack.client("elbv2")
    arn = elb.create_target_group(
        Name=f"idle-{uuid.uuid4().hex[:8]}", Protocol="HTTP", Port=80, VpcId=stack.context.vpc_id
    )["TargetGroups"][0]["TargetGroupArn"]
    inst = stack.seed_instance(ssm=False, second_interface=False, extra_volumes=0)
    elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": inst.instance_id}])
    listed = health(stack, arn)[inst.instance_id]
    assert (listed["State"], listed["Reason"]) == ("unused", "Target.NotInUse")
    elb.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": inst.instance_id}])
    assert health(stack, arn) == {}


def test_the_delay_scale_endpoint_checks_its_input(stack):
    for bad in ({"scale": -1}, {"scale": 2}, {"scale": "fast"}, {}):
        with pytest.raises(AssertionError, match="400"):
            stack.control("/elbv2/deregistration-delay", bad)
