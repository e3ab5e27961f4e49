"""Strictness shims: where moto 5.2.5 answers success and AWS refuses, or answers otherwise, for
calls Cordon makes. Each makes the emulator exactly as strict as AWS documents, no stricter.

- ``ElbTargetDrainingShim`` (ELBv2 ``DeregisterTargets`` / ``DescribeTargetHealth`` /
  ``RegisterTargets``, a patch of moto's model): a deregistered target stays listed as ``draining``
  with reason ``Target.DeregistrationInProgress`` for the target group's deregistration delay, then
  disappears; deregistering a target that is not registered succeeds; a target of a group that no
  load balancer uses is ``unused`` / ``Target.NotInUse``. moto removes the target at once, answers
  ``InvalidTarget`` for one that is not registered and calls every registered target ``healthy``.
- ``Ec2InstanceAttributeShim`` (EC2 ``ModifyInstanceAttribute``): ``InstanceInitiatedShutdownBehavior``
  really changes (moto lets the request fall through to its security-group handler, answers
  success and changes nothing), and termination protection cannot be changed on a Spot Instance
  (moto accepts it).
- ``AutoScalingDetachShim`` (Auto Scaling ``DetachInstances``): only an instance that is part of
  the group and ``InService`` or ``Standby`` (or retained, without decrementing) can be detached;
  moto detaches anything, and answers success for an instance that is not in the group at all.
  ``POST /_cordon/autoscaling/lifecycle-state`` puts an instance into another lifecycle state.

Control endpoints:

- ``GET|POST /_cordon/elbv2/deregistration-delay`` ``{"scale": 0.01}``: the local delay is the
  target group's ``deregistration_delay.timeout_seconds`` times ``scale`` (default 0.01: AWS's
  default of 300 s drains for 3 s here); GET also lists the targets draining now.
- ``GET|POST /_cordon/autoscaling/lifecycle-state`` ``{"instance_id", "state"}``.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from . import REGION
from .server import ControlError
from .shims import EC2_NS, moto_instance
from .wire import AwsRequest, Response, aws_error, request_id, xml_response

# ============================================================================ ELBv2 draining

DEFAULT_DELAY_SCALE = 0.01
DEREGISTRATION_DELAY = "deregistration_delay.timeout_seconds"
# AWS's default deregistration delay, when the attribute was never set.
DEFAULT_DEREGISTRATION_DELAY = 300

# The shim whose settings the patched model reads (one per server process).
_ELB_SHIM: ElbTargetDrainingShim | None = None
_elb_patched = False


def _port(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class ElbTargetDrainingShim:
    """ELBv2 deregistration as AWS documents it.

    - "The initial state of a deregistering target is ``draining``. After the deregistration delay
      elapses, the deregistration process completes and the state of the target is ``unused``";
      the delay is the target group attribute ``deregistration_delay.timeout_seconds``, 300 s by
      default (https://docs.aws.amazon.com/elasticloadbalancing/latest/application/edit-target-group-attributes.html#deregistration-delay).
      While draining, DescribeTargetHealth reports ``State=draining``, ``Reason=
      Target.DeregistrationInProgress`` ("The target is in the process of being deregistered and
      the deregistration delay period has not expired",
      https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_TargetHealth.html);
      once complete the target is no longer listed (asked for by ID it is ``unused`` /
      ``Target.NotRegistered``, which moto already answers).
      The same page says a target with no in-flight requests and no active connections completes
      at once. A compromised web server behind a load balancer is assumed to have connections (the
      case that matters for Cordon), so a target of a group that a load balancer uses always drains
      for the whole (scaled) delay; a target of a group that no load balancer uses cannot have any,
      and leaves at once.
    - "If the specified target does not exist, the action returns successfully"
      (https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_DeregisterTargets.html);
      "If you specified a port override when you registered a target, you must specify both the
      target ID and the port when you deregister it": a target given with another port is another
      target, so nothing happens to the registered one.
    - A registered target of a group that no load balancer uses is ``unused`` / ``Target.NotInUse``
      ("The target group is not used by any load balancer", API_TargetHealth), not ``healthy``.

    Re-registering a draining target makes it registered again.
    """

    name = "ElbTargetDrainingShim"
    ACTIONS = ("DeregisterTargets", "DescribeTargetHealth", "RegisterTargets")

    def __init__(self, scale: float = DEFAULT_DELAY_SCALE) -> None:
        global _ELB_SHIM
        self.scale = scale
        # (target group ARN, target ID) -> {"port", "until", "started"} (time.monotonic())
        self._draining: dict[tuple[str, str], dict[str, Any]] = {}
        self._lock = threading.Lock()
        _ELB_SHIM = self
        _patch_elbv2_model()

    def handles(self, req: AwsRequest) -> bool:
        # The work is done in moto's model (patched); claiming the requests tags them in the log.
        return req.service == "elasticloadbalancing" and req.action in self.ACTIONS

    def handle(self, req: AwsRequest) -> Response | None:
        return None

    # ------------------------------------------------------------------ state

    def local_delay(self, target_group: Any) -> float:
        """The target group's deregistration delay, scaled for the local stack."""
        raw = getattr(target_group, "attributes", {}).get(DEREGISTRATION_DELAY, DEFAULT_DEREGISTRATION_DELAY)
        try:
            seconds = float(raw)
        except (TypeError, ValueError):
            seconds = DEFAULT_DEREGISTRATION_DELAY
        return max(0.0, seconds) * self.scale

    def start(self, arn: str, target_id: str, port: Any, delay: float) -> None:
        now = time.monotonic()
        with self._lock:
            self._draining[(arn, target_id)] = {"port": port, "started": now, "until": now + delay}

    def stop(self, arn: str, target_id: str) -> None:
        with self._lock:
            self._draining.pop((arn, target_id), None)

    def draining(self, arn: str) -> dict[str, dict[str, Any]]:
        """Targets of the group still draining (expired ones are dropped)."""
        now = time.monotonic()
        with self._lock:
            for key in [k for k, v in self._draining.items() if v["until"] <= now]:
                del self._draining[key]
            return {tid: dict(v) for (a, tid), v in self._draining.items() if a == arn}

    # ------------------------------------------------------------------ control

    def control_routes(self) -> dict:
        def get(body: Any, q: dict) -> tuple[int, Any]:
            now = time.monotonic()
            with self._lock:
                items = [
                    {"target_group_arn": a, "id": t, "port": v["port"], "remaining_seconds": round(v["until"] - now, 3)}
                    for (a, t), v in self._draining.items()
                    if v["until"] > now
                ]
            return 200, {"scale": self.scale, "draining": items}

        def post(body: Any, q: dict) -> tuple[int, Any]:
            scale = (body or {}).get("scale")
            if isinstance(scale, bool) or not isinstance(scale, int | float) or not 0 <= scale <= 1:
                raise ControlError(400, "a JSON body with a number 'scale' between 0 and 1 is required")
            self.scale = float(scale)
            return 200, {"scale": self.scale}

        return {
            ("GET", "/_cordon/elbv2/deregistration-delay"): get,
            ("POST", "/_cordon/elbv2/deregistration-delay"): post,
        }


def _patch_elbv2_model() -> None:
    global _elb_patched
    if _elb_patched:
        return
    from moto.elbv2.models import ELBv2Backend, FakeHealthStatus, FakeTargetGroup

    original_register = FakeTargetGroup.register
    original_health = ELBv2Backend.describe_target_health

    def deregister(self: FakeTargetGroup, targets: list[dict[str, Any]]) -> None:
        shim = _ELB_SHIM
        for target in targets:
            registered = self.targets.get(target["Id"])
            if registered is None:
                continue  # "If the specified target does not exist, the action returns successfully."
            wanted = _port(target.get("Port", self.port))
            if wanted != _port(registered.get("Port")):
                continue  # another port is another target: it does not exist
            del self.targets[target["Id"]]
            self.deregistered_targets[target["Id"]] = registered
            delay = shim.local_delay(self) if shim else 0.0
            if shim and delay > 0 and self.load_balancer_arns:
                shim.start(self.arn, target["Id"], registered.get("Port"), delay)

    def register(self: FakeTargetGroup, targets: list[dict[str, Any]]) -> None:
        original_register(self, targets)
        if _ELB_SHIM:
            for target in targets:
                _ELB_SHIM.stop(self.arn, target["Id"])

    def describe_target_health(self: ELBv2Backend, target_group_arn: str, targets: list[dict[str, Any]]):
        statuses = original_health(self, target_group_arn, targets)  # raises TargetGroupNotFound
        group = self.target_groups[target_group_arn]
        draining = _ELB_SHIM.draining(target_group_arn) if _ELB_SHIM else {}

        def drained(target_id: str, port: Any) -> FakeHealthStatus:
            return FakeHealthStatus(
                target_id,
                port,
                group.health_check_port,
                "draining",
                "Target.DeregistrationInProgress",
                "Target deregistration is in progress",
            )

        if targets:
            statuses = [
                drained(s.instance_id, draining[s.instance_id]["port"]) if s.instance_id in draining else s
                for s in statuses
            ]
        else:
            statuses = list(statuses) + [drained(tid, d["port"]) for tid, d in draining.items()]
        if not group.load_balancer_arns:
            for s in statuses:
                if s.status == "healthy":
                    s.status, s.reason = "unused", "Target.NotInUse"
                    s.description = "The target group is not used by any load balancer"
        return statuses

    FakeTargetGroup.deregister = deregister
    FakeTargetGroup.register = register
    ELBv2Backend.describe_target_health = describe_target_health
    _elb_patched = True


# ============================================================================ EC2 instance attributes

SHUTDOWN_BEHAVIOURS = ("stop", "terminate")


class Ec2InstanceAttributeShim:
    """EC2 ModifyInstanceAttribute for the two attributes where moto is kinder than EC2.

    - ``InstanceInitiatedShutdownBehavior``: "Specifies whether an instance stops or terminates
      when you initiate shutdown from the instance", values ``stop`` | ``terminate``
      (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_ModifyInstanceAttribute.html,
      https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/Using_ChangingInstanceInitiatedShutdownBehavior.html).
      moto 5.2.5 has no handler for ``InstanceInitiatedShutdownBehavior.Value``: the request falls
      through to its security-group handler, which answers success and changes nothing. Here the
      attribute changes (DescribeInstanceAttribute reads it back); another value is refused with
      EC2's ``InvalidParameterValue`` ("A value specified in a parameter is not valid",
      https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html).
    - ``DisableApiTermination`` on a Spot Instance: "You can't enable termination protection for
      Spot Instances" (API_ModifyInstanceAttribute). EC2 answers HTTP 400 ``UnsupportedOperation``
      "Modifying 'disableApiTermination' is not supported for spot instances." for either value
      (the exact answer as logged against EC2 in hashicorp/terraform-provider-aws#41206 and
      cloud-custodian/cloud-custodian#2083). moto accepts it. On any other instance moto's own
      handling is right and is left alone.

    Both the ``<Attribute>.Value`` form and the older ``Attribute``/``Value`` form are handled.
    """

    name = "Ec2InstanceAttributeShim"
    SPOT_REFUSAL = "Modifying 'disableApiTermination' is not supported for spot instances."

    @staticmethod
    def _attribute(req: AwsRequest) -> tuple[str, str | None] | None:
        p = req.params
        if "InstanceInitiatedShutdownBehavior.Value" in p:
            return "instanceInitiatedShutdownBehavior", p["InstanceInitiatedShutdownBehavior.Value"]
        if "DisableApiTermination.Value" in p:
            return "disableApiTermination", p["DisableApiTermination.Value"]
        if p.get("Attribute") in ("instanceInitiatedShutdownBehavior", "disableApiTermination"):
            return p["Attribute"], p.get("Value")
        return None

    def handles(self, req: AwsRequest) -> bool:
        return req.service == "ec2" and req.action == "ModifyInstanceAttribute" and self._attribute(req) is not None

    def handle(self, req: AwsRequest) -> Response | None:
        attribute, value = self._attribute(req) or ("", None)
        instance_id = req.params.get("InstanceId")
        if not instance_id:
            return aws_error(req, "MissingParameter", "The request must contain the parameter InstanceId")
        instance = moto_instance(instance_id, req.region)
        if instance is None:
            return aws_error(req, "InvalidInstanceID.NotFound", f"The instance ID '{instance_id}' does not exist")
        if req.params.get("DryRun") == "true":
            return aws_error(req, "DryRunOperation", "Request would have succeeded, but DryRun flag is set.", 412)
        if attribute == "disableApiTermination":
            if getattr(instance, "lifecycle", None) == "spot":
                return aws_error(req, "UnsupportedOperation", self.SPOT_REFUSAL)
            return None  # moto's handler is right for on-demand instances
        if value not in SHUTDOWN_BEHAVIOURS:
            return aws_error(
                req,
                "InvalidParameterValue",
                f"Value ({value}) for parameter instanceInitiatedShutdownBehavior is invalid. "
                f"Expected one of: {', '.join(SHUTDOWN_BEHAVIOURS)}.",
            )
        instance.instance_initiated_shutdown_behavior = value
        return xml_response(
            f'<ModifyInstanceAttributeResponse xmlns="{EC2_NS}"><requestId>{request_id()}</requestId>'
            "<return>true</return></ModifyInstanceAttributeResponse>"
        )

    def control_routes(self) -> dict:
        return {}


# ============================================================================ Auto Scaling detach

# Amazon EC2 Auto Scaling lifecycle states (the LifecycleState enum of the API,
# https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_Instance.html).
LIFECYCLE_STATES = (
    "Pending",
    "Pending:Wait",
    "Pending:Proceed",
    "Quarantined",
    "InService",
    "Terminating",
    "Terminating:Wait",
    "Terminating:Proceed",
    "Terminating:Retained",
    "Terminated",
    "Detaching",
    "Detached",
    "EnteringStandby",
    "Standby",
    "ReplacingRootVolume",
    "ReplacingRootVolume:Wait",
    "ReplacingRootVolume:Proceed",
    "RootVolumeReplaced",
    "Warmed:Pending",
    "Warmed:Pending:Wait",
    "Warmed:Pending:Proceed",
    "Warmed:Pending:Retained",
    "Warmed:Terminating",
    "Warmed:Terminating:Wait",
    "Warmed:Terminating:Proceed",
    "Warmed:Terminating:Retained",
    "Warmed:Terminated",
    "Warmed:Stopped",
    "Warmed:Running",
    "Warmed:Hibernated",
)


def _groups(region: str = REGION) -> dict[str, Any]:
    """moto's Auto Scaling groups by name (default account)."""
    from moto.autoscaling.models import autoscaling_backends
    from moto.core import DEFAULT_ACCOUNT_ID

    return autoscaling_backends[DEFAULT_ACCOUNT_ID][region].autoscaling_groups


def _instance_states(region: str = REGION):
    """(group, moto InstanceState) for every instance of every Auto Scaling group."""
    for group in list(_groups(region).values()):
        for state in group.instance_states:
            yield group, state


class AutoScalingDetachShim:
    """Auto Scaling DetachInstances, refused where Amazon EC2 Auto Scaling refuses it.

    "You can detach an instance only when it's either in an ``InService`` or ``Standby`` state"
    (https://docs.aws.amazon.com/autoscaling/ec2/userguide/ec2-auto-scaling-detach-attach-instances.html#detach-instances-considerations);
    the current page adds instances in a retained state (``...:Retained``), and those only when the
    desired capacity is not decremented. The refusal is HTTP 400 ``ValidationError`` "The instance
    <id> is not in InService or Standby.", and an instance outside the group gets ``ValidationError``
    "The instance <id> is not part of Auto Scaling group <name>." (both as answered by Auto
    Scaling, reproio/ecs_deploy#47 and #56). moto detaches in any state and answers success for an
    instance that is not in the group. Otherwise moto's own detach runs.

    ``POST /_cordon/autoscaling/lifecycle-state {"instance_id", "state"}`` sets the lifecycle state
    of an instance in moto's model, as a lifecycle hook (``Pending:Wait``, ``Terminating:Wait``) or
    a scale-in (``Terminating``) would; DescribeAutoScalingInstances reports it.
    """

    name = "AutoScalingDetachShim"
    DETACHABLE = ("InService", "Standby")

    def handles(self, req: AwsRequest) -> bool:
        return req.service == "autoscaling" and req.action == "DetachInstances"

    def handle(self, req: AwsRequest) -> Response | None:
        p = req.params
        group_name = p.get("AutoScalingGroupName", "")
        members = sorted((k for k in p if k.startswith("InstanceIds.member.")), key=lambda k: int(k.rsplit(".", 1)[1]))
        ids = [p[k] for k in members]
        decrement = p.get("ShouldDecrementDesiredCapacity", "").lower() == "true"
        group = _groups(req.region).get(group_name)
        if group is None:
            return None  # unknown group: moto's answer
        states = {s.instance.id: s for s in group.instance_states}
        for instance_id in ids:
            state = states.get(instance_id)
            if state is None:
                message = f"The instance {instance_id} is not part of Auto Scaling group {group_name}."
                return aws_error(req, "ValidationError", message)
            lifecycle = state.lifecycle_state
            retained = lifecycle.endswith(":Retained")
            if lifecycle not in self.DETACHABLE and not (retained and not decrement):
                return aws_error(req, "ValidationError", f"The instance {instance_id} is not in InService or Standby.")
        return None

    def control_routes(self) -> dict:
        def get(body: Any, q: dict) -> tuple[int, Any]:
            return 200, {
                "instances": [
                    {"instance_id": s.instance.id, "group": g.name, "state": s.lifecycle_state}
                    for g, s in _instance_states()
                ]
            }

        def post(body: Any, q: dict) -> tuple[int, Any]:
            if not isinstance(body, dict) or not isinstance(body.get("instance_id"), str):
                raise ControlError(400, "a JSON body with a string 'instance_id' is required")
            state = body.get("state")
            if state not in LIFECYCLE_STATES:
                raise ControlError(400, f"'state' must be one of {', '.join(LIFECYCLE_STATES)}")
            found = [(g, s) for g, s in _instance_states() if s.instance.id == body["instance_id"]]
            if not found:
                raise ControlError(404, f"{body['instance_id']} is in no Auto Scaling group")
            for _, s in found:
                s.lifecycle_state = state
            return 200, {"instance_id": body["instance_id"], "group": found[0][0].name, "state": state}

        return {
            ("GET", "/_cordon/autoscaling/lifecycle-state"): get,
            ("POST", "/_cordon/autoscaling/lifecycle-state"): post,
        }


def install(server: Any) -> list[str]:
    """Adds every strictness shim to ``server`` (a ``LocalAws``); returns their names."""
    shims = [ElbTargetDrainingShim(), Ec2InstanceAttributeShim(), AutoScalingDetachShim()]
    for shim in shims:
        server.add_shim(shim)
    return [s.name for s in shims]
