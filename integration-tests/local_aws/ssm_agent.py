"""The SSM Agent on a managed node: which credentials it holds, whether its channel works, what it reaches.

The run-command shim (``ssm_run_command``) asks this model, every time the agent would poll, whether
the agent on an instance can take a command, report on it, upload to S3; ``shims.ManagedNodes``
asks it whether the node registered and whether its last health ping got through. Nothing here is
kept by hand: the answers come from moto's live state (the instance profile association, the
role's policies as Cordon rewrites them, security groups, network ACLs, route tables, VPC
endpoints) each time they are asked.

**Credentials (rule 1).** The agent calls AWS with the credentials of the role of the instance
profile associated with the instance when it started, and keeps them until it refreshes them:

- it trusts instance-profile credentials for an hour and refreshes them at half their lifetime
  (amazon-ssm-agent ``common/identity/credentialproviders/ec2roleprovider/ec2_role_provider.go``:
  "Trusting instance profile role credentials are valid for at least 1 hour";
  ``core/app/credentialrefresher/credentialrefresher.go``: "Set the expiration window to be half of
  the token's lifetime"), so about 30 minutes: ``refresh_after_seconds`` (default 1800, longer than
  any test). AWS's setup guide says the same from the outside: "If you change the IAM instance
  profile, it might take some time for the instance credentials to refresh. SSM Agent will not
  process requests until this happens"
  (https://docs.aws.amazon.com/systems-manager/latest/userguide/setup-instance-profile.html).
- a refresh (due, or forced with ``POST /_cordon/ssm/agent {"refresh": true}``) takes the role of
  the profile associated *now* and checks it with ``ssm:UpdateInstanceInformation`` before using
  it (``ec2_role_provider.go`` ``RemoteRetrieve``/``iprCredentials``). The agent's first refresh runs
  when it starts, and that check call is what registers the node. No profile
  (``EC2RoleRequestError``), or the call denied (``AccessDeniedException``): the agent would fall back
  to Default Host Management Configuration credentials, which the local stack does not model (an
  account without it), so it has no credentials and is offline until a later refresh. The ``ssm``
  endpoint unreachable (not an AWS error): it keeps the credentials it had. A failed refresh is
  tried again after 25 minutes on AccessDenied, 5 minutes otherwise (the short ends of the
  refresher's back-off, ``core/app/credentialrefresher/credentialrefresher_deps.go``): never within
  a test, unless forced.
- ``aws:TokenIssueTime`` of the session is when the agent fetched it (at start or refresh).

**Channel (rule 2).** Run Command reaches the agent by either of two routes, and the agent runs
both (``agent/messageservice/messageservice.go`` appends an MGS and an MDS interactor):

- MDS: ``ec2messages:GetMessages`` (receive), ``ec2messages:AcknowledgeMessage``, ``ec2messages:SendReply``
  (``agent/runcommand/mds/service.go``), to the ``ec2messages`` endpoint;
- MGS: ``ssmmessages:CreateControlChannel`` and ``ssmmessages:OpenControlChannel`` (the control
  channel carries agent jobs and their replies, ``agent/messageservice/interactor/mgsinteractor``),
  to the ``ssmmessages`` endpoint.

Each action is decided by IAM's evaluation logic over the role's *live* policies in moto (inline,
attached managed, the permissions boundary) for a session of this instance: explicit deny wins, no
allow is a deny (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html).
Statements are matched on ``Action``/``NotAction``, ``Resource``/``NotResource`` (``*`` and ``?``
wildcards; the ``ec2messages``/``ssmmessages`` actions have no resource types, so only
``Resource: "*"`` statements apply to them, as the Service Authorization Reference lists) and
``Condition`` with the operators of
https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html
(String*, Arn*, Numeric*, Date*, Bool, IpAddress/NotIpAddress, Null, ``...IfExists``,
``ForAnyValue:``/``ForAllValues:``; a key missing from the request makes a positive operator false
and a negated one true). The request context is that of an EC2 role session: ``ec2:SourceInstanceARN``,
``aws:TokenIssueTime``, ``ec2:RoleDelivery`` ``2.0`` (IMDSv2), ``aws:EC2InstanceSourceVPC``,
``aws:EC2InstanceSourcePrivateIPv4``, ``aws:PrincipalArn``, ``aws:userid`` (``<role id>:<instance id>``),
and, through a VPC endpoint, ``aws:SourceVpc``/``aws:SourceVpce``/``aws:VpcSourceIp``
(https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-keys.html). A request
through a VPC endpoint must also be allowed by the endpoint's policy
(https://docs.aws.amazon.com/vpc/latest/privatelink/vpc-endpoints-access.html). An operator this
model does not know (``BinaryEquals``) fails closed: an Allow with it does not apply, a Deny does.

**Network (rule 3).** Evaluated each time it is asked, from the instance's primary interface (its
address, subnet, security groups):

- a VPC interface endpoint for the service (``com.amazonaws.<region>.<svc>``, private DNS on, the
  default when created: https://docs.aws.amazon.com/vpc/latest/privatelink/create-interface-endpoint.html)
  means the agent's traffic goes to the endpoint's network interfaces, one per endpoint subnet with
  an address of that subnet (see ``VpcEndpointInterfaceFix``). It gets through to one of them when
  the instance's groups allow egress TCP 443 to it (a rule naming one of the endpoint's groups, a
  CIDR holding its address, or all traffic), the endpoint's groups allow TCP 443 in from the
  instance (a rule naming one of the instance's groups or a CIDR holding its address)
  (https://docs.aws.amazon.com/systems-manager/latest/userguide/setup-create-vpc.html), and, when
  the two are in different subnets, both subnets' network ACLs let the request (TCP 443) and its
  answer (TCP to the client's ephemeral port) through;
- otherwise the agent goes to the service's public endpoint: the instance's groups must allow
  egress TCP 443 to all addresses (``0.0.0.0/0``: the service's addresses are not known here, so a
  narrower CIDR is not taken to reach them), the subnet's route table must route ``0.0.0.0/0`` to an
  internet gateway (the interface then needs a public address) or a NAT gateway (whose own subnet's
  ACL and route to an internet gateway count too), and the ACLs crossed must allow it;
- S3 (the script's ``curl`` to a presigned URL, the agent's output upload) is reached through an S3
  interface endpoint with private DNS, else a gateway endpoint routed from the instance's subnet
  (the group's egress must allow TCP 443 to its prefix list, ``pl-...``, or to all addresses:
  https://docs.aws.amazon.com/vpc/latest/privatelink/vpc-endpoints-s3.html), else the internet as above.

Network ACLs are evaluated as EC2 does: stateless, per direction, rules in ascending number order,
the first rule whose protocol, port range and CIDR match decides, no match denies
(https://docs.aws.amazon.com/vpc/latest/userguide/nacl-rules.html); traffic inside one subnet crosses
no ACL. Return traffic goes to the client's ephemeral port: 32768-60999 for the instance's Linux
kernel, 1024-65535 for a NAT gateway
(https://docs.aws.amazon.com/vpc/latest/userguide/nacl-ephemeral-ports.html); the answer gets
through if the ACL lets any port of that range through (the kernel picks another port on retry).
Security groups are stateful: answers to allowed requests are allowed
(https://docs.aws.amazon.com/vpc/latest/userguide/security-group-rules.html). IPv6, DNS resolution,
proxies, VPC peering and transit gateways are not modelled.

**Health (registration and PingStatus).** The agent registers (and pings every
``health_interval_seconds``, 300 by default: ``agent/appconfig/constants.go``
``DefaultSsmHealthFrequencyMinutes = 5``) with ``ssm:UpdateInstanceInformation`` to the ``ssm``
endpoint. A node whose agent never got that call through is not a managed node (absent from
DescribeInstanceInformation; SendCommand answers ``InvalidInstanceId``); its refresher tries again
later (above). Once registered, ``PingStatus`` is the result of the last health ping, so it changes only at
the next ping (or ``POST /_cordon/ssm/agent {"ping": true}``): like AWS, a node whose agent was just
cut off still shows ``Online`` for a while.

``VpcEndpointInterfaceFix`` (moto's model): moto 5.2.5 gives an interface endpoint's network
interfaces a random 10.x address outside their subnet, type ``interface``, and not the endpoint's
security groups. On AWS the endpoint "creates an endpoint network interface in each subnet", with
an address of that subnet, type ``vpc_endpoint``, managed by AWS, and the endpoint's security
groups (the VPC's default group when none is given)
(https://docs.aws.amazon.com/vpc/latest/privatelink/create-interface-endpoint.html). Fixed here, because
the network verdicts above depend on those addresses.
"""

