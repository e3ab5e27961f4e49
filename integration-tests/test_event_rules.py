"""The deployed event rules on the local stack: a GuardDuty finding starts exactly the response the
rule promises, and nothing else does.

GuardDuty findings reach EventBridge from GuardDuty itself (source ``aws.guardduty``, which no
client may put: PutEvents refuses it), so the scenarios hand them to the local bus through
``POST /_cordon/events`` as GuardDuty would; the rule, its pattern, input transformer, target (the
findings queue), retry policy and dead-letter queue are the synthesized template's
(``local_aws/eventbridge.py``), and so are the queue, its event source mapping and the dispatcher
that starts the execution (``local_aws/sqs_event_source.py``, ``steps/dispatch``; the bound on
running executions: ``test_guardduty_queue.py``). Every assertion reads the emulator: Step
Functions executions, the instance, the queues.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime

import pytest
from botocore.exceptions import ClientError

from test_incident_response import assert_contained, attribute

TERMINAL = {"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"}
DETECTOR_ID = "12abc34d567e8fa901bc2d34e56789f0"


def _iso(t: datetime | None = None) -> str:
    return (t or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def guardduty_finding(
    stack,
    instance_id: str,
    finding_type: str,
    severity: float,
    resource_type: str = "Instance",
    title: str = "",
    description: str = "",
    action: dict | None = None,
    resource_role: str = "ACTOR",
) -> dict:
    """A GuardDuty finding event as GuardDuty sends it to EventBridge: the envelope of
    https://docs.aws.amazon.com/guardduty/latest/ug/guardduty_findings_eventbridge.html with the
    complete finding as ``detail`` (fields of https://docs.aws.amazon.com/guardduty/latest/APIReference/API_Finding.html;
    an EC2 finding's ``resource.instanceDetails`` as in the sample findings). Instance details are
    read from the emulator, so they are the seeded instance's own."""
    finding_id = uuid.uuid4().hex
    account, region = "123456789012", stack.region
    resource: dict = {"resourceType": resource_type}
    reservations = stack.ec2.describe_instances(Filters=[{"Name": "instance-id", "Values": [instance_id]}])[
        "Reservations"
    ]
    if reservations:
        inst = reservations[0]["Instances"][0]
        resource["instanceDetails"] = {
            "instanceId": instance_id,
            "instanceType": inst["InstanceType"],
            "instanceState": inst["State"]["Name"],
            "availabilityZone": inst["Placement"]["AvailabilityZone"],
            "imageId": inst["ImageId"],
            "launchTime": _iso(inst["LaunchTime"]),
            "platform": None,
            "productCodes": [],
            "iamInstanceProfile": {
                "arn": inst.get("IamInstanceProfile", {}).get("Arn", ""),
                "id": inst.get("IamInstanceProfile", {}).get("Id", ""),
            },
            "networkInterfaces": [
                {
                    "networkInterfaceId": eni["NetworkInterfaceId"],
                    "privateIpAddress": eni.get("PrivateIpAddress", ""),
                    "subnetId": eni.get("SubnetId", ""),
                    "vpcId": eni.get("VpcId", ""),
                    "securityGroups": [
                        {"groupId": g["GroupId"], "groupName": g["GroupName"]} for g in eni.get("Groups", [])
                    ],
                }
                for eni in inst.get("NetworkInterfaces", [])
            ],
            "tags": [{"key": t["Key"], "value": t["Value"]} for t in inst.get("Tags", [])],
        }
    else:
        resource["instanceDetails"] = {"instanceId": instance_id}
    if resource_type == "AccessKey":
        resource["accessKeyDetails"] = {
            "accessKeyId": "ASIAEXAMPLEKEY000001",
            "principalId": "AROAEXAMPLEROLE:" + instance_id,
            "userName": "app-server",
            "userType": "AssumedRole",
        }
    now = _iso()
    detail = {
        "schemaVersion": "2.0",
        "accountId": account,
        "region": region,
        "partition": "aws",
        "id": finding_id,
        "arn": f"arn:aws:guardduty:{region}:{account}:detector/{DETECTOR_ID}/finding/{finding_id}",
        "type": finding_type,
        "resource": resource,
        "service": {
            "serviceName": "guardduty",
            "detectorId": DETECTOR_ID,
            "action": action
            or {
                "actionType": "DNS_REQUEST",
                "dnsRequestAction": {"domain": "guarddutyc2activityb.com", "protocol": "UDP", "blocked": False},
            },
            "resourceRole": resource_role,
            "eventFirstSeen": now,
            "eventLastSeen": now,
            "archived": False,
            "count": 1,
        },
        "severity": severity,
        "createdAt": now,
        "updatedAt": now,
        "title": title or f"{finding_type} on {instance_id}",
        "description": description or f"{finding_type} was detected on EC2 instance {instance_id}.",
    }
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "GuardDuty Finding",
        "source": "aws.guardduty",
        "account": account,
        "time": now[:19] + "Z",
        "region": region,
        "resources": [],
        "detail": detail,
    }


