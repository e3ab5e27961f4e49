"""Evidence snapshots are locked (issue 12, item 3), and the snapshot lock shim is as strict as EC2.

After a response, every snapshot of the incident is locked in the deployment's retention mode for
its retention days (read back with DescribeLockedSnapshots), the step recorded each lock as an
action, DeleteSnapshot is refused, and a rerun of the step changes no lock.
"""

from __future__ import annotations

import json
import uuid

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError


def _template_env(stack) -> dict:
    """The snapshot function's environment as the synthesized template sets it."""
    lam = stack.client("lambda")
    for page in lam.get_paginator("list_functions").paginate():
        for fn in page["Functions"]:
            variables = (fn.get("Environment") or {}).get("Variables") or {}
            if "SNAPSHOT_LOCK_MODE" in variables:
                return variables
    raise AssertionError("no function has SNAPSHOT_LOCK_MODE")


def _lock_actions(events: list[dict]) -> list[dict]:
    """Every ``lock snapshot`` action in the tasks' outputs."""
    found: list[dict] = []

    def walk(v):
        if isinstance(v, dict):
            if v.get("action") == "lock snapshot" and v.get("step") == "snapshot":
                found.append(v)
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    for e in events:
        if e["type"] == "TaskSucceeded":
            walk(json.loads(e["taskSucceededEventDetails"]["output"]))
    return found


def test_after_a_response_every_incident_snapshot_is_locked_and_cannot_be_deleted(stack):
    env = _template_env(stack)
    mode, days = env["SNAPSHOT_LOCK_MODE"], int(env["SNAPSHOT_LOCK_DAYS"])
    assert mode in ("governance", "compliance")

    inst = stack.seed_instance(name="locks")
    name = f"lock-{uuid.uuid4().hex[:8]}"
    desc, events = stack.run_execution({"instance_id": inst.instance_id, "reason": "snapshot locks"}, name=name)
    assert desc["status"] == "SUCCEEDED", desc

    ec2 = stack.client("ec2")
    snaps = ec2.describe_snapshots(
        OwnerIds=["self"], Filters=[{"Name": "tag:cordon:incident-id", "Values": [name]}]
    )["Snapshots"]
    assert {s["VolumeId"] for s in snaps} == set(inst.volume_ids)
    ids = sorted(s["SnapshotId"] for s in snaps)

    locked = ec2.describe_locked_snapshots(SnapshotIds=ids)["Snapshots"]
    assert sorted(s["SnapshotId"] for s in locked) == ids, "every incident snapshot is locked"
    for s in locked:
        assert s["LockDuration"] == days
        assert s["LockState"] in ({"governance"} if mode == "governance" else {"compliance", "compliance-cooloff"})
        assert "CoolOffPeriod" not in s, "compliance is locked without a cooling-off period"
        # moto's snapshots are completed at once, so the duration is running.
        assert s["LockExpiresOn"] > s["LockDurationStartTime"]

    # The lock is recorded as an action, before (no lock) and after (mode, duration, expiry, state).
    actions = {a["target"]: a for a in _lock_actions(events)}
    assert sorted(actions) == ids
    for a in actions.values():
        assert a["before"] is None
        assert a["after"]["lock_mode"] == mode and a["after"]["lock_duration_days"] == days
        assert a["after"]["lock_state"] in ("governance", "compliance") and a["after"]["lock_expires_on"]

    for sid in ids:
        with pytest.raises(ClientError) as err:
            ec2.delete_snapshot(SnapshotId=sid)
        assert err.value.response["Error"]["Code"] == "IncorrectState"
    assert len(ec2.describe_snapshots(SnapshotIds=ids)["Snapshots"]) == len(ids)

    # A second execution for the same incident finds the locks and keeps them as they are.
    before = {s["SnapshotId"]: s["LockCreatedOn"] for s in locked}
    seq = stack.last_request_seq()
    desc2, _ = stack.run_execution(
        {"instance_id": inst.instance_id, "reason": "snapshot locks", "incident_id": name},
    )
    assert desc2["status"] == "SUCCEEDED", desc2
    assert not stack.requests(service="ec2", action="LockSnapshot", since=seq), "a rerun changes no lock"
    after = ec2.describe_locked_snapshots(SnapshotIds=ids)["Snapshots"]
    assert {s["SnapshotId"]: s["LockCreatedOn"] for s in after} == before


