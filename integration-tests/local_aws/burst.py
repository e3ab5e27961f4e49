"""A burst of GuardDuty findings on the local stack: seed a fleet, fire the findings, measure.

Shared by the scenario (``test_burst.py``) and ``make bench`` (``bench/local_stack.py``), so both
measure the same thing the same way:

- ``seed_fleet``: ``n`` running instances in one ``RunInstances`` call (the resource bucket holds
  1000 instances, the request bucket 5 requests: one call is how a fleet is launched, see
  ``ec2_throttling``), each with the seeded instance profile associated (one
  ``AssociateIamInstanceProfile`` per instance, a few threads), one interface and its root volume,
  no SSM, no Auto Scaling group, no target group: the lightest instance every containment measure
  still has something to do on.
- ``finding_events``: one GuardDuty finding event per instance, shaped as GuardDuty sends it to
  EventBridge (https://docs.aws.amazon.com/guardduty/latest/ug/guardduty_findings_eventbridge.html;
  ``detail`` with the fields of https://docs.aws.amazon.com/guardduty/latest/APIReference/API_Finding.html),
  the instance details read from the emulator in one DescribeInstances call.
- ``fire``: puts them on the local bus in one ``POST /_cordon/events``; the template's rule
  delivers them asynchronously, and ``wait_responses`` finds the executions that follow by their
  input, whatever the path (the rule's target, a queue and the dispatcher in front of the state
  machine).
- ``isolation_times``: when each interface was moved into the isolation group, from the request
  log (the successful ``ModifyNetworkInterfaceAttribute`` whose only group is ``cordon-isolation``).
"""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from .deploy import client
from .seed import SeedContext, SeededInstance, control

ISOLATION_GROUP = "cordon-isolation"
DETECTOR_ID = "12abc34d567e8fa901bc2d34e56789f0"
# Backdoor:EC2/C&CActivity.B!DNS, severity High (8):
# https://docs.aws.amazon.com/guardduty/latest/ug/guardduty_finding-types-ec2.html
C2_FINDING = "Backdoor:EC2/C&CActivity.B!DNS"
TERMINAL = {"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"}


def seed_fleet(ctx: SeedContext, n: int, name: str = "burst", subnet_index: int = 0) -> list[SeededInstance]:
    """``n`` running instances launched together into ``ctx``'s subnet, each with the instance
    profile of ``ctx`` associated."""
    ec2 = client("ec2", ctx.endpoint)
    launched = ec2.run_instances(
        ImageId=ctx.ami_id,
        InstanceType="t3.small",
        MinCount=n,
        MaxCount=n,
        KeyName=ctx.key_name,
        SubnetId=ctx.subnet_ids[subnet_index],
        SecurityGroupIds=[ctx.security_group_id],
        MetadataOptions={"HttpTokens": "required", "HttpEndpoint": "enabled"},
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": name}]}],
    )["Instances"]
    ids = [i["InstanceId"] for i in launched]
    ec2.get_waiter("instance_running").wait(
        Filters=[{"Name": "instance-id", "Values": ids}], WaiterConfig={"Delay": 1, "MaxAttempts": 30}
    )

    def associate(instance_id: str) -> str:
        return ec2.associate_iam_instance_profile(
            InstanceId=instance_id,
            IamInstanceProfile={"Arn": ctx.instance_profile_arn, "Name": ctx.instance_profile_name},
        )["IamInstanceProfileAssociation"]["AssociationId"]

    with ThreadPoolExecutor(8) as pool:
        associations = list(pool.map(associate, ids))
    described = {i["InstanceId"]: i for i in describe(ec2, ids)}
    return [
        SeededInstance(
            instance_id=iid,
            name=name,
            volume_ids=[m["Ebs"]["VolumeId"] for m in described[iid].get("BlockDeviceMappings", [])],
            network_interface_ids=[e["NetworkInterfaceId"] for e in described[iid].get("NetworkInterfaces", [])],
            association_id=assoc,
        )
        for iid, assoc in zip(ids, associations)
    ]


def describe(ec2: Any, instance_ids: list[str]) -> list[dict]:
    """The instances, in one filtered DescribeInstances (the larger non-mutating bucket)."""
    out = []
    for page in ec2.get_paginator("describe_instances").paginate(
        Filters=[{"Name": "instance-id", "Values": instance_ids}]
    ):
        out += [i for r in page["Reservations"] for i in r["Instances"]]
    return out


