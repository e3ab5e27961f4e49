"""Redrive scenarios: a final failure at every containment state, then the cause fixed and the
same execution redriven (issue 13).

For each state where a containment step's final error fails the execution (``local_aws.failures``):
the fault injected, the execution FAILED at that state with that error, every other containment
measure applied (read back from the emulator), exactly one CONTAINMENT FAILED message naming the
state (announced from outside the execution: status-change event, rule, notify); then the fault
removed, RedriveExecution, SUCCEEDED, the happy path's end state (``assert_contained``), nothing
made twice (snapshots, security groups, network ACL rules, revocation statements, evidence object
versions) and exactly one CONTAINED message. Plus: a failed snapshot in the Parallel evidence
branch is a gap, not a failure; an aborted execution is announced as aborted and redrives; a
rejected request is announced once and a redrive of it fails again changing nothing.

The scenarios run concurrently (one seeded instance each, ``CORDON_REDRIVE_THREADS`` at a time)
in a module fixture, which also makes them a small burst of simultaneous incidents; each test
reports its own scenario's outcome. Only the scenarios of the selected tests run.
"""

from __future__ import annotations

import collections
import concurrent.futures
import copy
import json
import os
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

import pytest

from local_aws.failures import FAILURES, FinalFailure, Injection, Target, find
from local_aws.seed import seed_vpc
from test_incident_response import (
    assert_contained,
    attribute,
    failed_event,
    incident_id,
    incident_snapshots,
    seed_exposed,
    states_entered,
)

THREADS = int(os.environ.get("CORDON_REDRIVE_THREADS", "16"))  # all at once
ROLE = "app-server"  # the seeded instances' profile role (local_aws.seed)
MEASURES = ("network", "profile_removed", "credentials_revoked", "snapshots", "protection")
# The containment measures each "final attempt" state applies (credentials: the profile is
# disassociated, then the credentials it issued are revoked).
MEASURES_OF = {
    "Quarantine network: final attempt": ("network",),
    "Remove instance profile: final attempt": ("profile_removed", "credentials_revoked"),
    "Protect from termination: final attempt": ("protection",),
}
READ_ONLY = ("Describe", "Get", "List", "Head")
STATEFUL_SERVICES = {"ec2", "iam", "s3", "sns", "autoscaling", "elasticloadbalancing", "elbv2", "ssm"}


# ------------------------------------------------------------------ helpers


class Mailbox:
    """The topic's tap queue, drained for every scenario at once (concurrent scenarios must not
    take each other's messages)."""

    def __init__(self, stack) -> None:
        self.stack, self.lock, self.messages = stack, threading.Lock(), []

    def about(self, attribute_name: str, value: str) -> list[dict]:
        with self.lock:
            while got := self.stack.sqs.receive_message(
                QueueUrl=self.stack.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            ).get("Messages", []):
                for m in got:
                    self.messages.append(json.loads(m["Body"]))
                    self.stack.sqs.delete_message(QueueUrl=self.stack.queue_url, ReceiptHandle=m["ReceiptHandle"])
            return [
                m
                for m in self.messages
                if m.get("MessageAttributes", {}).get(attribute_name, {}).get("Value") == value
            ]


def subjects(messages: list[dict]) -> list[str]:
    return [m["Subject"] for m in messages]


def history(stack, arn: str) -> list[dict]:
    events, token = [], None
    while True:
        page = stack.sfn.get_execution_history(executionArn=arn, maxResults=1000, **({"nextToken": token} if token else {}))
        events += page["events"]
        token = page.get("nextToken")
        if not token:
            return sorted(events, key=lambda e: e["id"])