from __future__ import annotations

import collections
import ipaddress
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from .iam_policies import action_matches

LOG = logging.getLogger("local_aws.ssm_agent")

# Defaults of the agent (see the module docstring for their sources).
REFRESH_AFTER_SECONDS = 1800.0
HEALTH_INTERVAL_SECONDS = 300.0
# After a failed refresh the refresher sleeps 25 to 30 minutes on AccessDeniedException, at least
# 5 minutes on other errors (``core/app/credentialrefresher/credentialrefresher_deps.go``,
# ``getLongSleepDuration``, ``getEC2DefaultSSMSleepDuration``): the short ends here.
RETRY_DENIED_SECONDS = 1500.0
RETRY_OTHER_SECONDS = 300.0
# How often the agent polls for messages here (its MDS long poll answers as soon as a message is
# queued; the local stack looks every quarter second).
POLL_SECONDS = 0.25

HTTPS = 443
LINUX_EPHEMERAL = (32768, 60999)
NAT_EPHEMERAL = (1024, 65535)
# Stands for the public endpoint of a service: only rules for all addresses are taken to reach it.
PUBLIC_SERVICE_ADDRESS = "52.94.0.1"
INTERFACE_SERVICES = ("ssm", "ec2messages", "ssmmessages")
SERVICES = INTERFACE_SERVICES + ("s3",)

MDS_ACTIONS = ("ec2messages:GetMessages", "ec2messages:AcknowledgeMessage", "ec2messages:SendReply")
MGS_ACTIONS = ("ssmmessages:CreateControlChannel", "ssmmessages:OpenControlChannel")
HEALTH_ACTION = "ssm:UpdateInstanceInformation"


def _account() -> str:
    from moto.core import DEFAULT_ACCOUNT_ID

    return DEFAULT_ACCOUNT_ID


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ====================================================================================== IAM


@dataclass
class Policy:
    """One policy document that takes part in a decision."""

    label: str  # "inline:app-server/app-data", "managed:arn:...", "boundary:...", "bucket:...", "endpoint:vpce-..."
    kind: str  # "identity", "boundary", "resource", "endpoint"
    document: dict


@dataclass
class Request:
    """What IAM is asked: who (role ARN, session ARN), which action on which resource, in what context."""

    action: str
    resource: str
    role_arn: str
    session_arn: str
    account: str
    keys: dict[str, Any] = field(default_factory=dict)  # condition keys, any case


@dataclass
class Decision:
    allowed: bool
    reason: str
    allowed_by: list[str] = field(default_factory=list)
    denied_by: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "allowed": self.allowed,
            "reason": self.reason,
            "allowed_by": self.allowed_by,
            "denied_by": self.denied_by,
            **({"notes": self.notes} if self.notes else {}),
        }


def _list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _wildcard(pattern: str, value: str, ignore_case: bool = False) -> bool:
    """IAM's ``*``/``?`` matching (Resource, StringLike, ArnLike)."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.DOTALL | (re.IGNORECASE if ignore_case else 0)) is not None


_VARIABLE = re.compile(r"\$\{([^}]+)\}")


def _substitute(text: str, keys: dict[str, Any]) -> str | None:
    """Policy variables (``${aws:username}``, ``${*}``...): None when one names a key the request
    lacks ("if the key is not present ... the statement does not match",
    https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_variables.html)."""
    missing = False

    def value(m: re.Match) -> str:
        nonlocal missing
        name = m.group(1)
        if name in ("*", "?", "$"):
            return name
        name, _, default = name.partition(",")
        v = _key(keys, name.strip())
        if v is None:
            default = default.strip().strip("'")
            if default:
                return default
            missing = True
            return ""
        return str(_list(v)[0])

    out = _VARIABLE.sub(value, text)
    return None if missing else out


def _key(keys: dict[str, Any], name: str) -> Any:
    """A condition key's value (key names are case-insensitive)."""
    lowered = name.lower()
    for k, v in keys.items():
        if k.lower() == lowered:
            return v
    return None


def _date(value: Any) -> float | None:
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _number(value: Any) -> float | None:
    try:
        return float(str(value))
    except ValueError:
        return None


def _ip_in(value: Any, cidr: Any) -> bool:
    try:
        return ipaddress.ip_address(str(value)) in ipaddress.ip_network(str(cidr), strict=False)
    except ValueError:
        return False


# Operator (without IfExists / set prefix) -> (positive form, negated?)
_OPERATORS: dict[str, tuple[str, bool]] = {
    "StringEquals": ("StringEquals", False),
    "StringNotEquals": ("StringEquals", True),
    "StringEqualsIgnoreCase": ("StringEqualsIgnoreCase", False),
    "StringNotEqualsIgnoreCase": ("StringEqualsIgnoreCase", True),
    "StringLike": ("StringLike", False),
    "StringNotLike": ("StringLike", True),
    "ArnEquals": ("ArnLike", False),
    "ArnLike": ("ArnLike", False),
    "ArnNotEquals": ("ArnLike", True),
    "ArnNotLike": ("ArnLike", True),
    "NumericEquals": ("NumericEquals", False),
    "NumericNotEquals": ("NumericEquals", True),
    "NumericLessThan": ("NumericLessThan", False),
    "NumericLessThanEquals": ("NumericLessThanEquals", False),
    "NumericGreaterThan": ("NumericGreaterThan", False),
    "NumericGreaterThanEquals": ("NumericGreaterThanEquals", False),
    "DateEquals": ("DateEquals", False),
    "DateNotEquals": ("DateEquals", True),
    "DateLessThan": ("DateLessThan", False),
    "DateLessThanEquals": ("DateLessThanEquals", False),
    "DateGreaterThan": ("DateGreaterThan", False),
    "DateGreaterThanEquals": ("DateGreaterThanEquals", False),
    "Bool": ("Bool", False),
    "IpAddress": ("IpAddress", False),
    "NotIpAddress": ("IpAddress", True),
}


