"""EBS snapshot locks: ``SnapshotLockShim`` (EC2 ``LockSnapshot``, ``DescribeLockedSnapshots``, and
``DeleteSnapshot`` of a locked snapshot).

moto 5.2.5 implements neither LockSnapshot nor DescribeLockedSnapshots, and deletes any snapshot.
Here both are modelled as documented, and DeleteSnapshot of a locked snapshot is refused:

- LockSnapshot (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_LockSnapshot.html):
  ``SnapshotId`` and ``LockMode`` (``governance`` | ``compliance``) required; exactly one of
  ``LockDuration`` (1 to 36,500 days) and ``ExpirationDate``; ``CoolOffPeriod`` (1 to 72 hours) only
  in compliance mode ("If you are locking the snapshot in governance mode, omit this parameter").
  Missing parameter: ``MissingParameter``; out of range or combination: ``InvalidParameterValue`` /
  ``InvalidParameterCombination`` (EC2's generic codes,
  https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html).
  Unknown snapshot: ``InvalidSnapshot.NotFound``.
- "You can lock a snapshot that is in the pending or completed state"; locked while pending, "the
  lock duration starts only when the snapshot reaches the completed state"
  (https://docs.aws.amazon.com/ebs/latest/userguide/snapshot-lock-considerations.html): until then
  ``LockDurationStartTime`` and ``LockExpiresOn`` are absent. A snapshot in another state:
  ``IncorrectState`` (code not documented for this case; EC2's generic code).
- Modifying a lock (the same call on a locked snapshot): governance or compliance-cooloff may be
  changed in any way; compliance after the cooling-off period may only have its duration or
  expiration increased (API_LockSnapshot.html). Anything else: ``IncorrectState`` (undocumented code).
- Lock states (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_LockedSnapshotsInfo.html):
  ``compliance-cooloff`` while the cooling-off period runs, ``governance``, ``compliance``, and
  ``expired`` once the lock expires.
- DescribeLockedSnapshots
  (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeLockedSnapshots.html):
  ``SnapshotId.N``, ``Filter.N`` (only ``lock-state``), ``MaxResults`` 5 to 1,000, ``NextToken``;
  only snapshots that have a lock are listed (an unlocked snapshot is simply absent).
- DeleteSnapshot: "A locked snapshot can't be deleted" (API_LockSnapshot.html); refused while the
  lock is not ``expired``. The error code is not documented; ``IncorrectState`` is used.

A deleted snapshot's lock goes with it (only an expired lock allows the delete).
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from . import REGION
from .shims import EC2_NS
from .wire import AwsRequest, Response, aws_error, request_id, xml_response

LOCK_MODES = ("governance", "compliance")
LOCK_STATES = ("compliance-cooloff", "governance", "compliance", "expired")


@dataclass
class Lock:
    snapshot_id: str
    mode: str
    created_on: datetime
    duration_days: int | None = None
    expiration: datetime | None = None  # ExpirationDate given instead of a duration
    cool_off_hours: int | None = None
    cool_off_expires_on: datetime | None = None
    duration_start: datetime | None = None  # set once the snapshot is completed

    def expires_on(self) -> datetime | None:
        if self.expiration is not None:
            return self.expiration
        if self.duration_start is None or self.duration_days is None:
            return None
        return self.duration_start + timedelta(days=self.duration_days)

    def state(self, now: datetime) -> str:
        expires = self.expires_on()
        if expires is not None and now >= expires:
            return "expired"
        if self.mode == "governance":
            return "governance"
        if self.cool_off_expires_on is not None and now < self.cool_off_expires_on:
            return "compliance-cooloff"
        return "compliance"


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _backend(region: str = REGION):
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ec2.models import ec2_backends

    return ec2_backends[DEFAULT_ACCOUNT_ID][region]


def _indexed(params: dict, prefix: str) -> list[str]:
    keys = sorted((k for k in params if k.startswith(prefix + ".")), key=lambda k: int(k.rsplit(".", 1)[1]))
    return [params[k] for k in keys]


class SnapshotLockShim:
    name = "SnapshotLockShim"
    ACTIONS = ("LockSnapshot", "DescribeLockedSnapshots", "DeleteSnapshot")

    def __init__(self) -> None:
        self.locks: dict[tuple[str, str], Lock] = {}
        self._mutex = threading.Lock()

    def handles(self, req: AwsRequest) -> bool:
        return req.service == "ec2" and req.action in self.ACTIONS

    def control_routes(self) -> dict:
        return {}

    def handle(self, req: AwsRequest) -> Response | None:
        with self._mutex:
            if req.action == "LockSnapshot":
                return self._lock(req)
            if req.action == "DescribeLockedSnapshots":
                return self._describe(req)
            return self._delete(req)

    # ------------------------------------------------------------------ helpers

    def _snapshot(self, req: AwsRequest, snapshot_id: str):
        return _backend(req.region).snapshots.get(snapshot_id)

    def _started(self, req: AwsRequest, lock: Lock) -> None:
        """Starts the lock duration once the snapshot is completed (pending: later)."""
        if lock.duration_start is None and lock.duration_days is not None:
            snap = self._snapshot(req, lock.snapshot_id)
            if snap is not None and snap.status == "completed":
                lock.duration_start = _now()

    # ------------------------------------------------------------------ LockSnapshot

    def _lock(self, req: AwsRequest) -> Response:
        p = req.params
        for required in ("SnapshotId", "LockMode"):
            if not p.get(required):
                return aws_error(req, "MissingParameter", f"The request must contain the parameter {required}")
        snapshot_id, mode = p["SnapshotId"], p["LockMode"]
        if mode not in LOCK_MODES:
            return aws_error(req, "InvalidParameterValue", f"Value ({mode}) for parameter lockMode is invalid")
        duration, expiration, cool_off = p.get("LockDuration"), p.get("ExpirationDate"), p.get("CoolOffPeriod")
        if (duration is None) == (expiration is None):
            return aws_error(
                req, "InvalidParameterCombination", "Specify exactly one of LockDuration and ExpirationDate"
            )
        days = expires_at = hours = None
        if duration is not None:
            try:
                days = int(duration)
            except ValueError:
                days = 0
            if not 1 <= days <= 36500:
                return aws_error(req, "InvalidParameterValue", f"Value ({duration}) for parameter lockDuration is invalid")
        if expiration is not None:
            try:
                expires_at = datetime.fromisoformat(expiration.replace("Z", "+00:00"))
            except ValueError:
                return aws_error(req, "InvalidParameterValue", f"Value ({expiration}) for parameter expirationDate is invalid")
            if expires_at.tzinfo is None:
                expires_at = expires_at.replace(tzinfo=timezone.utc)
            if expires_at <= _now():
                return aws_error(req, "InvalidParameterValue", "The expiration date must be in the future")
        if cool_off is not None:
            if mode != "compliance":
                return aws_error(
                    req, "InvalidParameterCombination", "CoolOffPeriod can be specified only in compliance mode"
                )
            try:
                hours = int(cool_off)
            except ValueError:
                hours = 0
            if not 1 <= hours <= 72:
                return aws_error(req, "InvalidParameterValue", f"Value ({cool_off}) for parameter coolOffPeriod is invalid")
        snap = self._snapshot(req, snapshot_id)
        if snap is None:
            return aws_error(req, "InvalidSnapshot.NotFound", f"The snapshot '{snapshot_id}' does not exist.")
        if snap.status not in ("pending", "completed"):
            return aws_error(req, "IncorrectState", f"The snapshot '{snapshot_id}' is in state {snap.status} and cannot be locked.")

        key = (req.region, snapshot_id)
        now = _now()
        current = self.locks.get(key)
        if current is not None:
            self._started(req, current)
            state = current.state(now)
            if state == "compliance":
                # After the cooling-off period only the duration/expiration may grow.
                new_expiry = expires_at or (
                    (current.duration_start or now) + timedelta(days=days or 0)
                )
                old_expiry = current.expires_on()
                if mode != "compliance" or cool_off is not None or (
                    old_expiry is not None and new_expiry < old_expiry
                ):
                    return aws_error(
                        req,
                        "IncorrectState",
                        f"The snapshot '{snapshot_id}' is locked in compliance mode: only the lock duration can be increased",
                    )
        lock = Lock(
            snapshot_id=snapshot_id,
            mode=mode,
            created_on=current.created_on if current is not None and current.state(now) != "expired" else now,
            duration_days=days,
            expiration=expires_at,
            cool_off_hours=hours,
            cool_off_expires_on=(now + timedelta(hours=hours)) if hours else None,
        )
        self._started(req, lock)
        self.locks[key] = lock
        return xml_response(
            f'<LockSnapshotResponse xmlns="{EC2_NS}"><requestId>{request_id()}</requestId>'
            f"<snapshotId>{snapshot_id}</snapshotId>{self._fields(lock, now)}</LockSnapshotResponse>"
        )

    @staticmethod
    def _fields(lock: Lock, now: datetime) -> str:
        values = {
            "lockState": lock.state(now),
            "lockDuration": lock.duration_days,
            "coolOffPeriod": lock.cool_off_hours,
            "coolOffPeriodExpiresOn": _iso(lock.cool_off_expires_on),
            "lockCreatedOn": _iso(lock.created_on),
            "lockDurationStartTime": _iso(lock.duration_start),
            "lockExpiresOn": _iso(lock.expires_on()),
        }
        return "".join(f"<{k}>{v}</{k}>" for k, v in values.items() if v is not None)

    # ------------------------------------------------------------------ DescribeLockedSnapshots

    def _describe(self, req: AwsRequest) -> Response:
        p = req.params
        ids = _indexed(p, "SnapshotId")
        states: list[str] | None = None
        n = 1
        while f"Filter.{n}.Name" in p:
            name = p[f"Filter.{n}.Name"]
            if name != "lock-state":
                return aws_error(req, "InvalidParameterValue", f"The filter '{name}' is invalid")
            states = _indexed(p, f"Filter.{n}.Value")
            n += 1
        max_results = p.get("MaxResults")
        limit = 1000
        if max_results is not None:
            try:
                limit = int(max_results)
            except ValueError:
                limit = 0
            if not 5 <= limit <= 1000:
                return aws_error(req, "InvalidParameterValue", f"Value ({max_results}) for parameter maxResults is invalid")
        now = _now()
        rows = []
        for (region, snapshot_id), lock in sorted(self.locks.items()):
            if region != req.region or (ids and snapshot_id not in ids):
                continue
            self._started(req, lock)
            if states is not None and lock.state(now) not in states:
                continue
            rows.append(lock)
        start = 0
        token = p.get("NextToken")
        if token:
            try:
                start = int(token.split("-", 1)[1])
            except (IndexError, ValueError):
                return aws_error(req, "InvalidNextToken", "The specified token is invalid")
        page = rows[start : start + limit]
        next_token = f"{uuid.uuid4().hex[:8]}-{start + limit}" if start + limit < len(rows) else None
        items = "".join(
            f"<item><ownerId>{_backend(req.region).account_id}</ownerId><snapshotId>{lock.snapshot_id}</snapshotId>"
            f"{self._fields(lock, now)}</item>"
            for lock in page
        )
        token_xml = f"<nextToken>{next_token}</nextToken>" if next_token else ""
        return xml_response(
            f'<DescribeLockedSnapshotsResponse xmlns="{EC2_NS}"><requestId>{request_id()}</requestId>'
            f"<snapshotSet>{items}</snapshotSet>{token_xml}</DescribeLockedSnapshotsResponse>"
        )

    # ------------------------------------------------------------------ DeleteSnapshot

    def _delete(self, req: AwsRequest) -> Response | None:
        snapshot_id = req.params.get("SnapshotId", "")
        key = (req.region, snapshot_id)
        lock = self.locks.get(key)
        if lock is None:
            return None  # moto deletes it (or answers NotFound)
        self._started(req, lock)
        if lock.state(_now()) != "expired":
            return aws_error(
                req,
                "IncorrectState",
                f"The snapshot '{snapshot_id}' is locked and cannot be deleted until the lock expires or is removed.",
            )
        del self.locks[key]
        return None