def _unvalidated_ec2(stack):
    """botocore checks the documented ranges itself; off, so that the emulator's own check is tested."""
    return boto3.client(
        "ec2",
        endpoint_url=stack.endpoint,
        region_name=stack.region,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(parameter_validation=False),
    )


def _snapshot(stack) -> str:
    ec2 = stack.client("ec2")
    inst = stack.seed_instance(name="lock-shim")
    return ec2.create_snapshot(VolumeId=inst.volume_ids[0])["SnapshotId"]


@pytest.mark.parametrize(
    "kwargs, code",
    [
        ({"LockMode": "legal-hold", "LockDuration": 1}, "InvalidParameterValue"),
        ({"LockMode": "governance"}, "InvalidParameterCombination"),
        ({"LockMode": "governance", "LockDuration": 1, "ExpirationDate": "2999-01-01T00:00:00Z"}, "InvalidParameterCombination"),
        ({"LockMode": "governance", "LockDuration": 0}, "InvalidParameterValue"),
        ({"LockMode": "governance", "LockDuration": 36501}, "InvalidParameterValue"),
        ({"LockMode": "governance", "LockDuration": 1, "CoolOffPeriod": 1}, "InvalidParameterCombination"),
        ({"LockMode": "compliance", "LockDuration": 1, "CoolOffPeriod": 73}, "InvalidParameterValue"),
    ],
)
def test_lock_snapshot_validates_as_documented(stack, kwargs, code):
    sid = _snapshot(stack)
    ec2 = _unvalidated_ec2(stack)
    with pytest.raises(ClientError) as err:
        ec2.lock_snapshot(SnapshotId=sid, **kwargs)
    assert err.value.response["Error"]["Code"] == code


def test_lock_snapshot_of_an_unknown_snapshot_is_not_found(stack):
    with pytest.raises(ClientError) as err:
        stack.client("ec2").lock_snapshot(SnapshotId="snap-0000000000000dead", LockMode="governance", LockDuration=1)
    assert err.value.response["Error"]["Code"] == "InvalidSnapshot.NotFound"


def test_compliance_after_cool_off_only_grows_and_governance_can_be_changed(stack):
    ec2 = stack.client("ec2")
    sid = _snapshot(stack)
    out = ec2.lock_snapshot(SnapshotId=sid, LockMode="governance", LockDuration=5)
    assert out["LockState"] == "governance"
    # Governance: any change, here to compliance (no cooling-off: compliance at once).
    out = ec2.lock_snapshot(SnapshotId=sid, LockMode="compliance", LockDuration=10)
    assert out["LockState"] == "compliance"
    for kwargs in ({"LockMode": "compliance", "LockDuration": 9}, {"LockMode": "governance", "LockDuration": 20}):
        with pytest.raises(ClientError) as err:
            ec2.lock_snapshot(SnapshotId=sid, **kwargs)
        assert err.value.response["Error"]["Code"] == "IncorrectState"
    assert ec2.lock_snapshot(SnapshotId=sid, LockMode="compliance", LockDuration=11)["LockDuration"] == 11

    cool = _snapshot(stack)
    out = ec2.lock_snapshot(SnapshotId=cool, LockMode="compliance", LockDuration=3, CoolOffPeriod=2)
    assert out["LockState"] == "compliance-cooloff" and out["CoolOffPeriod"] == 2
    listed = ec2.describe_locked_snapshots(Filters=[{"Name": "lock-state", "Values": ["compliance-cooloff"]}])
    assert cool in [s["SnapshotId"] for s in listed["Snapshots"]]
    assert sid not in [s["SnapshotId"] for s in listed["Snapshots"]]


def test_describe_locked_snapshots_lists_only_locked_ones_and_validates(stack):
    ec2 = stack.client("ec2")
    unlocked = _snapshot(stack)
    assert ec2.describe_locked_snapshots(SnapshotIds=[unlocked])["Snapshots"] == []
    ec2.delete_snapshot(SnapshotId=unlocked)  # an unlocked snapshot is deleted as before
    with pytest.raises(ClientError) as err:
        _unvalidated_ec2(stack).describe_locked_snapshots(MaxResults=4)
    assert err.value.response["Error"]["Code"] == "InvalidParameterValue"
    with pytest.raises(ClientError) as err:
        ec2.describe_locked_snapshots(Filters=[{"Name": "snapshot-id", "Values": ["x"]}])
    assert err.value.response["Error"]["Code"] == "InvalidParameterValue"