def _match(op: str, actual: Any, expected: Any) -> bool:
    a, e = str(actual), str(expected)
    if op == "StringEquals":
        return a == e
    if op == "StringEqualsIgnoreCase":
        return a.lower() == e.lower()
    if op in ("StringLike", "ArnLike"):
        return _wildcard(e, a)
    if op.startswith("Numeric"):
        x, y = _number(actual), _number(expected)
        if x is None or y is None:
            return False
        return {
            "NumericEquals": x == y,
            "NumericLessThan": x < y,
            "NumericLessThanEquals": x <= y,
            "NumericGreaterThan": x > y,
            "NumericGreaterThanEquals": x >= y,
        }[op]
    if op.startswith("Date"):
        x, y = _date(actual), _date(expected)
        if x is None or y is None:
            return False
        return {
            "DateEquals": x == y,
            "DateLessThan": x < y,
            "DateLessThanEquals": x <= y,
            "DateGreaterThan": x > y,
            "DateGreaterThanEquals": x >= y,
        }[op]
    if op == "Bool":
        return a.lower() == e.lower()
    if op == "IpAddress":
        return _ip_in(actual, expected)
    return False


class UnsupportedCondition(Exception):
    pass


def condition_matches(condition: dict, keys: dict[str, Any]) -> bool:
    """Whether a statement's ``Condition`` block holds for the request's keys: every operator and
    every key in it must hold (AND); the values listed for one key are alternatives (OR, NOR for a
    negated operator). Raises ``UnsupportedCondition`` for an operator it does not know."""
    for raw_op, block in (condition or {}).items():
        op, set_op = raw_op, None
        if ":" in op:
            set_op, op = op.split(":", 1)
            if set_op not in ("ForAnyValue", "ForAllValues"):
                raise UnsupportedCondition(raw_op)
        if_exists = op.endswith("IfExists")
        op = op.removesuffix("IfExists")
        for key, expected in (block or {}).items():
            expected = _list(expected)
            actual = _key(keys, key)
            if op == "Null":
                absent = actual is None or actual == []
                if not any(str(e).lower() == str(absent).lower() for e in expected):
                    return False
                continue
            if op not in _OPERATORS:
                raise UnsupportedCondition(raw_op)
            positive, negated = _OPERATORS[op]
            expected = [_substitute(str(e), keys) if isinstance(e, str) else e for e in expected]
            expected = [e for e in expected if e is not None]
            if actual is None or actual == []:
                if set_op == "ForAllValues" or if_exists or negated:
                    continue
                return False
            values = _list(actual)

            holds = [any(_match(positive, v, e) for e in expected) != negated for v in values]
            ok = all(holds) if set_op == "ForAllValues" else any(holds)
            if not ok:
                return False
    return True


def _principal_matches(principal: Any, req: Request, effect: str) -> bool:
    """A resource-based policy's ``Principal`` for a role session. In the same account an Allow
    that names the account (root or ID) delegates to identity policies and grants nothing itself;
    a Deny that names it applies to every principal of the account
    (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_principal.html)."""
    if principal == "*":
        return True
    if not isinstance(principal, dict):
        return False
    names = _list(principal.get("AWS"))
    if "*" in names:
        return True
    if req.role_arn in names or req.session_arn in names:
        return True
    account_names = {req.account, f"arn:aws:iam::{req.account}:root"}
    return effect == "Deny" and any(n in account_names for n in names)


def _statements(doc: dict) -> list[dict]:
    raw = doc.get("Statement", [])
    return raw if isinstance(raw, list) else [raw]


def _applies(stmt: dict, req: Request, kind: str) -> bool:
    effect = stmt.get("Effect")
    if "NotAction" in stmt:
        if any(action_matches(p, req.action) for p in _list(stmt["NotAction"])):
            return False
    elif not any(action_matches(p, req.action) for p in _list(stmt.get("Action"))):
        return False
    resources = (
        stmt.get("NotResource") if "NotResource" in stmt else stmt.get("Resource", "*" if kind == "endpoint" else None)
    )
    patterns = [_substitute(str(p), req.keys) for p in _list(resources)]
    hit = any(p is not None and _wildcard(p, req.resource) for p in patterns)
    if ("NotResource" in stmt) == hit:
        return False
    if kind in ("resource", "endpoint"):
        if "NotPrincipal" in stmt:
            if _principal_matches(stmt["NotPrincipal"], req, "Deny"):
                return False
        elif not _principal_matches(stmt.get("Principal"), req, effect or ""):
            return False
    return condition_matches(stmt.get("Condition") or {}, req.keys)


def evaluate(policies: list[Policy], req: Request) -> Decision:
    """IAM's decision for one request (identity policies, permissions boundary, resource-based
    policy, VPC endpoint policy), as the evaluation-logic page describes it for a principal and
    a resource in the same account."""
    allowed_by: dict[str, list[str]] = collections.defaultdict(list)
    denied_by: list[str] = []
    notes: list[str] = []
    for pol in policies:
        for i, stmt in enumerate(_statements(pol.document)):
            label = f"{pol.label}#{stmt.get('Sid') or i}"
            try:
                applies = _applies(stmt, req, pol.kind)
            except UnsupportedCondition as e:
                # Fail closed: an Allow we cannot evaluate does not grant, a Deny denies.
                notes.append(f"{label}: condition operator {e} not modelled (failing closed)")
                applies = stmt.get("Effect") == "Deny"
            if not applies:
                continue
            if stmt.get("Effect") == "Deny":
                denied_by.append(label)
            elif stmt.get("Effect") == "Allow":
                allowed_by[pol.kind].append(label)
    kinds = {p.kind for p in policies}
    if denied_by:
        return Decision(False, f"explicit deny by {', '.join(denied_by)}", [], denied_by, notes)
    grants = allowed_by["identity"] + allowed_by["resource"]
    if not grants:
        return Decision(False, f"no statement allows {req.action} on {req.resource}", [], [], notes)
    if "boundary" in kinds and not allowed_by["boundary"] and not allowed_by["resource"]:
        return Decision(False, f"the permissions boundary does not allow {req.action}", [], [], notes)
    if "endpoint" in kinds and not allowed_by["endpoint"]:
        return Decision(False, f"the VPC endpoint policy does not allow {req.action}", [], [], notes)
    return Decision(True, f"allowed by {', '.join(grants)}", grants + allowed_by["endpoint"], [], notes)