def wait_stopped(stack, arn: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while (desc := stack.sfn.describe_execution(executionArn=arn))["status"] == "RUNNING":
        assert time.monotonic() < deadline, f"{arn} still RUNNING after {timeout}s"
        time.sleep(0.25)
    return desc


def start(stack, request: dict, name: str) -> str:
    return stack.sfn.start_execution(stateMachineArn=stack.state_machine_arn, name=name, input=json.dumps(request))[
        "executionArn"
    ]


def after_redrive(events: list[dict]) -> list[dict]:
    redriven = [e["id"] for e in events if e["type"] == "ExecutionRedriven"]
    assert redriven, "no ExecutionRedriven event"
    return [e for e in events if e["id"] > redriven[-1]]


def announced(stack, arn: str, status: str, redrive_count: int, timeout: float = 120) -> list[dict]:
    """Waits until the status-change event of this attempt was emitted and every rule delivery of
    it has ended (notify has published, or failed for good); returns the deliveries."""
    deadline = time.monotonic() + timeout
    query = urllib.parse.urlencode({"execution_arn": arn, "status": status})
    while True:
        events = [
            e for e in stack.control(f"/sfn/status-events?{query}")["events"] if e["detail"]["redriveCount"] == redrive_count
        ]
        deliveries = [d for e in events for d in stack.control(f"/events/deliveries?event_id={e['id']}")["deliveries"]]
        if deliveries and all(d["status"] != "pending" for d in deliveries):
            return deliveries
        assert time.monotonic() < deadline, (status, redrive_count, events, deliveries)
        time.sleep(0.25)


def failure_record(stack, incident: str, iid: str, attempt: int, outcome: str, timeout: float = 120) -> dict:
    """notify's de-duplication record of one announced attempt, once written. The rule invokes
    notify asynchronously (a delivery ends when Lambda accepts the event), and notify writes the
    record right after publishing: once it is there, the message is on the queue."""
    key = f"{incident}/{iid}/notifications/{incident}.attempt-{attempt}.{outcome}.json"
    deadline = time.monotonic() + timeout
    while True:
        try:
            return json.loads(stack.get_object(key)[0])
        except stack.s3.exceptions.NoSuchKey:
            assert time.monotonic() < deadline, f"{key} not written within {timeout}s"
            time.sleep(0.25)


def history_read_by_notify(stack, arn: str, since: int, timeout: float = 120) -> None:
    """Waits until notify has read the execution's history (what it does before deciding to stay
    silent), then a moment more."""
    deadline = time.monotonic() + timeout
    while not [
        r
        for r in stack.requests(action="GetExecutionHistory", since=since)
        if r.get("principal") == "function:cordon-notify" and arn in json.dumps(r.get("params"))
    ]:
        assert time.monotonic() < deadline, f"notify did not read {arn} within {timeout}s"
        time.sleep(0.25)
    time.sleep(1)


def describe(stack, iid: str) -> dict:
    return stack.ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]


def revocation_list(stack) -> list[str]:
    """The instance ARNs in Cordon's revocation policy on the seeded role (detach-profile's revoke.rs),
    fully denied or denied all but the agent's channel."""
    try:
        doc = stack.iam.get_role_policy(RoleName=ROLE, PolicyName="cordon-revoke")["PolicyDocument"]
    except stack.iam.exceptions.NoSuchEntityException:
        return []
    doc = json.loads(doc) if isinstance(doc, str) else doc
    sids = [s.get("Sid") for s in doc["Statement"]]
    assert len(sids) == len(set(sids)), f"a revocation statement twice: {sids}"
    arns = []
    for s in doc["Statement"]:
        # Revoked either fully or, while a collection is to come, all but the SSM agent's channel.
        if s.get("Sid") in ("CordonRevokeInstanceCredentials", "CordonRevokeExceptCollectionChannel"):
            listed = s["Condition"]["StringEquals"]["ec2:SourceInstanceARN"]
            arns += [listed] if isinstance(listed, str) else listed
    return arns


def instance_arn(iid: str) -> str:
    return f"arn:aws:ec2:us-east-1:123456789012:instance/{iid}"


