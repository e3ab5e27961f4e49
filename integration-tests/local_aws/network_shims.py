"""Network shims: connection-tracking timeouts, network ACL entries, NAT gateway interfaces.

Where moto 5.2.5 is kinder than EC2, or does not model what Cordon's quarantine relies on, for the
calls that step makes and the resources the seeded network has. Each is exactly as strict as AWS
documents, no stricter; where AWS documents the refusal but not its error code, EC2's generic code
for that kind of refusal is used and the docstring says so.

- ``ConnectionTrackingShim`` (EC2 ``ModifyNetworkInterfaceAttribute`` with
  ``ConnectionTrackingSpecification``): moto answers 200 and forgets it, DescribeNetworkInterfaces
  and DescribeInstances show no ``ConnectionTrackingConfiguration``. Here the values are validated
  and kept on the interface, and both Describe calls report them.
- ``NetworkAclEntryShim`` (EC2 ``CreateNetworkAclEntry`` / ``DeleteNetworkAclEntry``): moto has
  no rule quota, accepts any rule number and CIDR spelling, and answers a 500 for deleting an entry
  that does not exist. Here: the quota (``NetworkAclEntryLimitExceeded``), the rule number range,
  the canonical CIDR, ``InvalidNetworkAclEntry.NotFound``.
- ``NetworkAclDefaultsFix`` (moto's model): a custom network ACL has no entries in moto; on EC2 it
  has the default deny rules. A VPC with an IPv6 CIDR gets no IPv6 rules in moto; on EC2 the
  default ACL allows all IPv6 traffic (rule 101) and every ACL has the IPv6 default deny (32768).
- ``NatGatewayInterfaceFix`` (moto's model): moto gives a NAT gateway's network interface a random
  address outside its subnet and calls it an ordinary ``interface``; on EC2 "this action creates a
  network interface in the specified subnet with a private IP address from the IP address range of
  the subnet" (CreateNatGateway), of type ``natGateway``, managed by AWS.

Control: ``GET|POST /_cordon/ec2/network-acl-quota`` ``{"rules_per_acl": 20..40}`` sets the "Rules
per network ACL" quota the way a Service Quotas increase would (default 20, adjustable to 40).
"""

from __future__ import annotations

import io
import ipaddress
import threading
from typing import Any
from urllib.parse import parse_qsl, urlencode

from . import REGION
from .server import ControlError
from .shims import EC2_NS
from .wire import AwsRequest, Response, aws_error, request_id, xml_response

_patched = False
_lock = threading.Lock()


def _backend(region: str = REGION):
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ec2.models import ec2_backends

    return ec2_backends[DEFAULT_ACCOUNT_ID][region]


def _ok(action: str) -> Response:
    return xml_response(
        f'<{action}Response xmlns="{EC2_NS}"><requestId>{request_id()}</requestId>'
        f"<return>true</return></{action}Response>"
    )


def _rewrite(req: AwsRequest, changes: dict[str, str]) -> None:
    """Rewrites query parameters of a form-encoded EC2 request before moto reads it."""
    pairs = [(k, changes.get(k, v)) for k, v in parse_qsl(req.body.decode(), keep_blank_values=True)]
    body = urlencode(pairs).encode()
    req.environ["wsgi.input"] = io.BytesIO(body)
    req.environ["CONTENT_LENGTH"] = str(len(body))
    req.params.update(changes)


# ============================================================================ connection tracking