# ----------------------------------------------------------------------- policies in moto


def _iam():
    from moto.iam.models import iam_backends

    return iam_backends[_account()]["global"]


def _document(text: Any) -> dict:
    if isinstance(text, dict):
        return text
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return json.loads(unquote(str(text)))


def _managed_document(arn: str) -> dict | None:
    try:
        policy = _iam().get_policy(arn)
    except Exception:
        return None
    versions = getattr(policy, "versions", []) or []
    default = next((v for v in versions if getattr(v, "is_default", False)), versions[-1] if versions else None)
    return _document(default.document) if default is not None else None


def role_policies(role_arn: str) -> list[Policy]:
    """The role's identity policies (inline and attached managed) and its permissions boundary,
    as moto holds them now."""
    role = _iam().get_role_by_arn(role_arn)
    out = [
        Policy(f"inline:{role.name}/{name}", "identity", _document(doc)) for name, doc in sorted(role.policies.items())
    ]
    for arn in sorted(role.managed_policies):
        doc = _managed_document(arn)
        if doc is not None:
            out.append(Policy(f"managed:{arn}", "identity", doc))
    if role.permissions_boundary_arn:
        doc = _managed_document(role.permissions_boundary_arn)
        if doc is not None:
            out.append(Policy(f"boundary:{role.permissions_boundary_arn}", "boundary", doc))
    return out


def bucket_policy(bucket: str) -> Policy | None:
    from moto.s3.models import s3_backends

    b = s3_backends[_account()]["aws"].buckets.get(bucket)
    if b is None or not b.policy:
        return None
    text = b.policy.decode() if isinstance(b.policy, bytes) else b.policy
    return Policy(f"bucket:{bucket}", "resource", _document(text))


def role_id(role_arn: str) -> str:
    try:
        return _iam().get_role_by_arn(role_arn).id
    except Exception:
        return "AROAUNKNOWN"


# ====================================================================================== network


def _ec2(region: str):
    from moto.ec2.models import ec2_backends

    return ec2_backends[_account()][region]


@dataclass
class Reach:
    """Whether the agent on an instance reaches one service endpoint, and why."""

    service: str
    ok: bool
    path: str  # "interface-endpoint", "gateway-endpoint", "internet", "none"
    reason: str
    endpoint_id: str | None = None
    vpc_id: str | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in vars(self).items() if v is not None}


@dataclass
class _Iface:
    """The instance's primary network interface, as the agent's traffic leaves it."""

    ip: str
    subnet_id: str
    vpc_id: str
    group_ids: list[str]
    public_ip: str | None


def _groups_of(backend, group_ids: list[str]) -> list:
    out = []
    for gid in group_ids:
        g = backend.get_security_group_from_id(gid)
        if g is not None:
            out.append(g)
    return out


def _sg_rule_covers(rule, port: int) -> bool:
    proto = str(rule.ip_protocol)
    if proto == "-1":
        return True
    if proto not in ("tcp", "6"):
        return False
    return rule.from_port is not None and int(rule.from_port) <= port <= int(rule.to_port)


def _sg_allows(
    groups: list,
    egress: bool,
    port: int,
    peer_ip: str | None = None,
    peer_groups: list[str] = (),
    prefix_list: str | None = None,
    all_addresses_only: bool = False,
) -> str | None:
    """The first rule of ``groups`` (egress or ingress) that allows TCP ``port`` to/from the peer,
    described; None when none does."""
    for g in groups:
        for rule in list(g.egress_rules if egress else g.ingress_rules):
            if not _sg_rule_covers(rule, port):
                continue
            cidr = (rule.ip_range or {}).get("CidrIp")
            target = None
            if cidr and peer_ip:
                if all_addresses_only:
                    if ipaddress.ip_network(cidr, strict=False).prefixlen == 0:
                        target = cidr
                elif _ip_in(peer_ip, cidr):
                    target = cidr
            source = (rule.source_group or {}).get("GroupId")
            if source and source in peer_groups:
                target = source
            if rule.prefix_list_id and prefix_list and rule.prefix_list_id == prefix_list:
                target = rule.prefix_list_id
            if target:
                what = "all traffic" if str(rule.ip_protocol) == "-1" else f"tcp {rule.from_port}-{rule.to_port}"
                return f"{g.id} {'egress' if egress else 'ingress'} {what} {target}"
    return None


def _acl_of_subnet(backend, subnet_id: str):
    for acl in list(backend.network_acls.values()):
        for assoc in list(getattr(acl, "_associations", {}).values()):
            if assoc.subnet_id == subnet_id:
                return acl
    return None


def _acl_allows(acl, egress: bool, peer_ip: str, ports: tuple[int, int]) -> tuple[bool, str]:
    """Network ACL evaluation for TCP to/from ``peer_ip`` on ``ports``: rules in ascending number,
    first match decides, per port; allowed when any port of the range gets through."""
    if acl is None:
        return False, "no network ACL associated (EC2 always has one)"
    entries = [
        e for e in list(acl.network_acl_entries) if str(e.egress).lower() == str(egress).lower() and e.cidr_block
    ]
    entries.sort(key=lambda e: int(e.rule_number))
    remaining = [ports]
    allowed: list[str] = []
    denied: list[str] = []
    for e in entries:
        if not remaining:
            break
        if str(e.protocol) not in ("-1", "6", "tcp"):
            continue
        if not _ip_in(peer_ip, e.cidr_block):
            continue
        if str(e.protocol) == "-1" or e.port_range_from is None:
            lo, hi = 0, 65535
        else:
            lo, hi = int(e.port_range_from), int(e.port_range_to)
        left = []
        hit = False
        for a, b in remaining:
            if b < lo or a > hi:
                left.append((a, b))
                continue
            hit = True
            if a < lo:
                left.append((a, lo - 1))
            if b > hi:
                left.append((hi + 1, b))
        if hit:
            (allowed if e.rule_action == "allow" else denied).append(f"{acl.id} rule {e.rule_number} {e.rule_action}")
        remaining = left
    direction = "outbound" if egress else "inbound"
    span = f"{ports[0]}" if ports[0] == ports[1] else f"{ports[0]}-{ports[1]}"
    if allowed:
        return True, f"{direction} TCP {span} {'to' if egress else 'from'} {peer_ip}: {allowed[0]}"
    why = denied[0] if denied else "no rule matches"
    return False, f"{acl.id} {direction} TCP {span} {'to' if egress else 'from'} {peer_ip} denied ({why})"