# Finding types and severities from https://docs.aws.amazon.com/guardduty/latest/ug/guardduty_finding-types-ec2.html
# and .../guardduty_finding-types-iam.html.
def c2_finding(stack, instance_id: str, severity: float = 8) -> dict:
    return guardduty_finding(
        stack,
        instance_id,
        "Backdoor:EC2/C&CActivity.B!DNS",
        severity,
        title="Command and Control server domain name queried by EC2 instance " + instance_id + ".",
        description="EC2 instance "
        + instance_id
        + " is querying a domain name associated with a known Command & Control server.",
    )


def guardduty_rule(stack) -> dict:
    rules = [
        r for r in stack.control("/events/rules")["rules"] if "aws.guardduty" in r["event_pattern"].get("source", [])
    ]
    assert len(rules) == 1, rules
    return rules[0]


def put_aws_event(stack, event: dict) -> dict:
    (out,) = stack.control("/events", event)["events"]
    return out


def settled_deliveries(stack, event_id: str, timeout: float = 30) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        deliveries = stack.control(f"/events/deliveries?event_id={event_id}")["deliveries"]
        if all(d["status"] != "pending" for d in deliveries):
            return deliveries
        if time.monotonic() > deadline:
            raise AssertionError(f"deliveries of {event_id} still pending: {deliveries}")
        time.sleep(0.1)


def wait_started(stack, instance_id: str, timeout: float = 60) -> dict:
    """The one execution for ``instance_id``, once the dispatcher has started it."""
    deadline = time.monotonic() + timeout
    while True:
        found = executions_for(stack, instance_id)
        if found:
            (execution,) = found
            return execution
        if time.monotonic() > deadline:
            raise AssertionError(f"no execution for {instance_id} after {timeout}s")
        time.sleep(0.25)


def executions_for(stack, instance_id: str) -> list[dict]:
    """Every execution of the Cordon state machine whose input names ``instance_id``."""
    out = []
    for page in stack.sfn.get_paginator("list_executions").paginate(stateMachineArn=stack.state_machine_arn):
        for e in page["executions"]:
            desc = stack.sfn.describe_execution(executionArn=e["executionArn"])
            if json.loads(desc.get("input") or "{}").get("instance_id") == instance_id:
                out.append(desc)
    return out