# ConnectionTrackingSpecificationRequest: "TcpEstablishedTimeout [...] Min: 60 seconds. Max:
# 432000 seconds (5 days)"; "UdpStreamTimeout [...] Min: 60 seconds. Max: 180 seconds";
# "UdpTimeout [...] Min: 30 seconds. Max: 60 seconds"
# (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_ConnectionTrackingSpecificationRequest.html).
TIMEOUT_RANGES = {
    "TcpEstablishedTimeout": (60, 432000),
    "UdpStreamTimeout": (60, 180),
    "UdpTimeout": (30, 60),
}
SPEC = "ConnectionTrackingSpecification."
# The other attributes ModifyNetworkInterfaceAttribute takes, by parameter prefix.
OTHER_ATTRIBUTES = (
    "SecurityGroupId.",
    "Description.",
    "SourceDestCheck.",
    "Attachment.",
    "EnaSrdSpecification.",
    "EnablePrimaryIpv6",
    "AssociatePublicIpAddress",
    "AssociatedSubnetId.",
)


class ConnectionTrackingShim:
    """EC2 ``ModifyNetworkInterfaceAttribute`` ``ConnectionTrackingSpecification``, modelled.

    - The ranges above; a value outside is ``InvalidParameterValue`` ("A value specified in a
      parameter is not valid", https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html).
    - "You can specify only one attribute at a time"
      (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_ModifyNetworkInterfaceAttribute.html):
      a request that also changes another attribute is refused. The code is not documented for
      this case; EC2's generic ``InvalidParameterCombination`` ("Indicates an incorrect combination
      of parameters") is used.
    - Configurable idle timeouts are "available [...] for Nitro based instances only"
      (https://aws.amazon.com/about-aws/whats-new/2023/11/ec2-security-connection-tracking-idle-timeouts/):
      an interface attached to an instance whose type runs on Xen (moto's instance type data,
      ``Hypervisor``) is refused with ``UnsupportedOperation`` (code not documented for this case;
      EC2's generic code for "the specified request includes an unsupported operation").
    - Fields not given keep the interface's current values. Unknown interface:
      ``InvalidNetworkInterfaceID.NotFound``.

    The values are kept on moto's interface object as ``connection_tracking_configuration``, which
    moto's serializer already reports in DescribeNetworkInterfaces (``ConnectionTrackingConfiguration``)
    and DescribeInstances (the instance's ``NetworkInterfaces``).
    """

    name = "ConnectionTrackingShim"

    def handles(self, req: AwsRequest) -> bool:
        return (
            req.service == "ec2"
            and req.action == "ModifyNetworkInterfaceAttribute"
            and any(k.startswith(SPEC) for k in req.params)
        )

    def handle(self, req: AwsRequest) -> Response | None:
        p = req.params
        eni_id = p.get("NetworkInterfaceId")
        if not eni_id:
            return aws_error(req, "MissingParameter", "The request must contain the parameter NetworkInterfaceId")
        backend = _backend(req.region)
        eni = backend.enis.get(eni_id)
        if eni is None:
            return aws_error(
                req, "InvalidNetworkInterfaceID.NotFound", f"The networkInterface ID '{eni_id}' does not exist"
            )
        others = sorted({k for k in p if k.startswith(OTHER_ATTRIBUTES)})
        if others:
            return aws_error(
                req,
                "InvalidParameterCombination",
                f"Only one attribute can be modified at a time; got ConnectionTrackingSpecification and {others[0]}",
            )
        values: dict[str, int] = {}
        for field, (low, high) in TIMEOUT_RANGES.items():
            raw = p.get(SPEC + field)
            if raw is None:
                continue
            try:
                value = int(raw)
            except ValueError:
                value = None
            if value is None or not low <= value <= high:
                return aws_error(
                    req,
                    "InvalidParameterValue",
                    f"The value ({raw}) for parameter {field} is invalid. It must be between {low} and {high}.",
                )
            values[field] = value
        unknown = sorted(k for k in p if k.startswith(SPEC) and k[len(SPEC) :] not in TIMEOUT_RANGES)
        if unknown:
            return aws_error(req, "InvalidParameterValue", f"Unknown parameter {unknown[0]}")
        instance = getattr(eni, "instance", None)
        if instance is not None and _hypervisor(instance.instance_type) == "xen":
            return aws_error(
                req,
                "UnsupportedOperation",
                f"Configurable connection tracking timeouts are not supported for instance type {instance.instance_type}.",
            )
        if p.get("DryRun") == "true":
            return aws_error(req, "DryRunOperation", "Request would have succeeded, but DryRun flag is set.", 412)
        with _lock:
            current = dict(getattr(eni, "connection_tracking_configuration", None) or {})
            current.update(values)
            eni.connection_tracking_configuration = current
        return _ok("ModifyNetworkInterfaceAttribute")

    def control_routes(self) -> dict:
        return {}