def _acl_exchange(
    backend, subnet_id: str, peer_ip: str, outgoing: bool, request_ports: tuple[int, int], answer_ports: tuple[int, int]
) -> tuple[bool, str]:
    """A subnet's ACL for one request and its answer, both with ``peer_ip``: the request leaves
    the subnet towards the peer (``outgoing``) or enters it from the peer, on ``request_ports``;
    the answer goes the other way on ``answer_ports``. ACLs are stateless: both must be allowed."""
    acl = _acl_of_subnet(backend, subnet_id)
    ok, request = _acl_allows(acl, outgoing, peer_ip, request_ports)
    if not ok:
        return False, request
    ok, answer = _acl_allows(acl, not outgoing, peer_ip, answer_ports)
    return ok, answer if not ok else f"{request}; {answer}"


def _acl_pair(backend, subnet_id: str, peer_ip: str, out_ports: tuple[int, int], in_ports: tuple[int, int]):
    """A subnet's ACL for one request out (``out_ports`` at the peer) and its answer in."""
    return _acl_exchange(backend, subnet_id, peer_ip, True, out_ports, in_ports)


def _acl_pair_server(backend, subnet_id: str, client_ip: str, server_ports: tuple[int, int], client_ports: tuple[int, int]):
    """A subnet's ACL for a request in from ``client_ip`` and its answer out."""
    return _acl_exchange(backend, subnet_id, client_ip, False, server_ports, client_ports)


def _route_table_of_subnet(backend, subnet_id: str, vpc_id: str):
    tables = [t for t in list(backend.route_tables.values()) if t.vpc_id == vpc_id]
    for t in tables:
        if subnet_id in list(getattr(t, "_associations", {}).values()):
            return t
    return next((t for t in tables if getattr(t, "main_association_id", None)), None)


def _default_route(table, address: str):
    """The route the table uses for ``address`` (longest prefix)."""
    best, best_len = None, -1
    for r in list(getattr(table, "_routes", {}).values()) if table is not None else []:
        cidr = r.destination_cidr_block
        if cidr and _ip_in(address, cidr):
            n = ipaddress.ip_network(cidr, strict=False).prefixlen
            if n > best_len:
                best, best_len = r, n
    return best


def _interface(instance) -> _Iface | None:
    nics = list(getattr(instance, "nics", {}).values())
    primary = next((n for n in nics if n.device_index == 0), nics[0] if nics else None)
    if primary is None:
        return None
    return _Iface(
        ip=primary.private_ip_address,
        subnet_id=primary.subnet.id,
        vpc_id=primary.subnet.vpc_id,
        group_ids=[g.id for g in primary.group_set],
        public_ip=getattr(primary, "public_ip", None),
    )


def _endpoints(backend, vpc_id: str, service: str, region: str, kind: str) -> list:
    name = f"com.amazonaws.{region}.{service}"
    out = []
    for ep in list(backend.vpc_end_points.values()):
        etype = (ep.vpc_endpoint_type or "Gateway").lower()
        if ep.vpc_id != vpc_id or ep.service_name != name or etype != kind or ep.state != "available":
            continue
        if kind == "interface" and ep.private_dns_enabled is False:
            continue
        out.append(ep)
    return out


def endpoint_group_ids(backend, ep) -> list[str]:
    """An interface endpoint's security groups (the VPC's default group when none was given)."""
    if ep.security_group_ids:
        return list(ep.security_group_ids)
    default = next(
        (g for g in backend.describe_security_groups(filters={"vpc-id": [ep.vpc_id], "group-name": ["default"]})), None
    )
    return [default.id] if default is not None else []


def _via_interface(backend, me: _Iface, service: str, ep) -> Reach:
    groups = _groups_of(backend, me.group_ids)
    ep_groups = endpoint_group_ids(backend, ep)
    reasons = []
    for eni_id in ep.network_interface_ids or []:
        eni = backend.enis.get(eni_id)
        if eni is None:
            continue
        ip, subnet = eni.private_ip_address, eni.subnet.id
        out = _sg_allows(groups, True, HTTPS, peer_ip=ip, peer_groups=ep_groups)
        if not out:
            reasons.append(f"{eni_id} ({ip}): the instance's groups {me.group_ids} allow no egress TCP 443 to it")
            continue
        inbound = _sg_allows(_groups_of(backend, ep_groups), False, HTTPS, peer_ip=me.ip, peer_groups=me.group_ids)
        if not inbound:
            reasons.append(f"{eni_id} ({ip}): the endpoint's groups {ep_groups} allow no TCP 443 in from {me.ip}")
            continue
        acl_notes = []
        if subnet != me.subnet_id:
            ok, note = _acl_pair(backend, me.subnet_id, ip, (HTTPS, HTTPS), LINUX_EPHEMERAL)
            if not ok:
                reasons.append(f"{eni_id} ({ip}): instance subnet {me.subnet_id}: {note}")
                continue
            acl_notes.append(note)
            ok, note = _acl_pair_server(backend, subnet, me.ip, (HTTPS, HTTPS), LINUX_EPHEMERAL)
            if not ok:
                reasons.append(f"{eni_id} ({ip}): endpoint subnet {subnet}: {note}")
                continue
            acl_notes.append(note)
        why = f"via {ep.id} interface {eni_id} ({ip}): {out}; {inbound}" + (
            f"; {'; '.join(acl_notes)}" if acl_notes else ""
        )
        return Reach(service, True, "interface-endpoint", why, ep.id, me.vpc_id)
    return Reach(
        service,
        False,
        "interface-endpoint",
        "; ".join(reasons) or f"{ep.id} has no network interface",
        ep.id,
        me.vpc_id,
    )


def _s3_prefix_list(backend, region: str) -> tuple[str | None, str]:
    """The S3 prefix list's ID and an address in it (what ACL rules are matched against)."""
    name = f"com.amazonaws.{region}.s3"
    for pl in list(backend.managed_prefix_lists.values()):
        if pl.prefix_list_name == name:
            entries = list(getattr(pl, "entries", {}).values())
            cidrs = [e.get("Cidr") for versions in entries for e in versions] if entries else []
            cidr = next((c for c in cidrs if c), "52.216.0.0/15")
            return pl.id, str(next(ipaddress.ip_network(cidr, strict=False).hosts()))
    return None, "52.216.0.1"


def _via_gateway(backend, me: _Iface, ep, region: str) -> Reach:
    pl, address = _s3_prefix_list(backend, region)
    groups = _groups_of(backend, me.group_ids)
    out = _sg_allows(groups, True, HTTPS, peer_ip=address, prefix_list=pl, all_addresses_only=True)
    if not out:
        return Reach(
            "s3",
            False,
            "gateway-endpoint",
            f"the instance's groups {me.group_ids} allow no egress TCP 443 to {pl} or 0.0.0.0/0",
            ep.id,
            me.vpc_id,
        )
    ok, note = _acl_pair(backend, me.subnet_id, address, (HTTPS, HTTPS), LINUX_EPHEMERAL)
    if not ok:
        return Reach("s3", False, "gateway-endpoint", f"instance subnet {me.subnet_id}: {note}", ep.id, me.vpc_id)
    return Reach("s3", True, "gateway-endpoint", f"via {ep.id} ({pl}): {out}; {note}", ep.id, me.vpc_id)


