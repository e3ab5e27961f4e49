"""IAM shims: where moto 5.2.5 accepts what IAM refuses, for calls Cordon makes.

- ``RolePolicySizeQuotaShim`` (IAM ``PutRolePolicy``): a role's inline policies share one size
  quota. "You can add as many inline policies as you want to an IAM user, role, or group. But the
  total aggregate policy size (the sum size of all inline policies) per entity cannot exceed the
  following quotas: ... Role policy size cannot exceed 10,240 characters", and "IAM does not count
  white space when calculating the size of a policy against these quotas"
  (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_iam-quotas.html). A put that would
  take the role over it is refused with ``LimitExceeded``, HTTP 409 ("The request was rejected
  because it attempted to create resources beyond the current AWS account limits. The error
  message describes the limit exceeded",
  https://docs.aws.amazon.com/IAM/latest/APIReference/API_PutRolePolicy.html), with the message
  IAM gives, "Maximum policy size of 10240 bytes exceeded for role <name>" (as answered by IAM,
  e.g. alienplatform/alien's PutRolePolicy log). moto stores any number of inline policies of any
  size. Replacing a policy counts the new document instead of the old one. The policy names are
  not counted (the quotas page counts policy size only).

Control endpoints:

- ``GET /_cordon/iam/role-policy-quota``: the quota in force, and each role's inline-policy usage.
- ``POST /_cordon/iam/role-policy-quota`` ``{"quota": N}``: another quota (for tests that want a
  small one); ``DELETE`` restores IAM's 10,240.
"""

from __future__ import annotations

import threading
from typing import Any

from .server import ControlError
from .wire import AwsRequest, Response, aws_error

ROLE_POLICY_QUOTA = 10_240


def policy_size(document: str) -> int:
    """Characters of a policy document as IAM counts them: whitespace is not counted."""
    return sum(1 for c in document if not c.isspace())


def _roles() -> list[Any]:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.iam.models import iam_backends

    return list(iam_backends[DEFAULT_ACCOUNT_ID]["global"].roles.values())


def _role(name: str) -> Any | None:
    # Role names are unique per account, case-insensitively (IAM names page).
    return next((r for r in _roles() if r.name.lower() == name.lower()), None)


def role_usage(role: Any, replacing: str | None = None) -> int:
    """Characters used by the role's inline policies, leaving out ``replacing``."""
    return sum(policy_size(doc) for name, doc in role.policies.items() if name != replacing)


class RolePolicySizeQuotaShim:
    """IAM PutRolePolicy refused beyond the role's aggregate inline-policy quota."""

    name = "RolePolicySizeQuotaShim"

    def __init__(self, quota: int = ROLE_POLICY_QUOTA) -> None:
        self.quota = quota
        self._lock = threading.Lock()

    def handles(self, req: AwsRequest) -> bool:
        return req.service == "iam" and req.action == "PutRolePolicy"

    def handle(self, req: AwsRequest) -> Response | None:
        p = req.params
        role_name, policy_name, document = p.get("RoleName"), p.get("PolicyName"), p.get("PolicyDocument")
        if not role_name or not policy_name or document is None:
            return None  # moto answers the missing parameter
        role = _role(role_name)
        if role is None:
            return None  # moto answers NoSuchEntity
        with self._lock:
            quota = self.quota
        if role_usage(role, replacing=policy_name) + policy_size(document) > quota:
            return aws_error(
                req, "LimitExceeded", f"Maximum policy size of {quota} bytes exceeded for role {role.name}", 409
            )
        return None

    def control_routes(self) -> dict:
        def get(body: Any, q: dict) -> tuple[int, Any]:
            return 200, {
                "quota": self.quota,
                "roles": {r.name: role_usage(r) for r in _roles() if r.policies},
            }

        def post(body: Any, q: dict) -> tuple[int, Any]:
            quota = (body or {}).get("quota")
            if isinstance(quota, bool) or not isinstance(quota, int) or quota < 0:
                raise ControlError(400, "a JSON body with a non-negative integer 'quota' is required")
            with self._lock:
                self.quota = quota
            return 200, {"quota": quota}

        def delete(body: Any, q: dict) -> tuple[int, Any]:
            with self._lock:
                self.quota = ROLE_POLICY_QUOTA
            return 200, {"quota": self.quota}

        return {
            ("GET", "/_cordon/iam/role-policy-quota"): get,
            ("POST", "/_cordon/iam/role-policy-quota"): post,
            ("DELETE", "/_cordon/iam/role-policy-quota"): delete,
        }


def install(server: Any) -> list[str]:
    """Adds the IAM shims to ``server`` (a ``LocalAws``); returns their names."""
    shims = [RolePolicySizeQuotaShim()]
    for shim in shims:
        server.add_shim(shim)
    return [s.name for s in shims]