def _hypervisor(instance_type: str) -> str | None:
    from moto.ec2.models.instance_types import INSTANCE_TYPES

    return (INSTANCE_TYPES.get(instance_type) or {}).get("Hypervisor")


# ============================================================================ network ACL entries

# "Rules per network ACL: 20 [...] This is the one-way quota for a single network ACL. This quota is
# enforced separately for IPv4 rules and IPv6 rules [...] This quota includes the default deny rules
# [...] can be increased up to a maximum of 40"
# (https://docs.aws.amazon.com/vpc/latest/userguide/amazon-vpc-limits.html#vpc-limits-nacls).
DEFAULT_RULES_PER_ACL = 20
MAX_RULES_PER_ACL = 40


def _family(entry: Any) -> int:
    return 6 if getattr(entry, "ipv6_cidr_block", None) else 4


class NetworkAclEntryShim:
    """EC2 ``CreateNetworkAclEntry`` and ``DeleteNetworkAclEntry`` as EC2 documents them.

    CreateNetworkAclEntry (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateNetworkAclEntry.html):

    - ``RuleNumber``: "Positive integer from 1 to 32766. The range 32767 to 65535 is reserved for
      internal use"; outside it, ``InvalidParameterValue``.
    - ``RuleAction`` ``allow`` | ``deny``; exactly one of ``CidrBlock`` / ``Ipv6CidrBlock``
      (``InvalidParameterValue`` / ``MissingParameter`` otherwise), a valid network
      (``InvalidParameterValue``). "We modify the specified CIDR block to its canonical form; for
      example, if you specify 100.68.0.18/18, we modify it to 100.68.0.0/18": the rule is stored
      canonical (moto stores the spelling given).
    - the quota above, per direction and per IP family, default deny rules included:
      ``NetworkAclEntryLimitExceeded`` (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html:
      "You've reached the limit on the number of rules that you can add to the network ACL").
      moto has no quota.
    - a number already used in that direction: moto's ``NetworkAclEntryAlreadyExists`` is right.

    DeleteNetworkAclEntry of a rule number that has no entry: ``InvalidNetworkAclEntry.NotFound``
    (moto fails with an internal error).
    """

    name = "NetworkAclEntryShim"

    def __init__(self) -> None:
        self.rules_per_acl = DEFAULT_RULES_PER_ACL

    def handles(self, req: AwsRequest) -> bool:
        return req.service == "ec2" and req.action in ("CreateNetworkAclEntry", "DeleteNetworkAclEntry")

    def handle(self, req: AwsRequest) -> Response | None:
        p = req.params
        acl_id = p.get("NetworkAclId")
        if not acl_id:
            return aws_error(req, "MissingParameter", "The request must contain the parameter NetworkAclId")
        acl = _backend(req.region).network_acls.get(acl_id)
        if acl is None:
            return aws_error(req, "InvalidNetworkAclID.NotFound", f"The network ACL ID '{acl_id}' does not exist")
        egress = str(p.get("Egress", "false")).lower() == "true"
        try:
            number = int(p.get("RuleNumber", ""))
        except ValueError:
            return aws_error(req, "InvalidParameterValue", f"Invalid rule number: {p.get('RuleNumber')}")
        if req.action == "DeleteNetworkAclEntry":
            if not any(e.egress == egress and int(e.rule_number) == number for e in acl.network_acl_entries):
                return aws_error(
                    req,
                    "InvalidNetworkAclEntry.NotFound",
                    f"The network acl entry identified by {number} (egress: {str(egress).lower()}) does not exist",
                )
            return None
        if not 1 <= number <= 32766:
            return aws_error(
                req, "InvalidParameterValue", f"Invalid rule number {number}: it must be between 1 and 32766"
            )
        if p.get("RuleAction") not in ("allow", "deny"):
            return aws_error(req, "InvalidParameterValue", f"Invalid value '{p.get('RuleAction')}' for ruleAction")
        v4, v6 = p.get("CidrBlock"), p.get("Ipv6CidrBlock")
        if bool(v4) == bool(v6):
            return aws_error(
                req,
                "MissingParameter" if not (v4 or v6) else "InvalidParameterCombination",
                "Exactly one of CidrBlock and Ipv6CidrBlock must be specified",
            )
        raw = v4 or v6
        try:
            network = ipaddress.ip_network(raw, strict=False)
        except ValueError:
            return aws_error(req, "InvalidParameterValue", f"Value ({raw}) for parameter cidrBlock is invalid")
        if (network.version == 6) != bool(v6):
            return aws_error(req, "InvalidParameterValue", f"Value ({raw}) is not a valid {'IPv6' if v6 else 'IPv4'} CIDR")
        family = network.version
        if any(e.egress == egress and int(e.rule_number) == number for e in acl.network_acl_entries):
            return None  # moto's NetworkAclEntryAlreadyExists
        used = sum(1 for e in acl.network_acl_entries if e.egress == egress and _family(e) == family)
        if used >= self.rules_per_acl:
            return aws_error(
                req,
                "NetworkAclEntryLimitExceeded",
                f"The maximum number of {'egress' if egress else 'ingress'} IPv{family} entries "
                f"({self.rules_per_acl}) has been reached for network ACL {acl_id}",
            )
        canonical = str(network)
        if canonical != raw:
            _rewrite(req, {"Ipv6CidrBlock" if v6 else "CidrBlock": canonical})
        return None

    def control_routes(self) -> dict:
        def get(body: Any, q: dict) -> tuple[int, Any]:
            return 200, {"rules_per_acl": self.rules_per_acl}

        def post(body: Any, q: dict) -> tuple[int, Any]:
            value = (body or {}).get("rules_per_acl")
            if not isinstance(value, int) or not DEFAULT_RULES_PER_ACL <= value <= MAX_RULES_PER_ACL:
                raise ControlError(400, f"rules_per_acl must be an integer from {DEFAULT_RULES_PER_ACL} to {MAX_RULES_PER_ACL}")
            self.rules_per_acl = value
            return 200, {"rules_per_acl": value}

        return {
            ("GET", "/_cordon/ec2/network-acl-quota"): get,
            ("POST", "/_cordon/ec2/network-acl-quota"): post,
        }


