"""Emulator-gap shims: EC2 console screenshots, SSM managed-node inventory, S3 Object Lock checksums.

moto 5.2.5 answers the first two with an HTTP 500 page ("not yet implemented"), and is stricter
than S3 on the third; Cordon's screenshot, SSM collection and evidence steps depend on all three.
The shims answer in the real API's wire format (or fix the request up before moto sees it), using
moto's backends (in this process) as the source of truth about instances and buckets.

- ``ConsoleScreenshotShim``: EC2 ``GetConsoleScreenshot``
  (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_GetConsoleScreenshot.html).
- ``SsmInstanceInformationShim``: SSM ``DescribeInstanceInformation``
  (https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_DescribeInstanceInformation.html)
  over ``ManagedNodes``, the registry of instances "running the SSM Agent", which tests fill through
  ``/_cordon/ssm/managed-instances``; each node's agent is modelled in ``ssm_agent`` (a node is
  listed only once its agent registered). The run-command shim (``ssm_run_command``) uses the same
  registry.
- ``S3ObjectLockChecksumShim``: PutObject/UploadPart into an Object Lock bucket with only an
  ``x-amz-checksum-*`` header, which S3 accepts and moto refuses.
"""

from __future__ import annotations

import base64
import re
import threading
import time
from typing import Any

from .jpeg import console_screenshot
from .server import ControlError
from .wire import AwsRequest, Response, aws_error, epoch, json_response, request_id, xml_response

INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8}([0-9a-f]{9})?$")
EC2_NS = "http://ec2.amazonaws.com/doc/2016-11-15/"