def measures(stack, inst, incident: str) -> dict[str, bool]:
    """Which containment measures are in place, read back from the emulator."""
    iid = inst.instance_id
    desc = describe(stack, iid)
    iso = [
        g["GroupId"]
        for g in stack.ec2.describe_security_groups(
            Filters=[{"Name": "vpc-id", "Values": [desc["VpcId"]]}, {"Name": "group-name", "Values": ["cordon-isolation"]}]
        )["SecurityGroups"]
    ]
    enis = stack.ec2.describe_network_interfaces(Filters=[{"Name": "attachment.instance-id", "Values": [iid]}])[
        "NetworkInterfaces"
    ]
    assocs = [
        a
        for a in stack.ec2.describe_iam_instance_profile_associations(Filters=[{"Name": "instance-id", "Values": [iid]}])[
            "IamInstanceProfileAssociations"
        ]
        if a["State"] in ("associated", "associating")
    ]
    return {
        "network": len(iso) == 1 and bool(enis) and all([g["GroupId"] for g in e["Groups"]] == iso for e in enis),
        "profile_removed": not assocs,
        "credentials_revoked": instance_arn(iid) in revocation_list(stack),
        "snapshots": sorted(s["VolumeId"] for s in incident_snapshots(stack, incident, iid)) == sorted(inst.volume_ids),
        "protection": attribute(stack, iid, "disableApiTermination") is True
        and attribute(stack, iid, "instanceInitiatedShutdownBehavior") == "stop"
        and all(not b["Ebs"]["DeleteOnTermination"] for b in desc["BlockDeviceMappings"]),
        "metadata": desc["MetadataOptions"]["HttpEndpoint"] == "disabled",
        "stopped": desc["State"]["Name"] in ("stopping", "stopped"),
    }