def wait_terminal(stack, execution_arn: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        desc = stack.sfn.describe_execution(executionArn=execution_arn)
        if desc["status"] in TERMINAL:
            return desc
        if time.monotonic() > deadline:
            raise AssertionError(f"{execution_arn} still {desc['status']} after {timeout}s")
        time.sleep(0.25)


def failure(stack, desc: dict) -> list[dict]:
    """The failure events of an execution's history, for an assertion message."""
    events = stack.sfn.get_execution_history(executionArn=desc["executionArn"], maxResults=1000)["events"]
    return [json.dumps(e, default=str)[:600] for e in events if "Failed" in e["type"]][-3:]


def unknown_instance_id() -> str:
    return "i-0" + uuid.uuid4().hex[:16]


# ------------------------------------------------------------------------------------ scenarios


def test_a_guardduty_ec2_finding_starts_one_response_that_contains_the_instance(stack):
    inst = stack.seed_instance(name="gd-c2", ssm=False, shutdown_behavior="terminate", delete_on_termination=True)
    # Every protection the response sets starts from the opposite, read back from the emulator.
    assert attribute(stack, inst.instance_id, "instanceInitiatedShutdownBehavior") == "terminate"
    assert attribute(stack, inst.instance_id, "disableApiTermination") is False
    mappings = stack.ec2.describe_instances(InstanceIds=[inst.instance_id])["Reservations"][0]["Instances"][0][
        "BlockDeviceMappings"
    ]
    assert mappings and all(m["Ebs"]["DeleteOnTermination"] for m in mappings)
    rule = guardduty_rule(stack)
    event = c2_finding(stack, inst.instance_id, severity=8)

    put = put_aws_event(stack, event)

    assert put["rules"] == [rule["name"]]
    (delivery,) = settled_deliveries(stack, put["id"])
    assert delivery["status"] == "delivered", delivery
    assert delivery["attempts"] == 1
    # The rule queues the finding; the dispatcher starts the response from the queue.
    assert rule["targets"][0]["arn"].endswith(".fifo") and rule["targets"][0]["role_arn"] is None
    assert json.loads(delivery["input"]) == {
        "finding_id": event["detail"]["id"],
        "instance_id": inst.instance_id,
        "reason": "Backdoor:EC2/C&CActivity.B!DNS",
        "requested_by": "guardduty",
    }
    execution = wait_started(stack, inst.instance_id)
    assert execution["stateMachineArn"] == stack.state_machine_arn
    # The input the rule's transformer promises (README: GuardDuty), nothing more: the finding id
    # is the execution's name, which the response uses as its incident id.
    assert json.loads(execution["input"]) == {
        "instance_id": inst.instance_id,
        "reason": "Backdoor:EC2/C&CActivity.B!DNS",
        "requested_by": "guardduty",
    }
    incident = execution["name"]
    assert incident == event["detail"]["id"]
    # StartExecution was called by the dispatcher, under its own role.
    starts = [r for r in stack.requests(service="states", action="StartExecution") if incident in json.dumps(r["params"])]
    assert [r["principal"] for r in starts] == ["function:cordon-dispatch"], starts

    desc = wait_terminal(stack, execution["executionArn"])
    assert desc["status"] == "SUCCEEDED", failure(stack, desc)
    assert json.loads(desc["output"])["outcome"] == "contained"
    manifest = assert_contained(stack, inst, incident, ssm_collected=False)
    assert manifest["requested_by"] == "guardduty"
    assert len(executions_for(stack, inst.instance_id)) == 1, "one finding, one response"


@pytest.mark.parametrize(
    "case",
    ["below-threshold", "access-key", "threshold-minus"],
)
def test_findings_the_rule_does_not_select_start_nothing(stack, case):
    inst = stack.seed_instance(name=f"gd-{case}", ssm=False, extra_volumes=0, second_interface=False)
    if case == "below-threshold":
        # Low severity: an instance that is the target of SSH brute force
        # (UnauthorizedAccess:EC2/SSHBruteForce, "Low" when the instance is the target).
        event = guardduty_finding(
            stack,
            inst.instance_id,
            "UnauthorizedAccess:EC2/SSHBruteForce",
            2,
            resource_role="TARGET",
            action={
                "actionType": "NETWORK_CONNECTION",
                "networkConnectionAction": {
                    "connectionDirection": "INBOUND",
                    "protocol": "TCP",
                    "blocked": False,
                    "localPortDetails": {"port": 22, "portName": "SSH"},
                },
            },
        )
    elif case == "access-key":
        # High severity, but on an access key (the instance's credentials used outside AWS):
        # the instance details are there, only resource.resourceType keeps it out.
        event = guardduty_finding(
            stack,
            inst.instance_id,
            "UnauthorizedAccess:IAMUser/InstanceCredentialExfiltration.OutsideAWS",
            8,
            resource_type="AccessKey",
            action={
                "actionType": "AWS_API_CALL",
                "awsApiCallAction": {"api": "DescribeInstances", "serviceName": "ec2.amazonaws.com"},
            },
        )
    else:
        event = c2_finding(stack, inst.instance_id, severity=3.9)

    put = put_aws_event(stack, event)

    assert put["rules"] == []
    assert settled_deliveries(stack, put["id"]) == []
    time.sleep(1)
    assert executions_for(stack, inst.instance_id) == []


def test_putevents_refuses_aws_sources_and_delivers_only_what_matches(stack):
    inst_id = unknown_instance_id()
    finding = c2_finding(stack, inst_id)
    events = stack.client("events")
    common = {"DetailType": "GuardDuty Finding", "Detail": json.dumps(finding["detail"])}

    out = events.put_events(
        Entries=[
            {"Source": "aws.guardduty", **common},  # only GuardDuty may say it is GuardDuty
            {"Source": "cordon.tests", **common},  # accepted, but the rule wants aws.guardduty
            {"Source": "cordon.tests", "DetailType": "x", "Detail": "[1]"},
            {"Source": "cordon.tests", "DetailType": "x"},
        ]
    )

    assert out["FailedEntryCount"] == 3
    e = out["Entries"]
    assert e[0] == {"ErrorCode": "NotAuthorizedForSourceException", "ErrorMessage": "Not authorized for the source."}
    assert set(e[1]) == {"EventId"} and str(uuid.UUID(e[1]["EventId"])) == e[1]["EventId"]
    assert e[2] == {"ErrorCode": "MalformedDetail", "ErrorMessage": "Detail is malformed."}
    assert e[3] == {
        "ErrorCode": "InvalidArgument",
        "ErrorMessage": "Parameter Detail is not valid. Reason: Detail is a required argument.",
    }
    assert settled_deliveries(stack, e[1]["EventId"]) == []
    with pytest.raises(ClientError) as err:
        events.put_events(Entries=[{"Source": "cordon.tests", "DetailType": "x", "Detail": "{}"}] * 11)
    assert err.value.response["Error"]["Code"] == "ValidationException"
    time.sleep(1)
    assert executions_for(stack, inst_id) == []


def test_a_throttled_start_leaves_the_finding_queued_and_it_starts_exactly_once_later(stack):
    from test_guardduty_queue import dispatcher_settings, mapping

    inst_id = unknown_instance_id()
    # Four throttles: the dispatcher's SDK gives up after three attempts, the finding goes back to
    # the queue, and the next receive starts it (the fourth throttled, the fifth accepted).
    stack.control(
        "/faults",
        {
            "service": "states",
            "action": "StartExecution",
            "code": "ThrottlingException",
            "count": 4,
            "instance_id": inst_id,
        },
    )
    since = stack.last_request_seq()
    left_before = mapping(stack)["stats"]["left"]

    with dispatcher_settings(stack, RETRY_DELAY_SECONDS="1"):
        put = put_aws_event(stack, c2_finding(stack, inst_id))
        (delivery,) = settled_deliveries(stack, put["id"])
        execution = wait_started(stack, inst_id)

    assert delivery["status"] == "delivered" and delivery["attempts"] == 1, delivery
    starts = [
        r
        for r in stack.requests(service="states", action="StartExecution", since=since)
        if inst_id in json.dumps(r["params"])
    ]
    assert [r["status"] for r in starts] == [400, 400, 400, 400, 200]
    assert {r["principal"] for r in starts} == {"function:cordon-dispatch"}
    assert mapping(stack)["stats"]["left"] > left_before, "the finding went back to the queue"
    assert execution["name"] == json.loads(delivery["input"])["finding_id"]
    time.sleep(1)
    assert len(executions_for(stack, inst_id)) == 1


def test_a_finding_the_rule_cannot_queue_is_retried_per_the_policy_then_dead_lettered(stack):
    inst_id = unknown_instance_id()
    rule = guardduty_rule(stack)
    target = rule["targets"][0]
    retries = target["retry_policy"]["MaximumRetryAttempts"]
    stack.control(
        "/faults",
        {
            "service": "sqs",
            "action": "SendMessage",
            "code": "InternalFailure",
            "status": 500,
            "count": retries + 1,
            "instance_id": inst_id,
        },
    )
    since = stack.last_request_seq()
    event = c2_finding(stack, inst_id)

    put = put_aws_event(stack, event)

    (delivery,) = settled_deliveries(stack, put["id"], timeout=60)
    assert delivery["status"] == "failed" and delivery["attempts"] == retries + 1, delivery
    assert delivery["exhausted_retry_condition"] == "MaximumRetryAttempts"
    queue = target["arn"].rsplit(":", 1)[-1]
    sends = [
        r
        for r in stack.requests(service="sqs", action="SendMessage", since=since)
        if inst_id in json.dumps(r["params"]) and str(r["params"].get("QueueUrl", "")).endswith("/" + queue)
    ]
    assert len(sends) == retries + 1 and all(r["fault"] for r in sends)
    time.sleep(1)
    assert executions_for(stack, inst_id) == []

    # The original event is in the rule's dead-letter queue, with EventBridge's attributes.
    queue_name = target["dead_letter_arn"].rsplit(":", 1)[-1]
    queue_url = stack.sqs.get_queue_url(QueueName=queue_name)["QueueUrl"]
    found = None
    for _ in range(10):
        got = stack.sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], WaitTimeSeconds=1
        ).get("Messages", [])
        for m in got:
            stack.sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
            if json.loads(m["Body"])["id"] == put["id"]:
                found = m
        if found:
            break
    assert found is not None, "nothing in the dead-letter queue"
    assert json.loads(found["Body"]) == event
    attrs = {k: v["StringValue"] for k, v in found["MessageAttributes"].items()}
    assert attrs["RULE_ARN"] == rule["arn"]
    assert attrs["TARGET_ARN"] == target["arn"]
    assert attrs["EXHAUSTED_RETRY_CONDITION"] == "MaximumRetryAttempts"
    assert attrs["RETRY_ATTEMPTS"] == str(retries)
    assert attrs["ERROR_CODE"] and "InternalFailure" in attrs["ERROR_MESSAGE"]