def _iso(t: datetime | None = None) -> str:
    return (t or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def finding_event(inst: dict, region: str, account: str = "123456789012", severity: float = 8) -> dict:
    """A GuardDuty ``Backdoor:EC2/C&CActivity.B!DNS`` finding on ``inst`` (a DescribeInstances item)."""
    instance_id = inst["InstanceId"]
    finding_id = uuid.uuid4().hex
    now = _iso()
    detail = {
        "schemaVersion": "2.0",
        "accountId": account,
        "region": region,
        "partition": "aws",
        "id": finding_id,
        "arn": f"arn:aws:guardduty:{region}:{account}:detector/{DETECTOR_ID}/finding/{finding_id}",
        "type": C2_FINDING,
        "resource": {
            "resourceType": "Instance",
            "instanceDetails": {
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
            },
        },
        "service": {
            "serviceName": "guardduty",
            "detectorId": DETECTOR_ID,
            "action": {
                "actionType": "DNS_REQUEST",
                "dnsRequestAction": {"domain": "guarddutyc2activityb.com", "protocol": "UDP", "blocked": False},
            },
            "resourceRole": "ACTOR",
            "eventFirstSeen": now,
            "eventLastSeen": now,
            "archived": False,
            "count": 1,
        },
        "severity": severity,
        "createdAt": now,
        "updatedAt": now,
        "title": f"Command and Control server domain name queried by EC2 instance {instance_id}.",
        "description": f"EC2 instance {instance_id} is querying a domain name associated with a known Command & Control server.",
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


def finding_events(endpoint: str, region: str, instance_ids: list[str]) -> list[dict]:
    ec2 = client("ec2", endpoint)
    by_id = {i["InstanceId"]: i for i in describe(ec2, instance_ids)}
    return [finding_event(by_id[i], region) for i in instance_ids]


def fire(control_url: str, events: list[dict]) -> list[dict]:
    """Puts the events on the local bus at once; ``[{"id", "rules"}]`` per event."""
    return control(control_url, "POST", "/events", events)["events"]


def wait_deliveries(control_url: str, event_ids: list[str], timeout: float = 120) -> list[dict]:
    """The deliveries of those events, once none of them is pending."""
    wanted = set(event_ids)
    deadline = time.monotonic() + timeout
    while True:
        deliveries = [d for d in control(control_url, "GET", "/events/deliveries")["deliveries"] if d["event_id"] in wanted]
        if deliveries and all(d["status"] != "pending" for d in deliveries) and {d["event_id"] for d in deliveries} == wanted:
            return deliveries
        if time.monotonic() > deadline:
            pending = [d for d in deliveries if d["status"] == "pending"]
            raise AssertionError(f"{len(pending)} deliveries still pending after {timeout}s")
        time.sleep(0.5)


class RequestTap:
    """Every request-log entry after ``since``, read as the run goes (the log keeps only the last
    20,000 requests, which a burst can outrun)."""

    def __init__(self, control_url: str, since: int) -> None:
        self.control_url = control_url
        self.since = since
        self.entries: list[dict] = []

    def poll(self) -> list[dict]:
        new = control(self.control_url, "GET", f"/requests?since={self.since}")["requests"]
        if new:
            if new[0]["seq"] > self.since + 1:
                raise AssertionError(f"request log entries {self.since + 1}..{new[0]['seq'] - 1} were dropped")
            self.entries += new
            self.since = new[-1]["seq"]
        return self.entries


def wait_responses(
    sfn: Any,
    state_machine_arn: str,
    instance_ids: list[str],
    since: float,
    timeout: float = 900,
    poll: float = 2.0,
    tap: RequestTap | None = None,
) -> dict[str, dict]:
    """Instance ID → DescribeExecution of the response to it, once every one has ended.

    The executions are found by their input (``instance_id``) among those started after
    ``since`` (epoch seconds), whatever started them: EventBridge directly, or a queue in front of
    the state machine that starts them as others end. Fails if an instance gets two.
    ``tap`` is read on every poll."""
    wanted = set(instance_ids)
    seen: dict[str, str | None] = {}  # execution ARN -> its instance, if one of ours
    found: dict[str, str] = {}  # instance -> execution ARN
    done: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    while True:
        if tap is not None:
            tap.poll()
        for page in sfn.get_paginator("list_executions").paginate(stateMachineArn=state_machine_arn):
            for e in page["executions"]:
                arn = e["executionArn"]
                if arn in seen or e["startDate"].timestamp() < since - 1:
                    continue
                desc = sfn.describe_execution(executionArn=arn)
                instance = json.loads(desc.get("input") or "{}").get("instance_id")
                seen[arn] = instance if instance in wanted else None
                if seen[arn]:
                    if instance in found:
                        raise AssertionError(f"two responses to {instance}: {found[instance]}, {arn}")
                    found[instance] = arn
        for instance, arn in found.items():
            if instance not in done:
                desc = sfn.describe_execution(executionArn=arn)
                if desc["status"] in TERMINAL:
                    done[instance] = desc
        if len(done) == len(wanted):
            return done
        if time.monotonic() > deadline:
            raise AssertionError(
                f"after {timeout}s: {len(found)} of {len(wanted)} responses started, {len(done)} ended"
            )
        time.sleep(poll)


def isolation_group_ids(ec2: Any) -> set[str]:
    groups = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [ISOLATION_GROUP]}])
    return {g["GroupId"] for g in groups["SecurityGroups"]}


def isolation_times(requests: list[dict], group_ids: set[str]) -> dict[str, float]:
    """Interface ID → epoch seconds at which it was last moved into an isolation group (the
    request's answer: arrival time plus duration), from request-log entries."""
    out: dict[str, float] = {}
    for r in requests:
        if r["service"] != "ec2" or r["action"] != "ModifyNetworkInterfaceAttribute" or r.get("status") != 200:
            continue
        p = r.get("params") or {}
        groups = {v for k, v in p.items() if k.startswith("SecurityGroupId.")}
        if not groups or not groups <= group_ids or not p.get("NetworkInterfaceId"):
            continue
        at = datetime.fromisoformat(r["time"]).timestamp() + (r.get("duration_ms") or 0) / 1000
        out[p["NetworkInterfaceId"]] = max(at, out.get(p["NetworkInterfaceId"], 0.0))
    return out


def throttled(requests: list[dict]) -> list[dict]:
    """The requests the EC2 throttling shim answered ``RequestLimitExceeded``."""
    return [r for r in requests if r.get("shim") == "Ec2ThrottlingShim" and r.get("status") == 503]


def mutating_ec2(requests: list[dict]) -> list[dict]:
    """The step functions' mutating EC2 calls (actions that are not Describe/Get/List/Search)."""
    return [
        r
        for r in requests
        if r["service"] == "ec2"
        and (r.get("principal") or "").startswith("function:")
        and not r["action"].startswith(("Describe", "Get", "List", "Search"))
    ]