def moto_instance(instance_id: str, region: str = "us-east-1") -> Any | None:
    """The instance in moto's EC2 backend (default account), or None."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ec2.models import ec2_backends

    backend = ec2_backends[DEFAULT_ACCOUNT_ID][region]
    return next((i for i in backend.all_instances() if i.id == instance_id), None)


def _instance_id_param(body: Any) -> str:
    if not isinstance(body, dict) or not isinstance(body.get("instance_id"), str):
        raise ControlError(400, "a JSON body with a string 'instance_id' is required")
    return body["instance_id"]


# ------------------------------------------------------------------------- console screenshot


class ConsoleScreenshotShim:
    """EC2 GetConsoleScreenshot: a small JPEG of a text console showing the instance ID.

    Gap path: ``POST /_cordon/ec2/screenshot-unsupported {"instance_id": ..., "code"?, "message"?}``
    makes the instance answer ``UnsupportedOperation`` (AWS does so where the instance type or
    hypervisor cannot capture a screenshot); ``DELETE`` with the same body (or none: all) undoes it.
    """

    name = "ConsoleScreenshotShim"

    def __init__(self) -> None:
        self.unsupported: dict[str, tuple[str, str]] = {}
        self._lock = threading.Lock()

    def handles(self, req: AwsRequest) -> bool:
        return req.service == "ec2" and req.action == "GetConsoleScreenshot"

    def handle(self, req: AwsRequest) -> Response:
        instance_id = req.params.get("InstanceId")
        if not instance_id:
            return aws_error(req, "MissingParameter", "The request must contain the parameter InstanceId")
        if not INSTANCE_ID.match(instance_id):
            return aws_error(req, "InvalidInstanceID.Malformed", f'Invalid id: "{instance_id}" (expecting "i-...")')
        instance = moto_instance(instance_id, req.region)
        if instance is None:
            return aws_error(req, "InvalidInstanceID.NotFound", f"The instance ID '{instance_id}' does not exist")
        with self._lock:
            gap = self.unsupported.get(instance_id)
        if gap:
            return aws_error(req, gap[0], gap[1])
        if req.params.get("DryRun") == "true":
            return aws_error(req, "DryRunOperation", "Request would have succeeded, but DryRun flag is set.", 412)
        name = next(
            (t["value"] for t in instance.get_tags() if t["key"] == "Name"),
            "ip-" + instance.private_ip.replace(".", "-"),
        )
        jpeg = console_screenshot(["Amazon Linux 2023", "Kernel 6.1 x86_64", "", instance_id, f"{name} login: _"])
        return xml_response(
            f'<GetConsoleScreenshotResponse xmlns="{EC2_NS}"><requestId>{request_id()}</requestId>'
            f"<instanceId>{instance_id}</instanceId><imageData>{base64.b64encode(jpeg).decode()}</imageData>"
            "</GetConsoleScreenshotResponse>"
        )

    def control_routes(self) -> dict:
        def mark(body: Any, q: dict) -> tuple[int, Any]:
            instance_id = _instance_id_param(body)
            code = body.get("code") or "UnsupportedOperation"
            message = body.get("message") or "The instance type does not support console screenshots."
            with self._lock:
                self.unsupported[instance_id] = (code, message)
            return 201, {"instance_id": instance_id, "code": code}

        def unmark(body: Any, q: dict) -> tuple[int, Any]:
            with self._lock:
                if body:
                    self.unsupported.pop(_instance_id_param(body), None)
                else:
                    self.unsupported.clear()
            return 200, {"unsupported": sorted(self.unsupported)}

        return {
            ("POST", "/_cordon/ec2/screenshot-unsupported"): mark,
            ("DELETE", "/_cordon/ec2/screenshot-unsupported"): unmark,
        }


# ------------------------------------------------------------------------- managed nodes

PLATFORMS = {
    "Linux": {"PlatformName": "Amazon Linux", "PlatformVersion": "2023"},
    "Windows": {"PlatformName": "Microsoft Windows Server 2022 Datacenter", "PlatformVersion": "10.0.20348"},
}
AGENT_VERSION = "3.3.1142.0"


class ManagedNodes:
    """Instances registered as SSM managed nodes (what the SSM Agent does on a real instance).

    ``register`` starts the agent on the instance (``ssm_agent.AgentFleet``): it takes the
    credentials of the instance profile associated now and calls ``ssm:UpdateInstanceInformation``.
    Only when that call got through (IAM allows it for that session, the network reaches the ``ssm``
    endpoint) is the instance a managed node: listed by DescribeInstanceInformation, a target for
    SendCommand. A node whose agent could not register is absent, as on AWS; its agent tries again
    later (25 minutes after an AccessDenied, 5 otherwise), or at once on ``POST /_cordon/ssm/agent
    {"instance_id", "refresh": true}``; ``GET /_cordon/ssm/agent?instance_id=`` says why.

    ``PingStatus``: ``ConnectionLost`` while the EC2 instance is not running (a stopped or
    terminated instance's agent stops pinging,
    https://docs.aws.amazon.com/systems-manager/latest/userguide/fleet-manager-managed-nodes.html),
    else the result of the agent's last health ping (every 5 minutes, see ``ssm_agent``): ``Online``
    or ``ConnectionLost``. A test can force a status with ``ping_status`` (the node is then listed
    whatever its agent found).
    """

    def __init__(self) -> None:
        from .ssm_agent import AgentFleet

        self._nodes: dict[str, dict] = {}
        self._lock = threading.Lock()
        self.agents = AgentFleet()

    def register(self, instance_id: str, platform: str = "Linux", **extra: Any) -> dict:
        if platform not in PLATFORMS:
            raise ControlError(400, f"platform must be one of {sorted(PLATFORMS)}")
        if moto_instance(instance_id) is None:
            raise ControlError(404, f"no EC2 instance {instance_id} in the emulator")
        node = {"instance_id": instance_id, "platform": platform, "registered_at": time.time(), **extra}
        with self._lock:
            self._nodes[instance_id] = node
        agent = self.agents.start(instance_id)
        return {
            **node,
            "registered": agent.registered_at is not None,
            "agent": {"role_arn": agent.role_arn, "health": agent.ping_reason},
        }

    def unregister(self, instance_id: str | None) -> None:
        with self._lock:
            if instance_id is None:
                self._nodes.clear()
            else:
                self._nodes.pop(instance_id, None)
        self.agents.stop(instance_id)

    def _listed(self, instance_id: str, node: dict) -> bool:
        agent = self.agents.get(instance_id)
        return bool(node.get("ping_status")) or (agent is not None and agent.registered_at is not None)

    def ids(self) -> list[str]:
        """The managed nodes: instances whose agent registered."""
        with self._lock:
            nodes = dict(self._nodes)
        return sorted(i for i, n in nodes.items() if self._listed(i, n))

    def info(self, instance_id: str, region: str = "us-east-1") -> dict | None:
        """The node as DescribeInstanceInformation lists it, or None when not a managed node."""
        with self._lock:
            node = self._nodes.get(instance_id)
        if node is None or not self._listed(instance_id, node):
            return None
        agent = self.agents.get(instance_id)
        instance = moto_instance(instance_id, region)
        running = instance is not None and instance.state == "running"
        pinged = agent is not None and agent.ping_ok
        ping = node.get("ping_status") or ("Online" if running and pinged else "ConnectionLost")
        last_ping = (agent.last_ok_ping if agent is not None else None) or node["registered_at"]
        platform = node["platform"]
        return {
            "InstanceId": instance_id,
            "PingStatus": ping,
            "LastPingDateTime": epoch(last_ping),
            "AgentVersion": node.get("agent_version", AGENT_VERSION),
            "IsLatestVersion": True,
            "PlatformType": platform,
            "PlatformName": node.get("platform_name", PLATFORMS[platform]["PlatformName"]),
            "PlatformVersion": node.get("platform_version", PLATFORMS[platform]["PlatformVersion"]),
            "ResourceType": "EC2Instance",
            "IPAddress": getattr(instance, "private_ip", None) or "",
            "ComputerName": getattr(instance, "private_dns_name", None) or instance_id,
            "SourceId": instance_id,
            "SourceType": "AWS::EC2::Instance",
        }

    def control_routes(self) -> dict:
        def register(body: Any, q: dict) -> tuple[int, Any]:
            instance_id = _instance_id_param(body)
            extra = {
                k: body[k] for k in ("ping_status", "platform_name", "platform_version", "agent_version") if k in body
            }
            return 201, self.register(instance_id, body.get("platform", "Linux"), **extra)

        def unregister(body: Any, q: dict) -> tuple[int, Any]:
            self.unregister(_instance_id_param(body) if body else None)
            return 200, {"managed_instances": self.ids()}

        return {
            ("GET", "/_cordon/ssm/managed-instances"): lambda body, q: (200, {"managed_instances": self.ids()}),
            ("POST", "/_cordon/ssm/managed-instances"): register,
            ("DELETE", "/_cordon/ssm/managed-instances"): unregister,
        }


class SsmInstanceInformationShim:
    """SSM DescribeInstanceInformation over the registered managed nodes.

    Supports ``Filters`` (``Key``/``Values``) and the older ``InstanceInformationFilterList``
    (``key``/``valueSet``) with the keys ``InstanceIds``, ``PingStatus``, ``PlatformTypes``,
    ``ResourceType`` and ``AgentVersion``, and ``MaxResults``/``NextToken`` paging. An instance that
    is not registered is simply absent from the answer, as on AWS.
    """

    name = "SsmInstanceInformationShim"
    FILTER_FIELDS = {
        "InstanceIds": "InstanceId",
        "PingStatus": "PingStatus",
        "PlatformTypes": "PlatformType",
        "ResourceType": "ResourceType",
        "AgentVersion": "AgentVersion",
    }

    def __init__(self, nodes: ManagedNodes) -> None:
        self.nodes = nodes

    def handles(self, req: AwsRequest) -> bool:
        return req.service == "ssm" and req.action == "DescribeInstanceInformation"

    def control_routes(self) -> dict:
        return self.nodes.control_routes()  # registration of managed nodes

    def handle(self, req: AwsRequest) -> Response:
        p = req.params
        filters: list[tuple[str, list[str]]] = []
        for f in p.get("Filters") or []:
            filters.append((f.get("Key", ""), f.get("Values") or []))
        for f in p.get("InstanceInformationFilterList") or []:
            filters.append((f.get("key", ""), f.get("valueSet") or []))
        for key, values in filters:
            if key not in self.FILTER_FIELDS:
                return aws_error(req, "InvalidFilterKey", f"The filter key {key} is not supported by the local stack")
            if not values:
                return aws_error(
                    req, "InvalidInstanceInformationFilterValue", f"The filter {key} needs at least one value"
                )
        items = [info for i in self.nodes.ids() if (info := self.nodes.info(i, req.region))]
        for key, values in filters:
            items = [i for i in items if i[self.FILTER_FIELDS[key]] in values]
        max_results = int(p.get("MaxResults") or 50)
        if not 5 <= max_results <= 50:
            return aws_error(
                req,
                "ValidationException",
                "1 validation error detected: Value at 'maxResults' failed to satisfy constraint: Member must have value between 5 and 50",
            )
        start = int(p.get("NextToken") or 0)
        page = items[start : start + max_results]
        out: dict[str, Any] = {"InstanceInformationList": page}
        if start + max_results < len(items):
            out["NextToken"] = str(start + max_results)
        return json_response(out, req)


# ------------------------------------------------------------------------- S3 Object Lock checksum


class S3ObjectLockChecksumShim:
    """S3 PutObject/UploadPart into an Object Lock bucket: accept any ``x-amz-checksum-*`` header.

    S3 requires an integrity check on every write that gets a retention period (explicit lock
    headers, or the bucket's default retention), and answers ``InvalidRequest`` "Content-MD5 OR
    x-amz-checksum- HTTP header is required for Put Object requests with Object Lock parameters"
    without one (https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-lock.html,
    https://docs.aws.amazon.com/AmazonS3/latest/userguide/checking-object-integrity.html).
    moto 5.2.5 accepts only ``Content-MD5`` or ``x-amz-sdk-checksum-algorithm`` and rejects a
    request that carries just ``x-amz-checksum-sha256`` (what an SDK sends for a precomputed
    checksum), with its own code ``MissingUploadObjectWithObjectLockHeaders``.

    So: a request with an ``x-amz-checksum-<alg>`` value gets the matching
    ``x-amz-sdk-checksum-algorithm`` added before moto sees it; a request with no checksum at all
    into a locked bucket is answered with S3's real ``InvalidRequest``.
    """

    name = "S3ObjectLockChecksumShim"
    ALGORITHMS = {"crc32", "crc32c", "crc64nvme", "sha1", "sha256"}

    def handles(self, req: AwsRequest) -> bool:
        return req.service == "s3" and req.action in ("PutObject", "UploadPart")

    def handle(self, req: AwsRequest) -> Response | None:
        h = req.headers
        if "content-md5" in h or "x-amz-sdk-checksum-algorithm" in h:
            return None
        algorithm = next((a for a in self.ALGORITHMS if f"x-amz-checksum-{a}" in h), None)
        if algorithm is None:
            algorithm = h.get("x-amz-trailer", "").removeprefix("x-amz-checksum-") or None
        if algorithm:
            req.environ["HTTP_X_AMZ_SDK_CHECKSUM_ALGORITHM"] = algorithm.upper()
            return None
        lock_headers = any(k in h for k in ("x-amz-object-lock-mode", "x-amz-object-lock-retain-until-date")) or (
            h.get("x-amz-object-lock-legal-hold", "").upper() == "ON"
        )
        if lock_headers or self._default_retention(req.path.lstrip("/").split("/", 1)[0]):
            kind = "Put Part" if req.action == "UploadPart" else "Put Object"
            return aws_error(
                req,
                "InvalidRequest",
                f"Content-MD5 OR x-amz-checksum- HTTP header is required for {kind} requests with Object Lock parameters",
            )
        return None

    @staticmethod
    def _default_retention(bucket_name: str) -> bool:
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.s3.models import s3_backends

        bucket = s3_backends[DEFAULT_ACCOUNT_ID]["aws"].buckets.get(bucket_name)
        return bool(bucket and bucket.object_lock_enabled and bucket.has_default_lock)

    def control_routes(self) -> dict:
        return {}