# ============================================================================ model fixes


def _vpc_has_ipv6(backend: Any, vpc_id: str) -> bool:
    vpc = backend.vpcs.get(vpc_id)
    return bool(vpc and vpc.get_cidr_block_association_set(ipv6=True))


def _add(backend: Any, acl: Any, number: int, action: str, egress: bool, ipv6: bool) -> None:
    if any(e.egress == egress and int(e.rule_number) == number for e in acl.network_acl_entries):
        return
    backend.create_network_acl_entry(
        network_acl_id=acl.id,
        rule_number=number,
        protocol="-1",
        rule_action=action,
        egress=egress,
        cidr_block=None if ipv6 else "0.0.0.0/0",
        icmp_code=None,
        icmp_type=None,
        port_range_from=None,
        port_range_to=None,
        ipv6_cidr_block="::/0" if ipv6 else None,
    )


def _defaults(backend: Any, acl: Any) -> None:
    """The rules EC2 puts in every ACL: the default deny rules ("a rule whose rule number is an
    asterisk [...] You can't modify or remove this rule", shown as 32767 (IPv4) and 32768 (IPv6));
    in the default ACL also allow-all, 100 (IPv4) and, with an IPv6 CIDR, 101 (IPv6)
    (https://docs.aws.amazon.com/vpc/latest/userguide/default-network-acl.html,
    https://docs.aws.amazon.com/vpc/latest/userguide/custom-network-acl.html)."""
    ipv6 = _vpc_has_ipv6(backend, acl.vpc_id)
    for egress in (False, True):
        _add(backend, acl, 32767, "deny", egress, ipv6=False)
        if ipv6:
            _add(backend, acl, 32768, "deny", egress, ipv6=True)
            if acl.default:
                _add(backend, acl, 101, "allow", egress, ipv6=True)


