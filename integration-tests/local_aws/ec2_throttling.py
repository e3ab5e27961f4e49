"""EC2's request token buckets: ``RequestLimitExceeded`` when AWS would send it.

moto answers every EC2 request, however many arrive. EC2 does not: "Amazon EC2 throttles EC2 API
requests for each AWS account on a per-Region basis ... If you exceed an API throttling limit, you
get the ``RequestLimitExceeded`` error code" ("Request throttling for the Amazon EC2 API",
https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html, the page the EC2 API
reference links as https://docs.aws.amazon.com/AWSEC2/latest/APIReference/throttling.html). Without
this shim a burst of incidents never meets the limit that decides whether they all get contained.

What the page documents, and how the shim applies it (``Ec2ThrottlingShim``):

- **Token buckets, per account and Region.** "your account has a bucket that holds a specific
  number of tokens"; "Each request that you make removes one token from the API's bucket." Buckets
  are kept per (account, Region): the account is the one moto serves the request from
  (``MOTO_ACCOUNT_ID``, the ``x-moto-account-id`` header, else the access key's account, else
  moto's default account 123456789012), the Region the SigV4 scope's.
- **One bucket per API action.** "each API is evaluated individually, and you are throttled on the
  number of requests you make on a per-API basis ... requests for other API are not affected";
  "Limits are applied to individual API actions, not API action categories." The category only
  decides the bucket's size and refill rate:

  | category (``Limits.category``) | actions | maximum capacity | refill / s |
  | --- | --- | --- | --- |
  | non-mutating | ``Describe*``, ``List*``, ``Search*``, ``Get*`` not in another category | 100 | 20 |
  | unfiltered and unpaginated non-mutating | ``DescribeInstances``, ``DescribeInstanceStatus``, ``DescribeNetworkInterfaces``, ``DescribeSecurityGroups``, ``DescribeSnapshots``, ``DescribeSpotInstanceRequests``, ``DescribeVolumes``, requested without a filter and without pagination | 50 | 10 |
  | mutating | every other action | 50 | 5 |
  | resource-intensive | ``AcceptVpcPeeringConnection``, ``AuthorizeSecurityGroupIngress``, ``CancelSpotInstanceRequests``, ``CreateKeyPair``, ``CreateVpcPeeringConnection``, ``DeleteVpcPeeringConnection``, ``RejectVpcPeeringConnection``, ``RevokeSecurityGroupIngress``, ``RequestSpotInstances`` | 50 | 5 |
  | uncategorized | their own sizes (``UNCATEGORIZED``: e.g. ``CreateSnapshots`` 100/5, ``CreateTags`` 100/10, ``ModifyNetworkInterfaceAttribute`` 100/5, ``DisassociateIamInstanceProfile`` 100/5, ``RunInstances`` 5/2) | | |

  An unfiltered and unpaginated request of the seven actions takes its token from a bucket of its
  own ("use tokens from a smaller token bucket"), one per action. A request counts as filtered
  when it carries a ``Filter.N`` parameter and as paginated when it carries ``MaxResults`` or
  ``NextToken``: the page names only "pagination or a filter", so a list of IDs
  (``InstanceId.1``) is neither, and a DescribeInstances by ID alone takes the small bucket.
  "Console non-mutating actions" (requests from the EC2 console) do not arise here.
- **Refill.** "If the bucket is below its maximum capacity, a set number of tokens is added back to
  it every second until it reaches its maximum capacity ... The bucket can't hold more than its
  maximum number of tokens." Refill is applied continuously (rate × elapsed time, capped at the
  capacity): the same burst and the same sustained rate as whole tokens once a second, and the
  documented fractional rates (``AdvertiseByoipCidr`` 0.1 / s) need no special case.
- **Resource buckets.** ``RunInstances``, ``TerminateInstances``, ``StartInstances`` and
  ``StopInstances`` also draw on "a separate resource token bucket that depletes based on the
  number of resources that are impacted by the request" (1000 tokens; refill 2, 20, 2, 20 per
  second): one token per instance (``MaxCount`` of RunInstances, each ``InstanceId.N`` of the
  others). "If you exceed a specific bucket limit for an API ... the action of the API is
  limited": a request passes only if every bucket it draws on has its tokens.
- **The answer.** A request that finds a bucket short is answered ``RequestLimitExceeded``,
  "Request limit exceeded.", in EC2's error shape (``wire.aws_error``: ``<Response><Errors>``,
  https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html) with HTTP 503, the
  status EC2 sends with it (clients match 503 + ``RequestLimitExceeded``, e.g. HTCondor's EC2
  GAHP); the SDKs classify the code as a throttle and retry it
  (https://docs.aws.amazon.com/sdkref/latest/guide/feature-retry-behavior.html). A throttled
  request takes no token (the page says nothing of throttled requests costing one; counting them
  would only lengthen every burst) and never reaches moto.

Every EC2 request is counted, whoever makes it: the steps, the Step Functions interpreter, the
tests and the seeding, as every caller in an account counts on AWS. Requests that a fault rule
answers (``faults``) never reach the shims and take no token.

Scaling, for tests and benchmarks: every capacity is multiplied by ``capacity_scale`` (at least 1
token, so that a single request can pass) and every refill rate by ``refill_scale``; ``scale`` sets
both. Default: on, at the documented values (``scale`` 1), as AWS would throttle. At start-up
``CORDON_EC2_THROTTLING=off`` switches it off and ``CORDON_EC2_THROTTLING_SCALE=<x>`` scales it.

Control endpoints (``/_cordon/ec2/throttling``):

- ``GET``: the settings, each bucket in use (account, Region, name, capacity, refill, tokens,
  requests, throttled) and the number of requests throttled since the last reset.
- ``POST`` ``{"enabled": bool, "scale": x, "capacity_scale": x, "refill_scale": x}`` (any of them):
  new settings; every bucket starts again full (an account that has been quiet has full buckets).
- ``DELETE``: the start-up settings again, buckets full.

The shim is placed first among the shims (``install``), so that a request the EC2 gap shims answer
(``network_shims``, ``strict``, ``shims``) is throttled as well; its ``handles`` takes the tokens
and answers True only for a request that is throttled, so other shims and moto see the rest.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .server import ControlError
from .wire import AwsRequest, Response, aws_error

DOC = "https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html"

# "Request token bucket sizes and refill rates" (DOC): (maximum capacity, refill per second).
NON_MUTATING = (100.0, 20.0)
UNFILTERED_NON_MUTATING = (50.0, 10.0)
MUTATING = (50.0, 5.0)
RESOURCE_INTENSIVE = (50.0, 5.0)

NON_MUTATING_PREFIXES = ("Describe", "List", "Search", "Get")
UNFILTERED_ACTIONS = frozenset(
    {
        "DescribeInstances",
        "DescribeInstanceStatus",
        "DescribeNetworkInterfaces",
        "DescribeSecurityGroups",
        "DescribeSnapshots",
        "DescribeSpotInstanceRequests",
        "DescribeVolumes",
    }
)
RESOURCE_INTENSIVE_ACTIONS = frozenset(
    {
        "AcceptVpcPeeringConnection",
        "AuthorizeSecurityGroupIngress",
        "CancelSpotInstanceRequests",
        "CreateKeyPair",
        "CreateVpcPeeringConnection",
        "DeleteVpcPeeringConnection",
        "RejectVpcPeeringConnection",
        "RevokeSecurityGroupIngress",
        "RequestSpotInstances",
    }
)
# "Uncategorized actions ... receive their own token bucket sizes and refill rates" (DOC).
UNCATEGORIZED: dict[str, tuple[float, float]] = {
    "AcceptVpcEndpointConnections": (10, 1),
    "AdvertiseByoipCidr": (1, 0.1),
    "AssignIpv6Addresses": (100, 5),
    "AssignPrivateIpAddresses": (100, 5),
    "AssignPrivateNatGatewayAddress": (10, 1),
    "AssociateCapacityReservationBillingOwner": (1, 0.5),
    "AssociateEnclaveCertificateIamRole": (10, 1),
    "AssociateIamInstanceProfile": (100, 5),
    "AssociateNatGatewayAddress": (10, 1),
    "AttachVerifiedAccessTrustProvider": (10, 2),
    "AuthorizeClientVpnIngress": (5, 2),
    "CancelDeclarativePoliciesReport": (1, 1),
    "CopyImage": (100, 1),
    "CreateClientVpnRoute": (5, 2),
    "CreateCoipCidr": (5, 1),
    "CreateCoipPool": (5, 1),
    "CreateDefaultSubnet": (1, 1),
    "CreateDefaultVpc": (1, 1),
    "CreateLaunchTemplateVersion": (100, 5),
    "CreateNatGateway": (10, 1),
    "CreateNetworkInterface": (100, 5),
    "CreateRestoreImageTask": (50, 0.1),
    "CreateSnapshot": (100, 5),
    "CreateSnapshots": (100, 5),
    "CreateSpotDatafeedSubscription": (50, 3),
    "CreateStoreImageTask": (50, 0.1),
    "CreateSubnetCidrReservation": (5, 1),
    "CreateTags": (100, 10),
    "CreateVerifiedAccessEndpoint": (20, 4),
    "CreateVerifiedAccessGroup": (10, 2),
    "CreateVerifiedAccessInstance": (10, 2),
    "CreateVerifiedAccessTrustProvider": (10, 2),
    "CreateVolume": (100, 5),
    "CreateVpcEndpoint": (4, 0.3),
    "CreateVpcEndpointServiceConfiguration": (10, 1),
    "DeleteClientVpnRoute": (5, 2),
    "DeleteCoipCidr": (5, 1),
    "DeleteCoipPool": (5, 1),
    "DeleteCoipPoolPermission": (5, 1),
    "DeleteNatGateway": (10, 1),
    "DeleteNetworkInterface": (100, 5),
    "DeleteSnapshot": (100, 5),
    "DeleteSpotDatafeedSubscription": (50, 3),
    "DeleteSubnetCidrReservation": (5, 1),
    "DeleteQueuedReservedInstances": (5, 5),
    "DeleteTags": (100, 10),
    "DeleteVerifiedAccessEndpoint": (20, 4),
    "DeleteVerifiedAccessGroup": (10, 2),
    "DeleteVerifiedAccessInstance": (10, 2),
    "DeleteVerifiedAccessTrustProvider": (10, 2),
    "DeleteVolume": (100, 5),
    "DeleteVpcEndpoints": (4, 0.3),
    "DeleteVpcEndpointServiceConfigurations": (10, 1),
    "DeprovisionByoipCidr": (1, 0.1),
    "DeregisterImage": (100, 5),
    "DescribeAggregateIdFormat": (10, 10),
    "DescribeByoipCidrs": (1, 0.5),
    "DescribeCapacityBlockExtensionOfferings": (10, 0.15),
    "DescribeCapacityBlockOfferings": (10, 0.15),
    "DescribeDeclarativePoliciesReports": (5, 5),
    "DescribeHostReservations": (5, 2),
    "DescribeHostReservationOfferings": (5, 2),
    "DescribeIdentityIdFormat": (10, 10),
    "DescribeIdFormat": (10, 10),
    "DescribeInstanceTopology": (1, 1),
    "DescribeMovingAddresses": (1, 1),
    "DescribePrincipalIdFormat": (10, 10),
    "DescribeReservedInstancesOfferings": (10, 10),
    "DescribeSecurityGroupReferences": (20, 5),
    "DescribeSpotDatafeedSubscription": (100, 13),
    "DescribeSpotFleetInstances": (100, 5),
    "DescribeSpotFleetRequestHistory": (100, 5),
    "DescribeSpotFleetRequests": (50, 3),
    "DescribeStaleSecurityGroups": (20, 5),
    "DescribeStoreImageTasks": (50, 0.5),
    "DescribeVerifiedAccessInstanceLoggingConfigurations": (10, 2),
    "DetachVerifiedAccessTrustProvider": (10, 2),
    "DisableFastLaunch": (5, 2),
    "DisableImageBlockPublicAccess": (1, 0.1),
    "DisableSnapshotBlockPublicAccess": (1, 0.1),
    "DisassociateCapacityReservationBillingOwner": (1, 0.5),
    "DisassociateEnclaveCertificateIamRole": (10, 1),
    "DisassociateIamInstanceProfile": (100, 5),
    "DisassociateNatGatewayAddress": (10, 1),
    "EnableFastLaunch": (5, 2),
    "EnableImageBlockPublicAccess": (1, 0.1),
    "EnableSnapshotBlockPublicAccess": (1, 0.1),
    "GetAssociatedEnclaveCertificateIamRoles": (10, 1),
    "GetDeclarativePoliciesReportSummary": (5, 5),
    "GetHostReservationPurchasePreview": (5, 2),
    "ModifyImageAttribute": (100, 5),
    "ModifyInstanceMetadataDefaults": (2, 2),
    "ModifyInstanceMetadataOptions": (100, 5),
    "ModifyLaunchTemplate": (100, 5),
    "ModifyNetworkInterfaceAttribute": (100, 5),
    "ModifySnapshotAttribute": (100, 5),
    "ModifyVerifiedAccessEndpoint": (20, 4),
    "ModifyVerifiedAccessEndpointPolicy": (20, 4),
    "ModifyVerifiedAccessGroup": (10, 2),
    "ModifyVerifiedAccessGroupPolicy": (20, 4),
    "ModifyVerifiedAccessInstance": (10, 2),
    "ModifyVerifiedAccessInstanceLoggingConfiguration": (10, 2),
    "ModifyVerifiedAccessTrustProvider": (10, 2),
    "ModifyVpcEndpoint": (4, 0.3),
    "ModifyVpcEndpointServiceConfiguration": (10, 1),
    "MoveAddressToVpc": (1, 1),
    "ProvisionByoipCidr": (1, 0.1),
    "PurchaseCapacityBlock": (10, 0.15),
    "PurchaseCapacityBlockExtension": (10, 0.15),
    "PurchaseHostReservation": (5, 2),
    "PurchaseReservedInstancesOffering": (5, 5),
    "RejectVpcEndpointConnections": (10, 1),
    "RestoreAddressToClassic": (1, 1),
    "RevokeClientVpnIngress": (5, 2),
    "RunInstances": (5, 2),
    "StartDeclarativePoliciesReport": (1, 1),
    "StartInstances": (5, 2),
    "TerminateInstances": (100, 5),
    "UnassignPrivateIpAddresses": (100, 5),
    "UnassignPrivateNatGatewayAddress": (10, 1),
    "WithdrawByoipCidr": (1, 0.1),
}
# "Resource token bucket sizes and refill rates" (DOC): one token per instance the request affects.
RESOURCE_BUCKETS: dict[str, tuple[float, float]] = {
    "RunInstances": (1000, 2),
    "TerminateInstances": (1000, 20),
    "StartInstances": (1000, 2),
    "StopInstances": (1000, 20),
}

_FILTER = re.compile(r"^Filters?\.\d+\.")
_INSTANCE_ID = re.compile(r"^InstanceId\.\d+$")


@dataclass(frozen=True)
class Draw:
    """What one request takes from one bucket."""

    bucket: str  # the bucket's name: the action, "<action> (unfiltered)" or "<action> (resources)"
    category: str
    capacity: float  # documented values, before scaling
    refill_per_s: float
    tokens: float = 1.0


def category(action: str, params: dict[str, Any]) -> str:
    """The request-rate category of an EC2 request, as DOC defines them."""
    if action in UNCATEGORIZED:
        return "uncategorized"
    if action in RESOURCE_INTENSIVE_ACTIONS:
        return "resource-intensive"
    if action.startswith(NON_MUTATING_PREFIXES):
        if action in UNFILTERED_ACTIONS and not filtered_or_paginated(params):
            return "unfiltered-non-mutating"
        return "non-mutating"
    return "mutating"


def filtered_or_paginated(params: dict[str, Any]) -> bool:
    """Whether the request names a filter (``Filter.N.*``) or pagination (``MaxResults``/``NextToken``)."""
    return any(_FILTER.match(k) for k in params) or "MaxResults" in params or "NextToken" in params


def draws(action: str, params: dict[str, Any]) -> list[Draw]:
    """Every bucket a request takes tokens from: its request bucket, and a resource bucket for the
    four instance-lifecycle actions."""
    kind = category(action, params)
    size = {
        "uncategorized": UNCATEGORIZED.get(action),
        "resource-intensive": RESOURCE_INTENSIVE,
        "unfiltered-non-mutating": UNFILTERED_NON_MUTATING,
        "non-mutating": NON_MUTATING,
        "mutating": MUTATING,
    }[kind]
    name = f"{action} (unfiltered)" if kind == "unfiltered-non-mutating" else action
    out = [Draw(name, kind, float(size[0]), float(size[1]))]
    if action in RESOURCE_BUCKETS:
        capacity, rate = RESOURCE_BUCKETS[action]
        out.append(Draw(f"{action} (resources)", "resource", capacity, rate, float(_resources(action, params))))
    return out


def _resources(action: str, params: dict[str, Any]) -> int:
    if action == "RunInstances":
        try:
            return max(1, int(params.get("MaxCount") or params.get("MinCount") or 1))
        except ValueError:
            return 1
    return max(1, sum(1 for k in params if _INSTANCE_ID.match(k)))


@dataclass
class TokenBucket:
    """A token bucket: ``capacity`` tokens at most, ``refill_per_s`` added back per second."""

    capacity: float
    refill_per_s: float
    tokens: float
    updated: float
    requests: int = 0
    throttled: int = 0

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.refill_per_s)
            self.updated = now

    def has(self, n: float, now: float) -> bool:
        self.refill(now)
        # A hair of tolerance: refill arithmetic in floats must not refuse a token that is there.
        return self.tokens + 1e-9 >= n

    def take(self, n: float, now: float) -> None:
        self.refill(now)
        self.tokens = max(0.0, self.tokens - n)


@dataclass
class Settings:
    enabled: bool = True
    capacity_scale: float = 1.0
    refill_scale: float = 1.0

    def to_dict(self) -> dict:
        return {"enabled": self.enabled, "capacity_scale": self.capacity_scale, "refill_scale": self.refill_scale}


def settings_from_env(environ: dict[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    enabled = env.get("CORDON_EC2_THROTTLING", "on").strip().lower() not in ("off", "0", "false", "no")
    scale = float(env.get("CORDON_EC2_THROTTLING_SCALE", "1") or 1)
    if scale <= 0:
        raise ValueError("CORDON_EC2_THROTTLING_SCALE must be a positive number")
    return Settings(enabled=enabled, capacity_scale=scale, refill_scale=scale)


@dataclass
class Buckets:
    """The buckets of every (account, Region), created full on first use."""

    settings: Settings = field(default_factory=Settings)
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[tuple[str, str, str], TokenBucket] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    throttled: int = 0

    def _bucket(self, account: str, region: str, draw: Draw, now: float) -> TokenBucket:
        key = (account, region, draw.bucket)
        bucket = self._buckets.get(key)
        if bucket is None:
            capacity = max(1.0, draw.capacity * self.settings.capacity_scale)
            bucket = TokenBucket(capacity, draw.refill_per_s * self.settings.refill_scale, capacity, now)
            self._buckets[key] = bucket
        return bucket

    def admit(self, account: str, region: str, action: str, params: dict[str, Any]) -> bool:
        """Takes the request's tokens and answers True; or, if a bucket is short, takes nothing and
        answers False (the request is throttled)."""
        with self._lock:
            if not self.settings.enabled:
                return True
            now = self.clock()
            needed = [(self._bucket(account, region, d, now), d.tokens) for d in draws(action, params)]
            for bucket, _ in needed:
                bucket.requests += 1
            short = [b for b, n in needed if not b.has(min(n, b.capacity), now)]
            if short:
                for b in short:
                    b.throttled += 1
                self.throttled += 1
                return False
            for bucket, n in needed:
                bucket.take(min(n, bucket.capacity), now)
            return True

    def configure(self, settings: Settings) -> None:
        with self._lock:
            self.settings = settings
            self._buckets.clear()
            self.throttled = 0

    def describe(self) -> dict:
        with self._lock:
            now = self.clock()
            rows = []
            for (account, region, name), b in sorted(self._buckets.items()):
                b.refill(now)
                rows.append(
                    {
                        "account": account,
                        "region": region,
                        "bucket": name,
                        "capacity": b.capacity,
                        "refill_per_s": b.refill_per_s,
                        "tokens": round(b.tokens, 3),
                        "requests": b.requests,
                        "throttled": b.throttled,
                    }
                )
            return {**self.settings.to_dict(), "throttled": self.throttled, "buckets": rows, "source": DOC}


def account_of(req: AwsRequest) -> str:
    """The account moto serves ``req`` from (``moto.core.responses.BaseResponse.get_current_account``)."""
    if "MOTO_ACCOUNT_ID" in os.environ:
        return os.environ["MOTO_ACCOUNT_ID"]
    if req.headers.get("x-moto-account-id"):
        return req.headers["x-moto-account-id"]
    from moto.iam.models import get_account_id_from

    from .principals import access_key_of

    return get_account_id_from(access_key_of(req.headers, req.query_string) or "")


class Ec2ThrottlingShim:
    """EC2 requests beyond their token buckets answered ``RequestLimitExceeded`` (HTTP 503)."""

    name = "Ec2ThrottlingShim"

    def __init__(self, settings: Settings | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.initial = settings or settings_from_env()
        self.buckets = Buckets(settings=Settings(**self.initial.to_dict()), clock=clock)

    def handles(self, req: AwsRequest) -> bool:
        # Takes the tokens here: True only for a throttled request, which handle() answers.
        if req.service != "ec2" or not req.action or " " in req.action:
            return False
        return not self.buckets.admit(account_of(req), req.region, req.action, req.params)

    def handle(self, req: AwsRequest) -> Response | None:
        return aws_error(req, "RequestLimitExceeded", "Request limit exceeded.", 503)

    def control_routes(self) -> dict:
        def get(body: Any, q: dict) -> tuple[int, Any]:
            return 200, self.buckets.describe()

        def post(body: Any, q: dict) -> tuple[int, Any]:
            if not isinstance(body, dict):
                raise ControlError(400, 'a JSON body {"enabled"?: bool, "scale"?: x, ...} is required')
            current = self.buckets.settings
            enabled = body.get("enabled", current.enabled)
            if not isinstance(enabled, bool):
                raise ControlError(400, "'enabled' must be true or false")
            scales = {}
            for key in ("scale", "capacity_scale", "refill_scale"):
                value = body.get(key)
                if value is None:
                    continue
                if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                    raise ControlError(400, f"{key!r} must be a positive number")
                scales[key] = float(value)
            capacity = scales.get("capacity_scale", scales.get("scale", current.capacity_scale))
            refill = scales.get("refill_scale", scales.get("scale", current.refill_scale))
            self.buckets.configure(Settings(enabled=enabled, capacity_scale=capacity, refill_scale=refill))
            return 200, self.buckets.describe()

        def delete(body: Any, q: dict) -> tuple[int, Any]:
            self.buckets.configure(Settings(**self.initial.to_dict()))
            return 200, self.buckets.describe()

        return {
            ("GET", "/_cordon/ec2/throttling"): get,
            ("POST", "/_cordon/ec2/throttling"): post,
            ("DELETE", "/_cordon/ec2/throttling"): delete,
        }


def install(server: Any) -> str:
    """Puts the shim in front of every other shim of ``server`` (a ``LocalAws``); returns its name."""
    shim = Ec2ThrottlingShim()
    server.middleware.shims.insert(0, shim)
    server.middleware.add_routes(shim.control_routes())
    return shim.name