def footprint(stack, inst, incident: str) -> dict:
    """Everything a response creates that a rerun must not create again."""
    iid = inst.instance_id
    desc = describe(stack, iid)
    vpc = desc["VpcId"]
    groups = [
        g["GroupName"]
        for g in stack.ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["SecurityGroups"]
        if g["GroupName"].startswith("cordon-")
    ]
    addresses = set()
    for eni in desc["NetworkInterfaces"]:
        addresses |= {f"{a['PrivateIpAddress']}/32" for a in eni.get("PrivateIpAddresses", [])}
        addresses |= {f"{a['Ipv6Address']}/128" for a in eni.get("Ipv6Addresses", [])}
    acl_rules = [
        (acl["NetworkAclId"], e["Egress"], e.get("CidrBlock") or e.get("Ipv6CidrBlock"), e["RuleAction"], e["Protocol"])
        for acl in stack.ec2.describe_network_acls(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["NetworkAcls"]
        for e in acl["Entries"]
        if (e.get("CidrBlock") or e.get("Ipv6CidrBlock")) in addresses
    ]
    versions: dict[str, list[str]] = collections.defaultdict(list)
    for page in stack.s3.get_paginator("list_object_versions").paginate(Bucket=stack.bucket, Prefix=f"{incident}/"):
        for v in page.get("Versions", []):
            versions[v["Key"]].append(v["VersionId"])
        for m in page.get("DeleteMarkers", []):
            versions[m["Key"]].append(f"delete-marker {m['VersionId']}")
    return {
        "snapshots": sorted(s["SnapshotId"] for s in incident_snapshots(stack, incident, iid)),
        "groups": groups,
        "acl_rules": acl_rules,
        "revocations": revocation_list(stack).count(instance_arn(iid)),
        "objects": dict(versions),
    }


def assert_nothing_twice(before: dict, after: dict, inst, incident: str, execution: str) -> None:
    """After the redrive: what existed is unchanged, and nothing was made twice."""
    if before["snapshots"]:
        assert after["snapshots"] == before["snapshots"], "snapshots taken again"
    assert len(after["snapshots"]) == len(inst.volume_ids), after["snapshots"]
    twice = [n for n, k in collections.Counter(after["groups"]).items() if k > 1]
    assert twice == [], f"security groups made twice: {twice}"
    # Deny rules stay; the collection path's allow rules (TCP, "allow") are removed when it closes.
    denies = {r for r in before["acl_rules"] if r[3] == "deny"}
    assert denies <= set(after["acl_rules"]), "a network ACL deny rule was removed"
    same_rule = collections.Counter((acl, egress, cidr) for acl, egress, cidr, _, _ in after["acl_rules"])
    assert [r for r, k in same_rule.items() if k > 1] == [], f"network ACL rules made twice: {after['acl_rules']}"
    assert after["revocations"] == 1, f"the instance is listed {after['revocations']} times in the revocation policy"
    for key, versions in before["objects"].items():
        assert after["objects"].get(key) == versions, f"evidence object {key} written again: {after['objects'].get(key)}"
    assert [k for k, v in after["objects"].items() if len(v) != 1] == [], "an evidence object has more than one version"
    prefix = f"{incident}/{inst.instance_id}/"
    new = {k.removeprefix(prefix) for k in set(after["objects"]) - set(before["objects"])}
    allowed = {
        "metadata.json",
        "pre-incident-state.json",
        "console-screenshot.jpg",
        "console-output.txt",
        "manifest.json",
        f"notifications/{execution}.json",
    }
    assert {k for k in new if not k.startswith("ssm/")} <= allowed, sorted(new)
    assert not [k for k in after["objects"] if "/manifest-" in k], "a second manifest"
    commands = {k.removeprefix(prefix).split("/")[1] for k in after["objects"] if k.startswith(prefix + "ssm/")}
    assert len(commands) <= 1, f"collected twice: {commands}"


def mutating_calls(stack, since: int, about: tuple[str, ...], but: tuple[str, ...] = ()) -> list[tuple]:
    """Changing calls that mention one of ``about`` (an instance, an incident: other scenarios run
    at the same time) made by a deployed principal (a step, the state machine, a rule's role),
    except those of the principals in ``but``."""
    return [
        (r.get("principal"), r["service"], r["action"], r["path"])
        for r in stack.requests(since=since)
        if r.get("principal")
        and r["principal"] not in but
        and r["service"] in STATEFUL_SERVICES
        and not r["action"].startswith(READ_ONLY)
        and any(a in r["path"] or a in json.dumps(r.get("params")) for a in about)
    ]


# ------------------------------------------------------------------ scenarios


def final_failure(stack, mail: Mailbox, failure: FinalFailure, inst) -> None:
    iid = inst.instance_id
    incident = incident_id()
    request = {"instance_id": iid, "incident_id": incident, "reason": f"redrive scenario: {failure.state}"}
    if failure.options:
        request["options"] = dict(failure.options)
    injection = Injection(stack.control_url, failure, Target.read(stack.ec2, iid, incident), stack.ec2)
    since = stack.last_request_seq()
    injection.inject()
    try:
        arn = start(stack, request, incident)
        desc = wait_stopped(stack, arn)
    finally:
        injection.remove()  # read back and redrive without it: the cause is fixed

    # Failed at its own state, with the step's error, never in a Fail state.
    events = history(stack, arn)
    assert desc["status"] == "FAILED", desc
    assert (desc["error"], failed_event(events)["error"]) == (failure.error, failure.error), failed_event(events)
    entered = states_entered(events)
    assert entered[-1] == failure.state, entered
    assert not [e for e in events if e["type"] == "FailStateEntered"]
    if failure.reassociate:
        assert injection.reassociated, "the profile was not associated again"

    # Every other containment measure was applied (nothing at all for "Record metadata", which
    # fails before anything is changed: ARCHITECTURE.md, "A failure to record metadata").
    applied = measures(stack, inst, incident)
    if failure.state == "Record metadata":
        expected = dict.fromkeys(applied, False)
        # (notify's own writes are the failure announcement, made from outside the execution)
        assert mutating_calls(stack, since, (iid, incident), but=("function:cordon-notify",)) == [], "nothing may have changed"
    else:
        expected = {m: m not in MEASURES_OF.get(failure.state, ()) for m in MEASURES}
        expected["metadata"] = failure.state in ("Stop instance", "Announce containment")
        expected["stopped"] = False
    assert applied == expected, (failure.state, applied)

    # Announced once, from outside, naming the state and its error, with the redrive command.
    deliveries = announced(stack, arn, "FAILED", 0)
    assert [d["status"] for d in deliveries] == ["delivered"] * len(deliveries), deliveries
    record = failure_record(stack, incident, iid, 0, "containment-failed")
    messages = mail.about("instance_id", iid)
    assert subjects(messages) == [f"[Cordon] {iid} CONTAINMENT FAILED"], subjects(messages)
    assert messages[0]["MessageId"] == record["message_id"]
    assert (record["failed_state"], record["error"]) == (failure.state, failure.error), record
    body = messages[0]["Message"]
    for needle in (
        f"Failed state: {failure.state}\n",
        f"Error:        {failure.error}\n",
        f"aws stepfunctions redrive-execution --execution-arn {arn}",
    ):
        assert needle in body, (needle, body)
    before = footprint(stack, inst, incident)
    assert f"{incident}/{iid}/notifications/{incident}.attempt-0.containment-failed.json" in before["objects"]

    # The cause fixed: redrive. It resumes at the failed state; what succeeded is not rerun.
    stack.sfn.redrive_execution(executionArn=arn)
    desc = wait_stopped(stack, arn)
    events = history(stack, arn)
    assert desc["status"] == "SUCCEEDED", (desc, failed_event(events) if desc["status"] == "FAILED" else None)
    assert desc.get("redriveCount") == 1, desc
    rerun = states_entered(after_redrive(events))
    assert rerun[0] == failure.state, rerun
    if failure.state != "Record metadata":
        assert "Contain" not in rerun and "Record metadata" not in rerun, rerun

    # The happy path's end state, nothing made twice, one all-clear.
    assert_contained(stack, inst, incident, ssm_collected=True if failure.ssm else False)
    assert measures(stack, inst, incident) == {
        **dict.fromkeys(MEASURES, True),
        "metadata": True,
        "stopped": bool(failure.options.get("stop_after_evidence")),
    }
    assert_nothing_twice(before, footprint(stack, inst, incident), inst, incident, incident)
    time.sleep(1)  # nothing else is on its way
    assert subjects(mail.about("instance_id", iid)) == [
        f"[Cordon] {iid} CONTAINMENT FAILED",
        f"[Cordon] {iid} CONTAINED",
    ]


def snapshot_gap(stack, mail: Mailbox, inst) -> None:
    """CreateSnapshots (and the per-volume CreateSnapshot) denied: a gap in the evidence, not a
    failure; every containment measure is applied and the all-clear names the gap."""
    iid = inst.instance_id
    incident = incident_id()
    denied = {"service": "ec2", "code": "UnauthorizedOperation", "status": 403, "count": -1, "instance_id": iid}
    ids = stack.control("/faults", [{**denied, "action": "CreateSnapshots"}, {**denied, "action": "CreateSnapshot"}])["rules"]
    try:
        arn = start(stack, {"instance_id": iid, "incident_id": incident}, incident)
        desc = wait_stopped(stack, arn)
    finally:
        stack.control("/faults?" + "&".join(f"id={i}" for i in ids), method="DELETE")
    events = history(stack, arn)
    assert desc["status"] == "SUCCEEDED", (desc, failed_event(events) if desc["status"] == "FAILED" else None)
    assert "Record snapshot gap" in states_entered(events)
    assert measures(stack, inst, incident) == {
        **dict.fromkeys(MEASURES, True), "snapshots": False, "metadata": True, "stopped": False
    }
    assert incident_snapshots(stack, incident, iid) == []
    time.sleep(1)
    messages = mail.about("instance_id", iid)
    assert subjects(messages) == [f"[Cordon] {iid} CONTAINED"], subjects(messages)
    assert "EBS snapshots (snapshot):" in messages[0]["Message"], messages[0]["Message"]
    assert any(g.startswith("EBS snapshots") for g in json.loads(desc["output"])["gaps"]), desc["output"]
    assert stack.control(f"/sfn/status-events?{urllib.parse.urlencode({'execution_arn': arn, 'status': 'FAILED'})}")["events"] == []


def aborted(stack, mail: Mailbox, inst) -> None:
    """StopExecution while the collection runs (it hangs): announced as RESPONSE ABORTED; the
    responder cancels the hanging command and redrives; the response finishes with a gap."""
    iid = inst.instance_id
    incident = incident_id()
    stack.control("/ssm/behaviour", {"instance_id": iid, "mode": "hang"})
    try:
        arn = start(stack, {"instance_id": iid, "incident_id": incident}, incident)
        deadline = time.monotonic() + 240
        while states_entered(history(stack, arn)).count("Check collection") < 2:
            assert stack.sfn.describe_execution(executionArn=arn)["status"] == "RUNNING"
            assert time.monotonic() < deadline, "the collection was never polled"
            time.sleep(0.25)
        stack.sfn.stop_execution(executionArn=arn, error="Responder.Stopped", cause="collection hangs; stopped to look")
        desc = wait_stopped(stack, arn)
    finally:
        stack.control("/ssm/behaviour", {"instance_id": iid}, method="DELETE")
    assert desc["status"] == "ABORTED", desc
    deliveries = announced(stack, arn, "ABORTED", 0)
    assert [d["status"] for d in deliveries] == ["delivered"] * len(deliveries), deliveries
    record = failure_record(stack, incident, iid, 0, "aborted")
    assert record["outcome"] == "aborted" and record["failed_state"], record
    messages = mail.about("instance_id", iid)
    assert subjects(messages) == [f"[Cordon] {iid} RESPONSE ABORTED"], subjects(messages)
    assert f"aws stepfunctions redrive-execution --execution-arn {arn}" in messages[0]["Message"]
    before = footprint(stack, inst, incident)

    [command] = [c for c in stack.ssm.list_commands(InstanceId=iid)["Commands"] if c["Status"] in ("Pending", "InProgress")]
    stack.ssm.cancel_command(CommandId=command["CommandId"], InstanceIds=[iid])
    stack.sfn.redrive_execution(executionArn=arn)
    desc = wait_stopped(stack, arn)
    events = history(stack, arn)
    assert desc["status"] == "SUCCEEDED", (desc, failed_event(events) if desc["status"] == "FAILED" else None)
    rerun = states_entered(after_redrive(events))
    assert rerun[0] in ("Wait for collection", "Check collection", "Collection finished?"), rerun
    assert "Send collection" not in rerun and "Contain" not in rerun, rerun
    assert "Close collection path" in rerun and "Remove forensic profile" in rerun, rerun
    assert_contained(stack, inst, incident, ssm_collected=None)
    assert_nothing_twice(before, footprint(stack, inst, incident), inst, incident, incident)
    assert len(stack.ssm.list_commands(InstanceId=iid)["Commands"]) == 1, "the collection was sent again"
    time.sleep(1)
    assert subjects(mail.about("instance_id", iid)) == [f"[Cordon] {iid} RESPONSE ABORTED", f"[Cordon] {iid} CONTAINED"]


def rejected(stack, mail: Mailbox) -> None:
    """InvalidInput: announced once as REQUEST REJECTED (not again as CONTAINMENT FAILED); a
    redrive enters "Request rejected" again, fails, announces nothing and changes nothing."""
    name = f"bad-{uuid.uuid4().hex[:8]}"
    since = stack.last_request_seq()
    arn = start(stack, {"instance_id": "i-xyz"}, name)
    desc = wait_stopped(stack, arn)
    assert (desc["status"], desc.get("error")) == ("FAILED", "InvalidInput"), desc
    assert states_entered(history(stack, arn))[-1] == "Request rejected"
    deliveries = announced(stack, arn, "FAILED", 0)
    assert [d["status"] for d in deliveries] == ["delivered"] * len(deliveries), deliveries
    history_read_by_notify(stack, arn, since)
    assert subjects(mail.about("incident_id", name)) == ["[Cordon] (invalid request) REQUEST REJECTED"]

    since = stack.last_request_seq()
    stack.sfn.redrive_execution(executionArn=arn)
    desc = wait_stopped(stack, arn)
    assert (desc["status"], desc.get("error"), desc.get("redriveCount")) == ("FAILED", "InvalidInput", 1), desc
    assert states_entered(after_redrive(history(stack, arn))) == ["Request rejected"]
    announced(stack, arn, "FAILED", 1)
    history_read_by_notify(stack, arn, since)
    assert mutating_calls(stack, since, (name, "i-xyz")) == []
    assert subjects(mail.about("incident_id", name)) == ["[Cordon] (invalid request) REQUEST REJECTED"]


def failed_again(stack, mail: Mailbox, inst) -> None:
    """A redrive before the cause is fixed fails again at the same state and is announced again,
    once, as attempt 1; the redrive after the fix ends with one CONTAINED."""
    iid = inst.instance_id
    incident = incident_id()
    failure = find("Protect from termination")
    injection = Injection(stack.control_url, failure, Target.read(stack.ec2, iid, incident), stack.ec2)
    with injection:
        arn = start(stack, {"instance_id": iid, "incident_id": incident}, incident)
        assert wait_stopped(stack, arn)["status"] == "FAILED"
        failure_record(stack, incident, iid, 0, "containment-failed")
        stack.sfn.redrive_execution(executionArn=arn)
        desc = wait_stopped(stack, arn)
        assert (desc["status"], desc.get("error"), desc.get("redriveCount")) == ("FAILED", failure.error, 1), desc
        assert states_entered(after_redrive(history(stack, arn))) == [failure.state]
        record = failure_record(stack, incident, iid, 1, "containment-failed")
    assert (record["attempt"], record["failed_state"]) == (1, failure.state), record
    messages = mail.about("instance_id", iid)
    assert subjects(messages) == [f"[Cordon] {iid} CONTAINMENT FAILED"] * 2, subjects(messages)
    assert "Attempt:      0 (redrive count)" in messages[0]["Message"]
    assert "Attempt:      1 (redrive count)" in messages[1]["Message"]

    stack.sfn.redrive_execution(executionArn=arn)
    desc = wait_stopped(stack, arn)
    assert (desc["status"], desc.get("redriveCount")) == ("SUCCEEDED", 2), desc
    assert_contained(stack, inst, incident, ssm_collected=False)
    time.sleep(1)
    assert subjects(mail.about("instance_id", iid)) == [f"[Cordon] {iid} CONTAINMENT FAILED"] * 2 + [
        f"[Cordon] {iid} CONTAINED"
    ]


def new_incident_instead(stack, mail: Mailbox, inst) -> None:
    """What the README's recovery section says not to do: after a failure, a new response for the
    same instance instead of a redrive. The same incident id is refused; a new one runs a second,
    separate response that does not resume the first."""
    iid = inst.instance_id
    first, second = incident_id(), incident_id()
    failure = find("Quarantine network")
    request = {"instance_id": iid, "incident_id": first}
    with Injection(stack.control_url, failure, Target.read(stack.ec2, iid, first), stack.ec2):
        arn = start(stack, request, first)
        assert wait_stopped(stack, arn)["status"] == "FAILED"
    failure_record(stack, first, iid, 0, "containment-failed")
    with pytest.raises(stack.sfn.exceptions.ExecutionAlreadyExists):
        start(stack, request, first)
    first_snapshots = incident_snapshots(stack, first, iid)

    desc = wait_stopped(stack, start(stack, {"instance_id": iid, "incident_id": second}, second))
    assert desc["status"] == "SUCCEEDED", desc
    assert_contained(stack, inst, second, ssm_collected=False)
    first_desc = stack.sfn.describe_execution(executionArn=arn)
    assert (first_desc["status"], first_desc.get("redriveCount", 0)) == ("FAILED", 0), first_desc
    prefix = f"{first}/{iid}/"
    assert prefix + "manifest.json" not in {o["Key"] for o in stack.objects_under(prefix)}
    # Its own evidence, including a second set of snapshots of the same volumes.
    assert len(first_snapshots) == len(inst.volume_ids)
    assert len(incident_snapshots(stack, second, iid)) == len(inst.volume_ids)
    time.sleep(1)
    messages = mail.about("instance_id", iid)
    assert [(m["Subject"], m["MessageAttributes"]["incident_id"]["Value"]) for m in messages] == [
        (f"[Cordon] {iid} CONTAINMENT FAILED", first),
        (f"[Cordon] {iid} CONTAINED", second),
    ]


# ------------------------------------------------------------------ running them


def _scenario_key(item) -> str:
    callspec = getattr(item, "callspec", None)
    return callspec.params["state"] if callspec else item.originalname


# The other scenarios, by test name: the scenario and the seed options of its instance (None:
# it needs none).
SCENARIOS = {
    "test_a_failed_snapshot_in_the_parallel_evidence_branch_is_a_gap_not_a_failure": (snapshot_gap, {"ssm": False}),
    "test_an_aborted_execution_is_announced_as_aborted_and_redrives": (aborted, {"ssm": True}),
    "test_a_redrive_that_fails_again_is_announced_again_once_then_the_next_one_contains": (failed_again, {"ssm": False}),
    "test_a_new_incident_instead_of_a_redrive_is_a_second_response_and_the_first_stays_failed": (
        new_incident_instead,
        {"ssm": False},
    ),
    "test_a_rejected_request_is_announced_once_and_its_redrive_fails_again_changing_nothing": (rejected, None),
}


@pytest.fixture(scope="module")
def outcomes(stack, request):
    """Runs the selected scenarios concurrently; each test then reports its own.

    The instances live in a VPC of their own (``seed.seed_vpc``), whose network ACLs get the deny
    rules of these responses and nobody else's, with the "Rules per network ACL" quota raised to
    its maximum, 40, for the module (two addresses per instance, a dozen instances), as a Service
    Quotas increase would (https://docs.aws.amazon.com/vpc/latest/userguide/amazon-vpc-limits.html#vpc-limits-nacls)."""
    wanted = {_scenario_key(i) for i in request.session.items if i.module is request.module}
    stack.control("/scenario", {"scenario": f"{request.module.__name__}.py (concurrent scenarios)"})
    quota = stack.control("/ec2/network-acl-quota")["rules_per_acl"]
    stack.control("/ec2/network-acl-quota", {"rules_per_acl": 40})
    here = copy.copy(stack)  # the same stack, seeding into the module's VPC
    here.context = seed_vpc(stack.context, f"redrive-{uuid.uuid4().hex[:6]}", ipv6=False)
    mail = Mailbox(stack)
    jobs = {}
    try:
        for f in FAILURES:  # seeded one after the other, run together
            if f.state in wanted:
                inst = seed_exposed(here, name=f"redrive-{len(jobs)}", ssm=f.ssm, subnet_index=len(jobs) % 2)
                jobs[f.state] = (final_failure, (stack, mail, f, inst))
        for name, (scenario, seed) in SCENARIOS.items():
            if name in wanted:
                extra = () if seed is None else (seed_exposed(here, name=f"redrive-{len(jobs)}", **seed),)
                jobs[name] = (scenario, (stack, mail, *extra))
        with concurrent.futures.ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="scenario") as pool:
            futures = {key: pool.submit(fn, *args) for key, (fn, args) in jobs.items()}
            concurrent.futures.wait(futures.values())
    finally:
        stack.control("/ec2/network-acl-quota", {"rules_per_acl": quota})
        stack.control("/scenario", {"scenario": None})
    return futures


