"""The walking skeleton: the real state machine and step binaries on the local AWS stack.

Each test that changes an instance seeds its own, so tests do not depend on one another's leftovers.
"""

from __future__ import annotations

import json
import uuid

import pytest

from conftest import sha256

MISSING = "i-0000000000000dead"


def failed_event(events: list[dict]) -> dict:
    return next(e for e in events if e["type"] == "ExecutionFailed")["executionFailedEventDetails"]


def state_succeeded(events: list[dict], name: str) -> bool:
    """Whether a visit of Task state ``name`` exited after its task succeeded (not via a Catch)."""
    by_id = {e["id"]: e for e in events}
    return any(
        e["type"] == "TaskStateExited"
        and e["stateExitedEventDetails"]["name"] == name
        and by_id.get(e.get("previousEventId"), {}).get("type") == "TaskSucceeded"
        for e in events
    )


def test_metadata_json_records_the_seeded_instance(stack):
    inst = stack.seed_instance(
        name="skeleton-meta", tags={"env": "prod", "team": "payments"}, ssm=True, target_group=True
    )
    name = f"meta-{uuid.uuid4().hex[:8]}"
    desc, events = stack.run_execution({"instance_id": inst.instance_id, "reason": "walking skeleton"}, name=name)
    assert state_succeeded(events, "Record metadata"), desc

    key = f"{name}/{inst.instance_id}/metadata.json"
    body, obj = stack.get_object(key)
    assert obj["Metadata"]["sha256"] == sha256(body), "recorded sha256 differs from the body's"

    doc = json.loads(body)
    assert doc["incident_id"] == name
    instance = doc["instance"]
    assert instance["instance_id"] == inst.instance_id
    assert instance["vpc_id"] == stack.context.vpc_id
    assert instance["tags"] == {"Name": "skeleton-meta", "env": "prod", "team": "payments"}

    assert len(doc["volumes"]) == 3
    assert {v["volume_id"] for v in doc["volumes"]} == set(inst.volume_ids)
    assert {b["volume_id"] for b in instance["block_device_mappings"]} == set(inst.volume_ids)
    assert all(a["instance_id"] == inst.instance_id for v in doc["volumes"] for a in v["attachments"])

    assert len(instance["network_interfaces"]) == 2
    assert {n["network_interface_id"] for n in instance["network_interfaces"]} == set(inst.network_interface_ids)
    assert sorted(n["attachment"]["device_index"] for n in instance["network_interfaces"]) == [0, 1]

    associations = doc["iam_instance_profile_associations"]
    assert [(a["association_id"], a["iam_instance_profile_arn"], a["state"]) for a in associations] == [
        (inst.association_id, stack.context.instance_profile_arn, "associated")
    ]
    assert {g["group_name"] for g in doc["security_groups"]} >= {"web"}


def test_a_nonexistent_instance_fails_as_instance_not_found_and_writes_nothing(stack):
    name = f"missing-{uuid.uuid4().hex[:8]}"
    desc, events = stack.run_execution({"instance_id": MISSING, "reason": "no such instance"}, name=name)
    assert desc["status"] == "FAILED"
    assert desc["error"] == "InstanceNotFound"
    assert failed_event(events)["error"] == "InstanceNotFound"
    assert stack.objects_under(f"{name}/") == []
    assert not [o for o in stack.objects_under("") if MISSING in o["Key"]]


VALID = "i-0123456789abcdef0"
MALFORMED = [
    pytest.param({"reason": "no instance"}, id="missing instance_id"),
    pytest.param({"instance_id": 42}, id="instance_id is a number"),
    pytest.param({"instance_id": "i-xyz"}, id="instance_id malformed"),
    pytest.param({"instance_id": VALID, "instanceId": VALID}, id="unknown field"),
    pytest.param({"instance_id": VALID, "incident_id": "../etc"}, id="path traversal in incident_id"),
    pytest.param({"instance_id": VALID, "reason": "x" * 1025}, id="reason of 1025 characters"),
    pytest.param(VALID, id="input is a string"),
    pytest.param([VALID], id="input is an array"),
]


@pytest.mark.parametrize("request_input", MALFORMED)
def test_malformed_input_fails_as_invalid_input_and_touches_nothing(stack, request_input):
    name = f"bad-{uuid.uuid4().hex[:8]}"
    before = stack.last_request_seq()
    desc, events = stack.run_execution(request_input, name=name)
    assert desc["status"] == "FAILED", desc
    assert desc["error"] == "InvalidInput"
    assert failed_event(events)["error"] == "InvalidInput"
    assert stack.objects_under(f"{name}/") == []
    assert stack.objects_under("../") == []
    # Nothing was described, changed or written: no EC2 call and no S3 write during the execution.
    calls = stack.requests(since=before)
    assert [c["action"] for c in calls if c["service"] == "ec2"] == []
    assert [c["action"] for c in calls if c["service"] == "s3" and c["method"] in ("PUT", "POST", "DELETE")] == []


def test_full_response_on_a_managed_instance_succeeds_and_notifies(stack):
    inst = stack.seed_instance(name="skeleton-full", ssm=True, auto_scaling_group=True, target_group=True)
    stack.notifications(wait_seconds=0)
    name = f"full-{uuid.uuid4().hex[:8]}"
    desc, events = stack.run_execution({"instance_id": inst.instance_id, "reason": "full run"}, name=name)
    assert desc["status"] == "SUCCEEDED", (desc.get("error"), desc.get("cause"))
    keys = {
        o["Key"].removeprefix(f"{name}/{inst.instance_id}/") for o in stack.objects_under(f"{name}/{inst.instance_id}/")
    }
    assert "metadata.json" in keys
    mine = [
        n for n in stack.notifications() if n.get("MessageAttributes", {}).get("incident_id", {}).get("Value") == name
    ]
    assert len(mine) == 1


def test_throttled_describe_is_retried_by_the_state_machine(stack):
    """Six RequestLimitExceeded answers exhaust the SDK's own six attempts (``cordon_common::aws``):
    the step fails as Transient, the state machine retries it, and the second attempt succeeds."""
    inst = stack.seed_instance(name="skeleton-throttle", ssm=False)
    stack.control(
        "/faults",
        {
            "service": "ec2",
            "action": "DescribeInstances",
            "code": "RequestLimitExceeded",
            "status": 503,
            "count": 6,
            "instance_id": inst.instance_id,
        },
    )
    try:
        desc, events = stack.run_execution({"instance_id": inst.instance_id}, name=f"throttle-{uuid.uuid4().hex[:8]}")
    finally:
        stack.control("/faults", method="DELETE")
    task_failures = [e["taskFailedEventDetails"] for e in events if e["type"] == "TaskFailed"]
    assert task_failures and task_failures[0]["error"] == "Transient"
    assert "RequestLimitExceeded" in task_failures[0]["cause"]
    assert state_succeeded(events, "Record metadata")
