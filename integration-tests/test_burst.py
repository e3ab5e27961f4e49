"""A storm of findings: 50 GuardDuty findings at once, under EC2's request throttling.

Fifty instances of one fleet are found talking to a command-and-control domain at the same
moment. GuardDuty sends 50 findings; the template's rule starts 50 executions; every step of every
execution calls EC2 in the same account and Region, whose request token buckets
(``local_aws/ec2_throttling.py``, as "Request throttling for the Amazon EC2 API" documents them)
answer ``RequestLimitExceeded`` once a bucket is empty. The buckets are scaled down here so that
the local stack, much slower than EC2, still runs them dry: the scenario asserts that it did, that
every instance got exactly one response (through whatever the rule's path holds: a queue in front
of the state machine lets a bounded number run at once) and that every execution succeeded anyway (none failed by throttling), and reads back from the emulator
that all 50 are contained: every interface in the isolation group only, no instance profile
associated, termination protection on.

Slow (several minutes on two cores); ``make test`` runs it like every other scenario.
"""

from __future__ import annotations

import collections
import json
import time
import uuid

import pytest

from local_aws import burst
from local_aws.seed import seed_vpc

N = 50
# Capacities at a tenth, refill at half the documented values: the first calls of the burst empty
# the buckets at once (mutating: 5 requests instead of 50) and the refill (2.5 per second instead
# of 5) stays below what 50 concurrent responses ask even on the local stack, so every step meets
# RequestLimitExceeded and has to wait for refill tokens, as it would on EC2.
THROTTLING = {"enabled": True, "capacity_scale": 0.1, "refill_scale": 0.5}


def guardduty_rule_name(stack) -> str:
    (rule,) = [
        r for r in stack.control("/events/rules")["rules"] if "aws.guardduty" in r["event_pattern"].get("source", [])
    ]
    return rule["name"]


@pytest.mark.slow
def test_a_burst_of_50_findings_contains_every_instance_under_ec2_throttling(stack):
    stack.control("/ec2/throttling", method="DELETE")  # the documented buckets, full, for the seeding
    # A VPC of the burst's own (NAT layout, as production VPCs have): its isolation and flush groups
    # are created by the burst itself, concurrently, as for the first incidents of a VPC.
    ctx = seed_vpc(stack.context, f"burst-{uuid.uuid4().hex[:6]}", ipv6=False, private_acl=False)
    fleet = burst.seed_fleet(ctx, N)
    ids = [f.instance_id for f in fleet]
    assert len(set(ids)) == N
    events = burst.finding_events(stack.endpoint, stack.region, ids)
    rule = guardduty_rule_name(stack)
    tap = burst.RequestTap(stack.control_url, stack.last_request_seq())

    stack.control("/ec2/throttling", THROTTLING)
    try:
        t0 = time.time()
        put = burst.fire(stack.control_url, events)
        assert [p["rules"] for p in put] == [[rule]] * N
        deliveries = burst.wait_deliveries(stack.control_url, [p["id"] for p in put], timeout=300)
        assert collections.Counter(d["status"] for d in deliveries) == {"delivered": N}, deliveries
        done = burst.wait_responses(stack.sfn, stack.state_machine_arn, ids, since=t0, timeout=900, tap=tap)
        buckets = stack.control("/ec2/throttling")
    finally:
        stack.control("/ec2/throttling", method="DELETE")
    requests = tap.poll()

    # Throttling really happened, to the steps themselves.
    throttled = [r for r in burst.throttled(requests) if (r.get("principal") or "").startswith("function:")]
    by_call = collections.Counter((r["principal"], r["action"]) for r in throttled)
    assert throttled, "no step was answered RequestLimitExceeded: the buckets were never empty"
    assert buckets["throttled"] >= len(throttled)

    # No execution failed, by throttling or otherwise.
    failed = {i: (d.get("error"), (d.get("cause") or "")[:300]) for i, d in done.items() if d["status"] != "SUCCEEDED"}
    assert not failed, f"{len(failed)} of {N} executions failed ({len(throttled)} throttled calls {by_call}): {failed}"
    outcomes = collections.Counter(json.loads(d.get("output") or "{}").get("outcome") for d in done.values())
    assert outcomes == {"contained": N}, outcomes

    # Contained, as EC2 reports it.
    isolation = stack.ec2.describe_security_groups(
        Filters=[{"Name": "vpc-id", "Values": [ctx.vpc_id]}, {"Name": "group-name", "Values": [burst.ISOLATION_GROUP]}]
    )["SecurityGroups"]
    assert len(isolation) == 1, "the concurrent responses share one isolation group per VPC"
    isolation_id = isolation[0]["GroupId"]
    interfaces = stack.ec2.describe_network_interfaces(
        Filters=[{"Name": "attachment.instance-id", "Values": ids}]
    )["NetworkInterfaces"]
    by_instance = collections.defaultdict(list)
    for eni in interfaces:
        by_instance[eni["Attachment"]["InstanceId"]].append([g["GroupId"] for g in eni["Groups"]])
    assert set(by_instance) == set(ids)
    open_interfaces = {i: groups for i, groups in by_instance.items() if any(g != [isolation_id] for g in groups)}
    assert not open_interfaces, open_interfaces
    associations = stack.ec2.describe_iam_instance_profile_associations(
        Filters=[{"Name": "instance-id", "Values": ids}]
    )["IamInstanceProfileAssociations"]
    still = [a for a in associations if a["State"] in ("associating", "associated")]
    assert not still, f"instance profiles still associated: {still}"
    unprotected = [
        i
        for i in ids
        if not stack.ec2.describe_instance_attribute(InstanceId=i, Attribute="disableApiTermination")[
            "DisableApiTermination"
        ]["Value"]
    ]
    assert not unprotected, unprotected

    # What the burst cost and how long it took, for the log (make bench reports the same figures).
    isolated_at = burst.isolation_times(requests, {isolation_id})
    enis = [e["NetworkInterfaceId"] for e in interfaces]
    assert all(e in isolated_at for e in enis), "every interface's move into isolation is in the request log"
    mutating = burst.mutating_ec2(requests)
    print(
        f"\nburst of {N}: last interface isolated {max(isolated_at[e] for e in enis) - t0:.1f} s after the first "
        f"finding; {len(throttled)} steps' EC2 calls throttled {dict(by_call.most_common(6))}; "
        f"mutating EC2 calls per instance {sum(1 for r in mutating if r['status'] < 400) / N:.1f} answered, "
        f"{len(mutating) / N:.1f} attempted"
    )