def _via_internet(backend, me: _Iface, service: str, address: str = PUBLIC_SERVICE_ADDRESS) -> Reach:
    groups = _groups_of(backend, me.group_ids)
    out = _sg_allows(groups, True, HTTPS, peer_ip=address, all_addresses_only=True)
    if not out:
        return Reach(
            service,
            False,
            "internet",
            f"no VPC endpoint for {service}, and the instance's groups {me.group_ids} allow no egress TCP 443 to 0.0.0.0/0",
            None,
            me.vpc_id,
        )
    table = _route_table_of_subnet(backend, me.subnet_id, me.vpc_id)
    route = _default_route(table, address)
    notes = [out]
    ok, note = _acl_pair(backend, me.subnet_id, address, (HTTPS, HTTPS), LINUX_EPHEMERAL)
    if not ok:
        return Reach(
            service,
            False,
            "internet",
            f"no VPC endpoint for {service}; instance subnet {me.subnet_id}: {note}",
            None,
            me.vpc_id,
        )
    notes.append(note)
    if route is None or route.gateway is None and route.nat_gateway is None:
        target = (
            "no route"
            if route is None
            else f"route {route.destination_cidr_block} to neither an internet nor a NAT gateway"
        )
        return Reach(
            service,
            False,
            "internet",
            f"no VPC endpoint for {service}, and subnet {me.subnet_id} has {target} for the internet",
            None,
            me.vpc_id,
        )
    if route.gateway is not None and str(route.gateway.id).startswith("igw-"):
        if not me.public_ip:
            return Reach(
                service,
                False,
                "internet",
                f"no VPC endpoint for {service}; subnet {me.subnet_id} routes to {route.gateway.id} but the interface has no public address",
                None,
                me.vpc_id,
            )
        return Reach(service, True, "internet", f"via {route.gateway.id}: {'; '.join(notes)}", None, me.vpc_id)
    nat = route.nat_gateway
    if nat is None:
        return Reach(
            service,
            False,
            "internet",
            f"no VPC endpoint for {service}; subnet {me.subnet_id} routes to {route.gateway.id}, not to the internet",
            None,
            me.vpc_id,
        )
    if getattr(nat, "state", "available") != "available":
        return Reach(
            service, False, "internet", f"no VPC endpoint for {service}; {nat.id} is {nat.state}", None, me.vpc_id
        )
    nat_subnet = nat.subnet_id
    if nat_subnet != me.subnet_id:
        ok, note = _acl_pair_server(backend, nat_subnet, me.ip, (HTTPS, HTTPS), LINUX_EPHEMERAL)
        if not ok:
            return Reach(
                service,
                False,
                "internet",
                f"no VPC endpoint for {service}; NAT subnet {nat_subnet} (from the instance): {note}",
                None,
                me.vpc_id,
            )
        notes.append(note)
    ok, note = _acl_pair(backend, nat_subnet, address, (HTTPS, HTTPS), NAT_EPHEMERAL)
    if not ok:
        return Reach(
            service,
            False,
            "internet",
            f"no VPC endpoint for {service}; NAT subnet {nat_subnet} (to the internet): {note}",
            None,
            me.vpc_id,
        )
    notes.append(note)
    nat_route = _default_route(_route_table_of_subnet(backend, nat_subnet, me.vpc_id), address)
    if nat_route is None or nat_route.gateway is None or not str(nat_route.gateway.id).startswith("igw-"):
        return Reach(
            service,
            False,
            "internet",
            f"no VPC endpoint for {service}; NAT subnet {nat_subnet} has no route to an internet gateway",
            None,
            me.vpc_id,
        )
    return Reach(
        service, True, "internet", f"via {nat.id} and {nat_route.gateway.id}: {'; '.join(notes)}", None, me.vpc_id
    )


def reach(instance_id: str, region: str, service: str) -> Reach:
    """Whether the agent on ``instance_id`` gets TCP 443 through to ``service`` now."""
    backend = _ec2(region)
    instance = next((i for i in backend.all_instances() if i.id == instance_id), None)
    if instance is None or instance.state != "running":
        state = "missing" if instance is None else instance.state
        return Reach(service, False, "none", f"the instance is {state}")
    me = _interface(instance)
    if me is None:
        return Reach(service, False, "none", "the instance has no network interface")
    interface = _endpoints(backend, me.vpc_id, service, region, "interface")
    if interface:
        verdicts = [_via_interface(backend, me, service, ep) for ep in interface]
        return next((v for v in verdicts if v.ok), verdicts[0])
    if service == "s3":
        table = _route_table_of_subnet(backend, me.subnet_id, me.vpc_id)
        for ep in _endpoints(backend, me.vpc_id, service, region, "gateway"):
            if table is not None and table.id in (ep.route_table_ids or []):
                return _via_gateway(backend, me, ep, region)
        return _via_internet(backend, me, service, _s3_prefix_list(backend, region)[1])
    return _via_internet(backend, me, service)


def endpoint_policy(region: str, endpoint_id: str | None) -> Policy | None:
    if not endpoint_id:
        return None
    ep = _ec2(region).vpc_end_points.get(endpoint_id)
    if ep is None or not ep.policy_document:
        return None
    return Policy(f"endpoint:{endpoint_id}", "endpoint", _document(ep.policy_document))


# ====================================================================================== the agent


def associated_role_arn(instance_id: str, region: str) -> str | None:
    """The role of the instance profile associated with the instance now (what IMDS hands out)."""
    assoc = _ec2(region).iam_instance_profile_associations.get(instance_id)
    if assoc is None or getattr(assoc, "state", "associated") not in ("associated", "associating"):
        return None
    roles = list(getattr(assoc.iam_instance_profile, "roles", []) or [])
    return roles[0].arn if roles else None


@dataclass
class Verdict:
    ok: bool
    reason: str
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "reason": self.reason, **self.details}


@dataclass
class Agent:
    """The agent on one instance: the credentials it holds and what it last found."""

    instance_id: str
    region: str
    started_at: float = field(default_factory=time.time)
    registered_at: float | None = None
    role_arn: str | None = None  # whose credentials it holds (None: none)
    issued_at: float | None = None  # aws:TokenIssueTime of those credentials
    refresh_after_seconds: float = REFRESH_AFTER_SECONDS
    health_interval_seconds: float = HEALTH_INTERVAL_SECONDS
    last_ping: float | None = None
    last_ok_ping: float | None = None
    ping_ok: bool = False
    ping_reason: str = ""
    next_refresh: float = 0.0  # when the refresher runs next (after success: half the lifetime)
    extra_path: list[str] = field(default_factory=list)
    # The host's memory as its /proc/meminfo reports it (MemTotal, KiB); None: this machine's.
    memory_kib: int | None = None
    log: collections.deque = field(default_factory=lambda: collections.deque(maxlen=200))

    def note(self, message: str) -> None:
        self.log.append(f"{iso(time.time())} {message}")
        LOG.info("agent %s: %s", self.instance_id, message)

    @property
    def instance_arn(self) -> str:
        return f"arn:aws:ec2:{self.region}:{_account()}:instance/{self.instance_id}"