@pytest.mark.parametrize("state", [f.state for f in FAILURES])
def test_a_final_failure_fails_at_its_own_state_is_announced_once_and_a_redrive_ends_contained(outcomes, state):
    outcomes[state].result()


def test_a_failed_snapshot_in_the_parallel_evidence_branch_is_a_gap_not_a_failure(outcomes, request):
    outcomes[request.node.originalname].result()


def test_an_aborted_execution_is_announced_as_aborted_and_redrives(outcomes, request):
    outcomes[request.node.originalname].result()


def test_a_rejected_request_is_announced_once_and_its_redrive_fails_again_changing_nothing(outcomes, request):
    outcomes[request.node.originalname].result()


def test_a_redrive_that_fails_again_is_announced_again_once_then_the_next_one_contains(outcomes, request):
    outcomes[request.node.originalname].result()


def test_a_new_incident_instead_of_a_redrive_is_a_second_response_and_the_first_stays_failed(outcomes, request):
    outcomes[request.node.originalname].result()


def test_every_state_named_by_the_failures_module_is_a_state_without_catch_for_its_error():
    """The failures module and the definition agree: each state exists and its step's final error
    is not caught there (else the execution could not fail at it)."""
    definition = json.loads((Path(__file__).resolve().parents[1] / "statemachine.asl.json").read_text())
    states = definition["States"]
    for f in FAILURES:
        assert f.state in states, f.state
        caught = {e for c in states[f.state].get("Catch", []) for e in c["ErrorEquals"]}
        assert f.error not in caught and "States.ALL" not in caught, (f.state, caught)
        assert find(f.short_name) is f and find(f.state.upper()) is f
