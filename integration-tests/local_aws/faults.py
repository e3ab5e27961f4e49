"""Fault injection: answer the next N matching requests with a correctly shaped AWS error.

moto has no fault injection of its own, and the paths that matter most in incident response are
the unhappy ones: throttling (EC2 ``RequestLimitExceeded``, JSON ``ThrottlingException``, S3
``SlowDown``), denied calls, server faults. A rule names a service and an action and is consumed
one request at a time; the error is rendered in the service's own protocol (see ``wire``) so the
SDKs classify it as they would AWS's (retryable or not, error code, HTTP status).

Control (``/_cordon/faults``): ``POST`` a rule (or a list; answers their ``rules`` ids), ``GET``
the rules with what is left of them, ``DELETE`` them all, or ``DELETE ?id=N`` only rule N. A rule::

    {"service": "ec2", "action": "ModifyInstanceAttribute", "code": "RequestLimitExceeded",
     "status": 503, "count": 3, "instance_id": "i-...", "message": "..."}

``action`` ``"*"`` matches every action of the service; ``count`` -1 never runs out;
``instance_id`` restricts the rule to requests that mention that ID (body, path or query; any ID
works, e.g. a network interface's); ``skip`` lets that many matching requests through first (to
fail the second of two calls on the same resource);
``body`` (with optional ``headers``) answers a scripted body instead of an error.

AWS error references: EC2 https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html,
retryable errors https://docs.aws.amazon.com/sdkref/latest/guide/feature-retry-behavior.html.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import asdict, dataclass

from .wire import AwsRequest, Response, aws_error, canonical_service

DEFAULT_MESSAGES = {
    "RequestLimitExceeded": "Request limit exceeded.",
    "ThrottlingException": "Rate exceeded",
    "Throttling": "Rate exceeded",
    "SlowDown": "Please reduce your request rate.",
    "InternalError": "An internal error has occurred",
    "InternalFailure": "An internal error has occurred",
    "ServiceUnavailable": "Service is unable to handle request.",
    "UnauthorizedOperation": "You are not authorized to perform this operation.",
    "AccessDenied": "Access Denied",
    "AccessDeniedException": "User is not authorized to perform this action",
}

DEFAULT_STATUS = {
    "RequestLimitExceeded": 503,
    "SlowDown": 503,
    "InternalError": 500,
    "InternalFailure": 500,
    "ServiceUnavailable": 503,
    "UnauthorizedOperation": 403,
    "AccessDenied": 403,
    "AccessDeniedException": 400,
}


@dataclass
class FaultRule:
    id: int
    service: str
    action: str
    code: str
    status: int
    count: int  # remaining; -1 = unlimited
    message: str
    instance_id: str | None = None
    skip: int = 0  # matching requests still to let through before the rule fires
    body: str | None = None
    headers: dict | None = None
    fired: int = 0

    def matches(self, req: AwsRequest) -> bool:
        if self.count == 0 or canonical_service(req.service) != self.service:
            return False
        if self.action not in ("*", req.action):
            return False
        return self.instance_id is None or req.mentions(self.instance_id)


class FaultInjector:
    def __init__(self) -> None:
        self._rules: list[FaultRule] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def add(self, spec: dict) -> FaultRule:
        for required in ("service", "action"):
            if not spec.get(required):
                raise ValueError(f"a fault rule needs {required!r}")
        code = spec.get("code") or "InternalError"
        if spec.get("body") is None and not spec.get("code"):
            raise ValueError("a fault rule needs 'code' (or a scripted 'body')")
        rule = FaultRule(
            id=next(self._ids),
            service=canonical_service(spec["service"]),
            action=spec["action"],
            code=code,
            status=int(spec.get("status") or DEFAULT_STATUS.get(code, 400)),
            count=int(spec.get("count", 1)),
            message=spec.get("message") or DEFAULT_MESSAGES.get(code, f"{code} (injected by the local stack)"),
            instance_id=spec.get("instance_id"),
            skip=int(spec.get("skip", 0)),
            body=spec.get("body"),
            headers=spec.get("headers"),
        )
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def remove(self, ids: set[int]) -> list[int]:
        """Removes the rules with these ids; returns the ids that were there."""
        with self._lock:
            removed = [r.id for r in self._rules if r.id in ids]
            self._rules = [r for r in self._rules if r.id not in ids]
        return removed

    def rules(self) -> list[dict]:
        with self._lock:
            return [asdict(r) for r in self._rules]

    def answer(self, req: AwsRequest) -> tuple[Response, FaultRule] | None:
        """The injected response for ``req``, consuming one use of the first matching rule."""
        with self._lock:
            rule = next((r for r in self._rules if r.matches(req)), None)
            if rule is None:
                return None
            if rule.skip > 0:
                rule.skip -= 1
                return None
            if rule.count > 0:
                rule.count -= 1
            rule.fired += 1
        if rule.body is not None:
            headers = list((rule.headers or {"Content-Type": "application/json"}).items())
            return (rule.status, headers, rule.body.encode()), rule
        return aws_error(req, rule.code, rule.message, rule.status), rule
