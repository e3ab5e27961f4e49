"""A final failure at each containment state, and how to take it away again.

The containment states of ``statemachine.asl.json`` that have no Catch for a step's final error:
if their step still fails after its retries, the execution fails **at that state**, with the
step's error name and cause, and a redrive reruns exactly it
(https://docs.aws.amazon.com/step-functions/latest/dg/redrive-executions.html). For each of them
this module knows the fault rule(s) (``faults``, ``POST /_cordon/faults``) that make the step
fail for good on one instance: a denied call, which Cordon's steps classify as ``AccessDenied``
and the state machine does not retry. Removing the rules is "the cause is fixed"; the redrive
then succeeds. The scenarios (``test_redrive_scenarios.py``) and ``demo --fail-at`` use it.

Errors, as AWS answers a call the caller's policies do not allow:

- EC2: ``UnauthorizedOperation``, a client error (HTTP 4xx; AWS answers 403) ("If a user tries to
  perform an action that they have not been granted permission to perform, the request returns
  the following error: Client.UnauthorizedOperation",
  https://docs.aws.amazon.com/AWSEC2/latest/APIReference/query-api-troubleshooting.html#unauthorized-operation,
  https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html).
- S3: ``AccessDenied``, HTTP 403 Forbidden
  (https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html#ErrorCodeList).

Each rule names the instance (or its interface, its profile association, its manifest key), so
concurrent responses for other instances are not touched. One state is not reached through a
denied call: "Remove re-associated profile" runs when "Attach forensic profile" finds a profile
that someone associated again after Cordon removed it; the step removes it, revokes its
credentials for the instance and fails the execution with ``ProfileReassociated`` by design. Its
injection does what an intruder would: while a gate rule holds "Capture console" (EC2 answers
``RequestLimitExceeded``, HTTP 503, which the step retries:
https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html), it associates the
instance's original profile again, then lifts the gate.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .seed import control

FINAL_ATTEMPT = ": final attempt"


@dataclass(frozen=True)
class Target:
    """What the rules of one instance need to name: read from EC2 before the response starts."""

    instance_id: str
    incident_id: str
    network_interface_ids: tuple[str, ...]
    association_id: str | None
    profile_arn: str | None

    @classmethod
    def read(cls, ec2: Any, instance_id: str, incident_id: str) -> Target:
        inst = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
        enis = tuple(e["NetworkInterfaceId"] for e in inst.get("NetworkInterfaces", []))
        assocs = [
            a
            for a in ec2.describe_iam_instance_profile_associations(
                Filters=[{"Name": "instance-id", "Values": [instance_id]}]
            )["IamInstanceProfileAssociations"]
            if a["State"] in ("associating", "associated")
        ]
        assoc = assocs[0] if assocs else None
        return cls(
            instance_id=instance_id,
            incident_id=incident_id,
            network_interface_ids=enis,
            association_id=assoc["AssociationId"] if assoc else None,
            profile_arn=assoc["IamInstanceProfile"]["Arn"] if assoc else None,
        )


def _denied_ec2(action: str, needle: Callable[[Target], str | None]) -> Callable[[Target], list[dict]]:
    def rules(t: Target) -> list[dict]:
        mention = needle(t)
        if not mention:
            raise ValueError(f"{t.instance_id}: nothing for a {action} rule to name (see failures.Target)")
        return [
            {
                "service": "ec2",
                "action": action,
                "code": "UnauthorizedOperation",
                "status": 403,
                "count": -1,
                "instance_id": mention,
                "message": "You are not authorized to perform this operation.",
            }
        ]

    return rules


def _denied_manifest(t: Target) -> list[dict]:
    # The object key is in the (path-style) request path: only this incident's manifest.
    return [
        {
            "service": "s3",
            "action": "PutObject",
            "code": "AccessDenied",
            "status": 403,
            "count": -1,
            "instance_id": f"{t.incident_id}/{t.instance_id}/manifest.json",
            "message": "Access Denied",
        }
    ]


def _console_gate(t: Target) -> list[dict]:
    return [
        {
            "service": "ec2",
            "action": "GetConsoleScreenshot",
            "code": "RequestLimitExceeded",
            "status": 503,
            "count": -1,
            "instance_id": t.instance_id,
            "message": "Request limit exceeded.",
        }
    ]


@dataclass(frozen=True)
class FinalFailure:
    """One state where the execution can fail, and the fault that makes it fail there."""

    state: str
    error: str  # the error name the execution fails with
    cause: str  # what the fault stands for, one line
    rules: Callable[[Target], list[dict]]
    options: dict = field(default_factory=dict)  # incident options the state needs to be reached
    ssm: bool = False  # the state is reached only with an SSM-managed, online instance
    reassociate: bool = False  # see the module docstring

    @property
    def short_name(self) -> str:
        return self.state.removesuffix(FINAL_ATTEMPT)


FAILURES: tuple[FinalFailure, ...] = (
    FinalFailure(
        "Record metadata",
        "AccessDenied",
        "ec2:DescribeInstances denied for the instance",
        _denied_ec2("DescribeInstances", lambda t: t.instance_id),
    ),
    FinalFailure(
        "Quarantine network: final attempt",
        "AccessDenied",
        "ec2:ModifyNetworkInterfaceAttribute denied on the instance's first network interface",
        _denied_ec2("ModifyNetworkInterfaceAttribute", lambda t: t.network_interface_ids[0] if t.network_interface_ids else None),
    ),
    FinalFailure(
        "Remove instance profile: final attempt",
        "AccessDenied",
        "ec2:DisassociateIamInstanceProfile denied for the instance's profile association",
        _denied_ec2("DisassociateIamInstanceProfile", lambda t: t.association_id),
    ),
    FinalFailure(
        "Protect from termination: final attempt",
        "AccessDenied",
        "ec2:ModifyInstanceAttribute denied for the instance",
        _denied_ec2("ModifyInstanceAttribute", lambda t: t.instance_id),
    ),
    FinalFailure(
        "Remove re-associated profile",
        "ProfileReassociated",
        "someone associates the instance's profile again while the console is captured",
        _console_gate,
        ssm=True,
        reassociate=True,
    ),
    FinalFailure(
        "Disable instance metadata",
        "AccessDenied",
        "ec2:ModifyInstanceMetadataOptions denied for the instance",
        _denied_ec2("ModifyInstanceMetadataOptions", lambda t: t.instance_id),
    ),
    FinalFailure(
        "Stop instance",
        "AccessDenied",
        "ec2:StopInstances denied for the instance",
        _denied_ec2("StopInstances", lambda t: t.instance_id),
        options={"stop_after_evidence": True},
    ),
    FinalFailure(
        "Announce containment",
        "AccessDenied",
        "s3:PutObject denied for the incident's manifest.json",
        _denied_manifest,
    ),
)


def find(name: str) -> FinalFailure:
    """The failure for a state name, with or without ": final attempt", case-insensitive."""
    wanted = name.strip().lower().removesuffix(FINAL_ATTEMPT)
    for f in FAILURES:
        if f.short_name.lower() == wanted:
            return f
    known = ", ".join(repr(f.short_name) for f in FAILURES)
    raise KeyError(f"no final failure for state {name!r}; one of: {known}")


class Injection:
    """The failure of ``failure`` injected for ``target``; ``remove()`` takes it away (the cause
    fixed). Removes only its own rules, so concurrent injections for other instances stay."""

    def __init__(self, control_url: str, failure: FinalFailure, target: Target, ec2: Any = None) -> None:
        if failure.reassociate and (ec2 is None or not target.profile_arn):
            raise ValueError(f"{failure.state} needs an EC2 client and an instance with a profile associated")
        self.control_url, self.failure, self.target, self.ec2 = control_url, failure, target, ec2
        self.rule_ids: list[int] = []
        self.rules: list[dict] = []
        self.reassociated: str | None = None  # the association made, once made
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def inject(self) -> Injection:
        self.rules = self.failure.rules(self.target)
        self.rule_ids = control(self.control_url, "POST", "/faults", self.rules)["rules"]
        if self.failure.reassociate:
            self._thread = threading.Thread(target=self._reassociate, name=f"reassociate-{self.target.instance_id}", daemon=True)
            self._thread.start()
        return self

    def _delete_rules(self) -> None:
        if self.rule_ids:
            query = "&".join(f"id={i}" for i in self.rule_ids)
            control(self.control_url, "DELETE", f"/faults?{query}")
            self.rule_ids = []

    def _fired(self) -> int:
        rules = control(self.control_url, "GET", "/faults")["rules"]
        return sum(r["fired"] for r in rules if r["id"] in self.rule_ids)

    def _reassociate(self, timeout: float = 600) -> None:
        """Waits until "Capture console" is held by the gate (containment, and so the profile's
        removal, is done), associates the profile again, then lifts the gate."""
        try:
            deadline = time.monotonic() + timeout
            while not self._fired():
                if self._stop.is_set() or time.monotonic() > deadline:
                    return
                time.sleep(0.05)
            out = self.ec2.associate_iam_instance_profile(
                InstanceId=self.target.instance_id, IamInstanceProfile={"Arn": self.target.profile_arn}
            )
            self.reassociated = out["IamInstanceProfileAssociation"]["AssociationId"]
        except BaseException as e:  # reported by remove()
            self.error = e
        finally:
            self._delete_rules()

    def remove(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        self._delete_rules()
        if self.error is not None:
            raise RuntimeError(f"injecting {self.failure.state!r} failed: {self.error}") from self.error

    def __enter__(self) -> Injection:
        return self.inject()

    def __exit__(self, *exc: Any) -> None:
        self.remove()