class NetworkAclDefaultsFix:
    name = "NetworkAclDefaultsFix"

    @staticmethod
    def apply() -> None:
        from moto.ec2.models import EC2Backend

        original_create_acl = EC2Backend.create_network_acl

        def create_network_acl(self, vpc_id, tags=None, default=False):
            acl = original_create_acl(self, vpc_id, tags=tags, default=default)
            _defaults(self, acl)
            return acl

        EC2Backend.create_network_acl = create_network_acl

        original_create_vpc = EC2Backend.create_vpc

        def create_vpc(self, *args, **kwargs):
            vpc = original_create_vpc(self, *args, **kwargs)
            for acl in list(self.network_acls.values()):
                if acl.vpc_id == vpc.id:
                    _defaults(self, acl)
            return vpc

        EC2Backend.create_vpc = create_vpc

        original_associate = EC2Backend.associate_vpc_cidr_block

        def associate_vpc_cidr_block(self, vpc_id, *args, **kwargs):
            out = original_associate(self, vpc_id, *args, **kwargs)
            for acl in list(self.network_acls.values()):
                if acl.vpc_id == vpc_id:
                    _defaults(self, acl)
            return out

        EC2Backend.associate_vpc_cidr_block = associate_vpc_cidr_block


class NatGatewayInterfaceFix:
    name = "NatGatewayInterfaceFix"

    @staticmethod
    def apply() -> None:
        from moto.ec2.models import nat_gateways
        from moto.ec2.utils import random_private_ip

        original_init = nat_gateways.NatGateway.__init__

        def __init__(self, backend, subnet_id, allocation_id, *args, **kwargs):
            cidr = backend.get_subnet(subnet_id).cidr_block
            taken = {e.private_ip_address for e in backend.enis.values()}
            with _lock:
                # moto draws the address with random_private_ip() (10.x.x.x anywhere): draw it in
                # the subnet instead, avoiding the network, broadcast and AWS-reserved addresses.
                saved = nat_gateways.random_private_ip

                def in_subnet(*_a, **_k):
                    hosts = list(ipaddress.ip_network(cidr).hosts())[3:]
                    free = [str(h) for h in hosts if str(h) not in taken]
                    return free[len(free) // 2] if free else random_private_ip(cidr)

                nat_gateways.random_private_ip = in_subnet
                try:
                    original_init(self, backend, subnet_id, allocation_id, *args, **kwargs)
                finally:
                    nat_gateways.random_private_ip = saved
            eni = self._eni
            eni.interface_type = "natGateway"
            eni.requester_managed = True
            eni.description = f"Interface for NAT Gateway {self.id}"

        nat_gateways.NatGateway.__init__ = __init__


def install(server: Any) -> list[str]:
    """Applies the model fixes and adds the request shims to ``server``; returns their names."""
    global _patched
    names = [NetworkAclDefaultsFix.name, NatGatewayInterfaceFix.name]
    if not _patched:
        NetworkAclDefaultsFix.apply()
        NatGatewayInterfaceFix.apply()
        _patched = True
    for shim in (ConnectionTrackingShim(), NetworkAclEntryShim()):
        server.add_shim(shim)
        names.append(shim.name)
    return names