class AgentFleet:
    """The agents of every registered instance, and one thread that polls for them."""

    def __init__(self) -> None:
        self.agents: dict[str, Agent] = {}
        self.lock = threading.RLock()
        self.listeners: list[Callable[[], None]] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # ------------------------------------------------------------------ lifecycle

    def start(self, instance_id: str, region: str = "us-east-1") -> Agent:
        """The agent starts (the instance booted with it): its credential refresher runs at once,
        which registers the node when its check call (UpdateInstanceInformation) gets through."""
        agent = Agent(instance_id, region)
        agent.note("started")
        with self.lock:
            self.agents[instance_id] = agent
        self.refresh(instance_id)
        self._ensure_thread()
        return agent

    def stop(self, instance_id: str | None) -> None:
        with self.lock:
            if instance_id is None:
                self.agents.clear()
            else:
                self.agents.pop(instance_id, None)

    def get(self, instance_id: str) -> Agent | None:
        with self.lock:
            return self.agents.get(instance_id)

    def add_listener(self, fn: Callable[[], None]) -> None:
        self.listeners.append(fn)
        self._ensure_thread()

    def _ensure_thread(self) -> None:
        with self.lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="ssm-agents", daemon=True)
                self._thread.start()

    def shutdown(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            try:
                self.tick()
            except Exception:  # a bug must not stop every agent
                LOG.exception("agent tick failed")
            for fn in list(self.listeners):
                try:
                    fn()
                except Exception:
                    LOG.exception("agent listener failed")

    def tick(self) -> None:
        now = time.time()
        with self.lock:
            agents = list(self.agents.values())
        for agent in agents:
            if now >= agent.next_refresh:
                self.refresh(agent.instance_id)
            elif agent.role_arn and (agent.last_ping is None or now - agent.last_ping >= agent.health_interval_seconds):
                self.ping(agent.instance_id)

    # ------------------------------------------------------------------ decisions

    def _request(self, agent: Agent, role: str, action: str, resource: str, via: Reach | None) -> Request:
        role_name = role.rsplit("/", 1)[-1]
        backend = _ec2(agent.region)
        instance = next((i for i in backend.all_instances() if i.id == agent.instance_id), None)
        me = _interface(instance) if instance is not None else None
        now = time.time()
        keys: dict[str, Any] = {
            "aws:PrincipalArn": role,
            "aws:PrincipalAccount": _account(),
            "aws:PrincipalType": "AssumedRole",
            "aws:userid": f"{role_id(role)}:{agent.instance_id}",
            "aws:TokenIssueTime": iso(agent.issued_at or now),
            "aws:CurrentTime": iso(now),
            "aws:EpochTime": str(int(now)),
            "aws:SecureTransport": "true",
            "aws:RequestedRegion": agent.region,
            "aws:ViaAWSService": "false",
            "ec2:SourceInstanceARN": agent.instance_arn,
            "ec2:RoleDelivery": "2.0",
        }
        if me is not None:
            keys["aws:EC2InstanceSourceVPC"] = me.vpc_id
            keys["aws:EC2InstanceSourcePrivateIPv4"] = me.ip
        if via is not None and via.endpoint_id:
            keys["aws:SourceVpce"] = via.endpoint_id
            keys["aws:SourceVpc"] = via.vpc_id
            if me is not None:
                keys["aws:VpcSourceIp"] = me.ip
        return Request(
            action=action,
            resource=resource,
            role_arn=role,
            session_arn=f"arn:aws:sts::{_account()}:assumed-role/{role_name}/{agent.instance_id}",
            account=_account(),
            keys=keys,
        )

    def authorize(
        self,
        agent: Agent,
        action: str,
        resource: str = "*",
        via: Reach | None = None,
        extra: list[Policy] | None = None,
        role_arn: str | None = None,
    ) -> Decision:
        """IAM's decision on the agent's call (with the credentials it holds, or ``role_arn``'s)."""
        role = role_arn or agent.role_arn
        if not role:
            return Decision(False, "the agent has no credentials")
        try:
            policies = role_policies(role)
        except Exception as e:
            return Decision(False, f"role {role} not found ({e}): its credentials are invalid")
        req = self._request(agent, role, action, resource, via)
        policies = policies + (extra or [])
        ep = endpoint_policy(agent.region, via.endpoint_id if via is not None else None)
        if ep is not None:
            policies.append(ep)
        return evaluate(policies, req)

    def call(
        self, agent: Agent, service: str, actions: tuple[str, ...], resource: str = "*", role_arn: str | None = None
    ) -> Verdict:
        """Network, then IAM, for the agent's calls of ``actions`` to ``service``."""
        via = reach(agent.instance_id, agent.region, service)
        if not via.ok:
            return Verdict(False, f"{service} endpoint unreachable: {via.reason}", {"network": via.to_dict()})
        decisions = {a: self.authorize(agent, a, resource, via, role_arn=role_arn) for a in actions}
        denied = [f"{a}: {d.reason}" for a, d in decisions.items() if not d.allowed]
        details = {"network": via.to_dict(), "iam": {a: d.to_dict() for a, d in decisions.items()}}
        if denied:
            return Verdict(False, "AccessDeniedException: " + "; ".join(denied), details)
        return Verdict(True, f"{service}: {via.path}", details)

    def channel(self, instance_id: str) -> Verdict:
        """Whether the agent can take a command (and report on it) now: MDS or MGS."""
        agent = self.get(instance_id)
        if agent is None:
            return Verdict(False, "no SSM Agent registered on this instance")
        if not agent.role_arn:
            return Verdict(False, "the agent has no credentials (no instance profile when it last refreshed)")
        mds = self.call(agent, "ec2messages", MDS_ACTIONS)
        if mds.ok:
            return Verdict(True, "MDS (ec2messages)", {"mds": mds.to_dict()})
        mgs = self.call(agent, "ssmmessages", MGS_ACTIONS)
        if mgs.ok:
            return Verdict(True, "MGS (ssmmessages control channel)", {"mds": mds.to_dict(), "mgs": mgs.to_dict()})
        return Verdict(
            False,
            f"MDS: {mds.reason} | MGS: {mgs.reason}",
            {"mds": mds.to_dict(), "mgs": mgs.to_dict()},
        )

    def s3_upload(self, instance_id: str, bucket: str, key: str) -> Verdict:
        """The agent's own upload of command output (PutObject with ACL bucket-owner-full-control,
        ``agent/s3util/s3util.go``, so ``s3:PutObjectAcl`` too), with the credentials it holds."""
        agent = self.get(instance_id)
        if agent is None or not agent.role_arn:
            return Verdict(False, "the agent has no credentials")
        via = reach(instance_id, agent.region, "s3")
        if not via.ok:
            return Verdict(
                False, f"RequestError: send request failed: S3 unreachable: {via.reason}", {"network": via.to_dict()}
            )
        resource = f"arn:aws:s3:::{bucket}/{key}"
        extra = [p for p in [bucket_policy(bucket)] if p is not None]
        decisions = {}
        for action in ("s3:PutObject", "s3:PutObjectAcl"):
            d = self.authorize(agent, action, resource, via, extra)
            d_keys = d.to_dict()
            decisions[action] = d_keys
            if not d.allowed:
                return Verdict(
                    False,
                    f"AccessDenied: {action} on {resource}: {d.reason}",
                    {"network": via.to_dict(), "iam": decisions},
                )
        return Verdict(True, f"s3: {via.path}", {"network": via.to_dict(), "iam": decisions})

    def s3_reachable(self, instance_id: str) -> Reach:
        agent = self.get(instance_id)
        region = agent.region if agent is not None else "us-east-1"
        return reach(instance_id, region, "s3")

    # ------------------------------------------------------------------ health and credentials

    def ping(self, instance_id: str) -> Verdict:
        """A health ping (``ssm:UpdateInstanceInformation``) with the credentials the agent holds."""
        agent = self.get(instance_id)
        if agent is None:
            return Verdict(False, "no agent")
        if not agent.role_arn:
            verdict = Verdict(False, "no credentials")
        else:
            verdict = self.call(agent, "ssm", (HEALTH_ACTION,), agent.instance_arn)
        self._pinged(agent, verdict)
        return verdict

    def _pinged(self, agent: Agent, verdict: Verdict) -> None:
        now = time.time()
        with self.lock:
            changed = verdict.ok != agent.ping_ok or agent.last_ping is None
            agent.last_ping, agent.ping_ok, agent.ping_reason = now, verdict.ok, verdict.reason
            if verdict.ok:
                agent.last_ok_ping = now
            if verdict.ok and agent.registered_at is None:
                agent.registered_at = now
                agent.note(f"registered with Systems Manager ({verdict.reason})")
            elif changed:
                agent.note(f"health ping {'ok' if verdict.ok else 'failed: ' + verdict.reason}")

    def refresh(self, instance_id: str) -> Verdict:
        """The credential refresher: the role associated now, checked with UpdateInstanceInformation
        (which is also a health ping, and registers the node the first time)."""
        agent = self.get(instance_id)
        if agent is None:
            return Verdict(False, "no agent")
        now = time.time()
        role = associated_role_arn(instance_id, agent.region)
        if role is None:
            verdict = Verdict(False, "EC2RoleRequestError: no instance profile associated")
            with self.lock:
                had = agent.role_arn
                agent.role_arn, agent.issued_at = None, None
                agent.next_refresh = now + RETRY_OTHER_SECONDS
            agent.note(
                f"credential refresh: {verdict.reason}; "
                + ("no credentials now (offline)" if had else "no credentials")
            )
            self._pinged(agent, Verdict(False, "no credentials"))
            return verdict
        check = self.call(agent, "ssm", (HEALTH_ACTION,), agent.instance_arn, role_arn=role)
        with self.lock:
            if check.ok:
                agent.role_arn, agent.issued_at = role, now
                agent.next_refresh = now + agent.refresh_after_seconds
                agent.note(f"credential refresh: using {role}")
            elif "unreachable" in check.reason:
                # Not an AWS error: the refresher keeps what it had and tries again later.
                agent.next_refresh = now + RETRY_OTHER_SECONDS
                agent.note(f"credential refresh failed, keeping {agent.role_arn}: {check.reason}")
            else:
                agent.role_arn, agent.issued_at = None, None
                agent.next_refresh = now + RETRY_DENIED_SECONDS
                agent.note(
                    f"credential refresh: {role} failed UpdateInstanceInformation ({check.reason}); no Default "
                    "Host Management Configuration: no credentials (offline)"
                )
        self._pinged(agent, check)
        return check

    # ------------------------------------------------------------------ what a test sees

    def describe(self, instance_id: str) -> dict:
        agent = self.get(instance_id)
        if agent is None:
            return {"instance_id": instance_id, "agent": None, "reason": "no SSM Agent registered on this instance"}
        channel = self.channel(instance_id)
        network = {s: reach(instance_id, agent.region, s).to_dict() for s in SERVICES}
        return {
            "instance_id": instance_id,
            "registered": agent.registered_at is not None,
            "registered_at": iso(agent.registered_at) if agent.registered_at else None,
            "identity": {
                "role_arn": agent.role_arn,
                "token_issue_time": iso(agent.issued_at) if agent.issued_at else None,
                "refresh_after_seconds": agent.refresh_after_seconds,
                "next_refresh": iso(agent.next_refresh),
                "associated_role_arn": associated_role_arn(instance_id, agent.region),
            },
            "health": {
                "last_ping": iso(agent.last_ping) if agent.last_ping else None,
                "ok": agent.ping_ok,
                "reason": agent.ping_reason,
                "interval_seconds": agent.health_interval_seconds,
            },
            "can_take_commands": channel.ok,
            "channel": channel.to_dict(),
            "network": network,
            "extra_path": agent.extra_path,
            "log": list(agent.log),
        }


# ====================================================================================== model fix


_fixed = False


def apply_vpc_endpoint_fix() -> None:
    """``VpcEndpointInterfaceFix``: see the module docstring."""
    global _fixed
    if _fixed:
        return
    from moto.ec2.models import EC2Backend

    original = EC2Backend.create_vpc_endpoint

    def create_vpc_endpoint(self, *args, **kwargs):
        ep = original(self, *args, **kwargs)
        if (ep.vpc_endpoint_type or "").lower() != "interface":
            return ep
        if not ep.security_group_ids:
            ep.security_group_ids = endpoint_group_ids(self, ep)
        groups = _groups_of(self, ep.security_group_ids)
        taken = {e.private_ip_address for e in list(self.enis.values())}
        for eni_id in ep.network_interface_ids or []:
            eni = self.enis.get(eni_id)
            if eni is None:
                continue
            network = ipaddress.ip_network(eni.subnet.cidr_block, strict=False)
            if not _ip_in(eni.private_ip_address, network):
                # The first four addresses and the last one of a subnet are AWS's.
                free = (str(h) for h in list(network.hosts())[3:-1] if str(h) not in taken)
                ip = next(free, None)
                if ip is not None:
                    eni.private_ip_address = ip
                    eni.private_ip_addresses = [{"Primary": True, "PrivateIpAddress": ip}]
                    taken.add(ip)
            eni.interface_type = "vpc_endpoint"
            eni.requester_managed = True
            eni.description = f"VPC Endpoint Interface {ep.id}"
            eni._group_set = list(groups)
        return ep

    EC2Backend.create_vpc_endpoint = create_vpc_endpoint
    _fixed = True
